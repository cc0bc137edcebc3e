"""The errors services raise: what went wrong in the domain's words, with nothing of HTTP.

The REST API's exception handler (``controlplane.errors``) and the console translate them once, at their boundary,
to a status and the project's error body; a service, a Celery task or a management command raises the same error
whoever called it. ``code`` is the machine-readable name clients see in ``error.code``; ``fields`` maps offending
input fields to their messages (``Invalid`` only).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every refusal a service can give. ``str(error)`` is the message a person reads."""

    code: ClassVar[str] = "error"
    default_message: ClassVar[str] = "the request was refused"

    def __init__(self, message: str | None = None) -> None:
        self.message = message or self.default_message
        super().__init__(self.message)


class Invalid(DomainError):
    """The input breaks a rule; ``fields`` says which field and why (``non_field_errors`` for the whole)."""

    code = "invalid"
    default_message = "invalid input"

    def __init__(self, fields: dict[str, Any] | list[str] | str) -> None:
        if isinstance(fields, str):
            fields = [fields]
        self.fields: dict[str, Any] = fields if isinstance(fields, dict) else {"non_field_errors": list(fields)}
        super().__init__("; ".join(f"{name}: {messages}" for name, messages in self.fields.items()))

    @classmethod
    def from_validation_error(cls, error: Any) -> Invalid:
        """The refusal a Django ``ValidationError`` states (a model's ``full_clean``), with its messages unchanged.

        Field messages when it has them, else its messages for the whole input. Duck-typed, so this module stays
        free of any framework.
        """
        return cls(error.message_dict if hasattr(error, "error_dict") else list(error.messages))


class NotFound(DomainError):
    """The object does not exist for this caller (also said when it exists but the caller may not know it)."""

    code = "not_found"
    default_message = "not found"


class Forbidden(DomainError):
    """The caller is known but may not do this."""

    code = "permission_denied"
    default_message = "you do not have permission to do this"


class Conflict(DomainError):
    """The change conflicts with the current state (a duplicate, the last owner, a race)."""

    code = "conflict"
    default_message = "the change conflicts with the current state"


class Deleting(Conflict):
    """The deployment is being deleted; it can no longer be changed."""

    code = "deployment_deleting"
    default_message = "this deployment is being deleted; it can no longer be changed"


class RolloutConflict(Conflict):
    """A rollout action that does not fit the rollout's state (one already running, none running)."""

    code = "rollout_conflict"
    default_message = "rollout conflict"


class QuotaExceeded(DomainError):
    """The change would take the tenant past its quota."""

    code = "quota_exceeded"
    default_message = "quota exceeded"
