"""Secrets that travel in URLs never reach a log: invitation tokens are cut out of every logged line.

The invitation link ``/invite/<token>/`` is a bearer secret (opening it signed in as the invitee joins the
tenant), and it also rides in ``?next=%2Finvite%2F<token>%2F`` when a signed-out invitee is sent to sign in.
``redact`` replaces the token in either spelling; the gunicorn logger class redacts every access-log field and
the logging filter does the same for Django's and the application's own log records.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

REDACTED = "[redacted]"
# /invite/<token> with the slashes plain or percent-encoded (once or twice, as in a nested ?next=).
_INVITE_TOKEN = re.compile(r"((?:/|%2[Ff]|%252[Ff])invite(?:/|%2[Ff]|%252[Ff]))[A-Za-z0-9_\-]{8,}")


def redact(text: str) -> str:
    """``text`` with every invitation token replaced by ``[redacted]``."""
    if "invite" not in text:
        return text
    return _INVITE_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)


class RedactSecretsFilter(logging.Filter):
    """A handler filter that redacts the formatted message (arguments included) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        return True


class RedactingGunicornLogger(GunicornLogger):
    """gunicorn's logger with invitation tokens redacted from the request line, path, query, referer and headers."""

    def atoms(self, resp: Any, req: Any, environ: dict[str, Any], request_time: Any) -> dict[str, Any]:
        atoms = super().atoms(resp, req, environ, request_time)
        return {key: redact(value) if isinstance(value, str) else value for key, value in atoms.items()}

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.addFilter(RedactSecretsFilter())
