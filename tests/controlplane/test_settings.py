"""Production settings: hardened enough for ``check --deploy``, and refusing unsafe configuration."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

from controlplane.contracts.sealing import new_key

ROOT = Path(__file__).resolve().parents[2]


def production_env(**overrides: str) -> dict[str, str]:
    unwanted = {"DEBUG", "SECRET_KEY", "FRONTDOOR_KEY_PEPPER", "FRONTDOOR_SECRETS_KEY", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in unwanted}
    env.update(
        FRONTDOOR_ENV="production",
        SECRET_KEY=secrets.token_urlsafe(64),
        FRONTDOOR_KEY_PEPPER=secrets.token_urlsafe(48),
        FRONTDOOR_SECRETS_KEY=new_key(),
        FRONTDOOR_INTERNAL_TOKEN=secrets.token_urlsafe(32),
        ALLOWED_HOSTS="frontdoor.example.com",
        DJANGO_SETTINGS_MODULE="controlplane.settings",
    )
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_settings_pass_the_deploy_checks() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_debug_is_refused_in_production() -> None:
    result = manage("check", env=production_env(DEBUG="true"))
    assert result.returncode != 0
    assert "DEBUG=true is refused" in result.stderr


def test_a_missing_secret_key_is_refused_in_production() -> None:
    env = production_env()
    del env["SECRET_KEY"]
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_a_short_key_pepper_is_refused_in_production() -> None:
    result = manage("check", env=production_env(FRONTDOOR_KEY_PEPPER="short"))
    assert result.returncode != 0
    assert "FRONTDOOR_KEY_PEPPER" in result.stderr


def test_secrets_can_come_from_files(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(secrets.token_urlsafe(64) + "\n")
    env = production_env()
    del env["SECRET_KEY"]
    env["SECRET_KEY_FILE"] = str(secret_file)
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_or_short_internal_token_is_refused_in_production() -> None:
    env = production_env()
    del env["FRONTDOOR_INTERNAL_TOKEN"]
    for refused in (env, production_env(FRONTDOOR_INTERNAL_TOKEN="short")):
        result = manage("check", env=refused)
        assert result.returncode != 0
        assert "FRONTDOOR_INTERNAL_TOKEN" in result.stderr


def test_a_missing_secrets_key_is_refused_in_production() -> None:
    env = production_env()
    del env["FRONTDOOR_SECRETS_KEY"]
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "FRONTDOOR_SECRETS_KEY" in result.stderr


def test_a_malformed_seal_key_is_refused_with_the_reason() -> None:
    result = manage("check", env=production_env(FRONTDOOR_SEAL_KEY="c2hvcnQta2V5"))  # base64 of "short-key"
    assert result.returncode != 0
    assert "FRONTDOOR_SEAL_KEY" in result.stderr
    assert "a key is 64 bytes" in result.stderr


def test_the_secrets_keys_can_come_from_files(tmp_path: Path) -> None:
    at_rest, seal = tmp_path / "secrets.key", tmp_path / "seal.key"
    at_rest.write_text(new_key() + "\n")
    seal.write_text(f"# the newest key first\n{new_key()}\n{new_key()}\n")
    env = production_env(FRONTDOOR_SECRETS_KEY_FILE=str(at_rest), FRONTDOOR_SEAL_KEY_FILE=str(seal))
    del env["FRONTDOOR_SECRETS_KEY"]
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
