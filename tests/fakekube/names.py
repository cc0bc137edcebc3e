"""The API server's checks of names and labels, with its messages word for word.

Object names are DNS-1123 subdomains for most kinds, DNS-1123 labels for namespaces and DNS-1035 labels for
Services; label keys are qualified names (an optional DNS subdomain prefix and a name part of at most 63
characters) and label values at most 63 characters of ``[A-Za-z0-9_.-]``. A refusal is a 422 ``Invalid`` whose
message reads ``Service "70b-chat-r1" is invalid: metadata.name: Invalid value: "70b-chat-r1": a DNS-1035 label
...``, several problems joined in brackets, as ``k8s.io/apimachinery``'s ``field.ErrorList`` prints them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tests.fakekube.kinds import ApiError, Resource

DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_SUBDOMAIN = DNS1123_LABEL + "(\\." + DNS1123_LABEL + ")*"
DNS1035_LABEL = "[a-z]([-a-z0-9]*[a-z0-9])?"
QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
LABEL_VALUE = "(" + QUALIFIED_NAME + ")?"

_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end "
    "with an alphanumeric character"
)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start "
    "and end with an alphanumeric character"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character"
)
_QUALIFIED_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)
_LABEL_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start "
    "and end with an alphanumeric character"
)


def regex_error(message: str, pattern: str, *examples: str) -> str:
    """apimachinery's ``RegexError``: the rule, examples, then the pattern (the double space is theirs)."""
    if not examples:
        return f"{message} (regex used for validation is '{pattern}')"
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{pattern}')"


def max_len_error(length: int) -> str:
    return f"must be no more than {length} characters"


def _full(pattern: str, value: str) -> bool:
    return re.fullmatch(pattern, value) is not None


def dns1123_label(value: str) -> list[str]:
    errors = [max_len_error(63)] if len(value) > 63 else []
    if not _full(DNS1123_LABEL, value):
        if _full(DNS1123_SUBDOMAIN, value):
            errors.append("must not contain dots")
        else:
            errors.append(regex_error(_LABEL_MSG, DNS1123_LABEL, "my-name", "123-abc"))
    return errors


def dns1123_subdomain(value: str) -> list[str]:
    errors = [max_len_error(253)] if len(value) > 253 else []
    if not _full(DNS1123_SUBDOMAIN, value):
        errors.append(regex_error(_SUBDOMAIN_MSG, DNS1123_SUBDOMAIN, "example.com"))
    return errors


def dns1035_label(value: str) -> list[str]:
    errors = [max_len_error(63)] if len(value) > 63 else []
    if not _full(DNS1035_LABEL, value):
        errors.append(regex_error(_DNS1035_MSG, DNS1035_LABEL, "my-name", "abc-123"))
    return errors


NAME_RULES = {"subdomain": dns1123_subdomain, "label": dns1123_label, "dns1035": dns1035_label}


def qualified_name(value: str) -> list[str]:
    """A label or annotation key: ``[prefix/]name``."""
    parts = value.split("/")
    errors: list[str] = []
    if len(parts) > 2:
        return [
            "a qualified name "
            + regex_error(_QUALIFIED_MSG, QUALIFIED_NAME, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    name = parts[-1]
    if len(parts) == 2:
        if not parts[0]:
            errors.append("prefix part must be non-empty")
        else:
            errors.extend(f"prefix part {msg}" for msg in dns1123_subdomain(parts[0]))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append(f"name part {max_len_error(63)}")
    if not _full(QUALIFIED_NAME, name):
        errors.append("name part " + regex_error(_QUALIFIED_MSG, QUALIFIED_NAME, "MyName", "my.name", "123-abc"))
    return errors


def label_value(value: str) -> list[str]:
    errors = [max_len_error(63)] if len(value) > 63 else []
    if not _full(LABEL_VALUE, value):
        errors.append(regex_error(_LABEL_VALUE_MSG, LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errors


def go_value(value: Any) -> str:
    """A bad value as ``field.Error`` prints it: strings quoted (Go's %q), numbers and booleans bare."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class FieldError:
    """One ``field.Error``: ``<path>: <type>[: <value>][: <detail>]``."""

    path: str
    type: str  # "Invalid value", "Required value", "Forbidden", "Unsupported value", ...
    value: Any = None
    detail: str = ""
    shows_value: bool = True

    def __str__(self) -> str:
        body = f"{self.type}: {go_value(self.value)}" if self.shows_value else self.type
        return f"{self.path}: {body}" + (f": {self.detail}" if self.detail else "")


def invalid_value(path: str, value: Any, detail: str) -> FieldError:
    return FieldError(path, "Invalid value", value, detail)


def required(path: str, detail: str = "") -> FieldError:
    return FieldError(path, "Required value", detail=detail, shows_value=False)


def forbidden_field(path: str, detail: str) -> FieldError:
    return FieldError(path, "Forbidden", detail=detail, shows_value=False)


def invalid(resource: Resource, name: str, errors: list[FieldError]) -> ApiError:
    """The 422 ``Invalid`` answer: ``<Kind[.group]> "<name>" is invalid: <errors>``."""
    messages = list(dict.fromkeys(str(e) for e in errors))  # the aggregate prints each message once
    joined = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    causes = [{"reason": f"Field{e.type.split()[0]}", "message": str(e), "field": e.path} for e in errors]
    details = {"name": name, "group": resource.group, "kind": resource.kind, "causes": causes}
    return ApiError(422, "Invalid", f'{resource.qualified_kind} "{name}" is invalid: {joined}', details)


def label_errors(labels: Any, path: str) -> list[FieldError]:
    """Every key and value of ``labels`` (``metadata.labels``, a selector's ``matchLabels``)."""
    if not isinstance(labels, dict):
        return []
    errors: list[FieldError] = []
    for key, value in labels.items():
        errors.extend(invalid_value(path, key, msg) for msg in qualified_name(str(key)))
        if not isinstance(value, str):
            errors.append(invalid_value(path, value, "label values must be strings"))
            continue
        errors.extend(invalid_value(path, value, msg) for msg in label_value(value))
    return errors


def annotation_errors(annotations: Any, path: str) -> list[FieldError]:
    if not isinstance(annotations, dict):
        return []
    errors: list[FieldError] = []
    for key in annotations:
        errors.extend(invalid_value(path, key, msg) for msg in qualified_name(str(key)))
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > 256 * 1024:
        errors.append(FieldError(path, "Too long", detail=f"must have at most {256 * 1024} bytes", shows_value=False))
    return errors


def metadata_errors(resource: Resource, meta: dict[str, Any]) -> list[FieldError]:
    """What ``ValidateObjectMeta`` finds: the name by the kind's rule, label and annotation keys and values."""
    name = str(meta.get("name") or "")
    errors = [invalid_value("metadata.name", name, msg) for msg in NAME_RULES[resource.names](name)]
    errors += label_errors(meta.get("labels"), "metadata.labels")
    errors += annotation_errors(meta.get("annotations"), "metadata.annotations")
    return errors
