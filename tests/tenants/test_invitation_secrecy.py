"""Invitation tokens are bearer secrets: the web process's logs never show one, and the page sends no Referer.

The web process is started with the Procfile's own command line (gunicorn with its access log on stdout), so
what is checked is what ``make run`` and a production install write.
"""

from __future__ import annotations

import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from django.db import connection

from controlplane.logredact import REDACTED, RedactSecretsFilter, redact
from tenants import invitations

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _procfile_web(port: int) -> list[str]:
    line = next(ln for ln in (ROOT / "Procfile").read_text().splitlines() if ln.startswith("web:"))
    command = line.split(":", 1)[1].replace("${WEB_PORT:-8000}", str(port))
    argv = shlex.split(command)
    argv[0] = str(Path(sys.executable).with_name(argv[0]))
    return argv


def test_redact_cuts_tokens_out_of_paths_and_next_parameters() -> None:
    token = "Ab3_-" * 8
    assert redact(f"GET /invite/{token}/ HTTP/1.1") == f"GET /invite/{REDACTED}/ HTTP/1.1"
    assert token not in redact(f"GET /login/?next=%2Finvite%2F{token}%2F HTTP/1.1")
    assert token not in redact(f"next=%252Finvite%252F{token}")
    assert redact("GET /t/acme/members/ HTTP/1.1") == "GET /t/acme/members/ HTTP/1.1"


def test_the_log_filter_redacts_formatted_records() -> None:
    token = "Zz9" * 12
    record = logging.LogRecord(
        "django.request", logging.WARNING, __file__, 1, "Not Found: %s", (f"/invite/{token}/",), None
    )
    assert RedactSecretsFilter().filter(record)
    assert token not in record.getMessage() and REDACTED in record.getMessage()


@pytest.mark.django_db(transaction=True)
def test_the_web_access_log_never_shows_an_invitation_token(acme: Any, alice: Any, tmp_path: Path) -> None:
    _, token = invitations.create_invitation(acme, email="new@example.test", role="admin", invited_by=alice, actor=None)
    port = _free_port()
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
    }
    log_path = tmp_path / "web.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(_procfile_web(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/login/", timeout=1)
                break
            except httpx.HTTPError:
                assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.1)
        page = httpx.get(f"{base}/invite/{token}/", headers={"Referer": f"{base}/invite/{token}/"}, timeout=10)
        assert page.status_code == 200
        assert page.headers["referrer-policy"] == "strict-origin"  # the origin only, never the path
        assert "new@example.test" in page.text
        bogus = httpx.get(f"{base}/invite/{'x' * 43}/", timeout=10)
        assert bogus.status_code == 404
        # A signed-in stranger is sent to sign in with the token in ?next= (the member has an account).
        redirect = httpx.get(f"{base}/login/?next=/invite/{token}/", timeout=10)
        assert redirect.status_code in (200, 302)
    finally:
        proc.terminate()
        proc.wait(10)
    logged = log_path.read_text()
    assert f"/invite/{REDACTED}/" in logged  # the access log is on, and it wrote the redacted line
    assert token not in logged
    assert "x" * 43 not in logged, logged
