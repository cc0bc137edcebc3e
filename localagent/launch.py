"""How a revision's replica is started: the command line and environment for its runtime.

A replica never inherits the agent's environment (database and Redis URLs, secrets): it gets a minimal one built
here, the operator's passthrough list on top, then the tenant's variables (its ``env`` and the secret variables the
control plane sealed for it, opened here) minus the ones the local backend refuses.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import shlex
from pathlib import Path

from controlplane.contracts.localagent import DesiredDeployment, DesiredRevision, secret_env_context
from controlplane.contracts.protocols import builtin_mode_args
from controlplane.contracts.replica_env import ENV_NAME, RESERVED_FLAGS, args_errors, env_refusal, template_flags
from controlplane.contracts.sealing import Sealer, SealError
from localagent.config import TEMPLATE_RUNTIMES, AgentConfig
from localagent.procs import MARKER_ENV
from localagent.sandbox import ReplicaDir, RunAs
from localagent.staging import BASE_PATH, BuiltinRuntime

log = logging.getLogger(__name__)

# The operator's proxy settings reach every replica (a tenant may not set them: env_refusal refuses them).
PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy")
DEFAULT_LANG = "C.UTF-8"


class UnsupportedRuntime(Exception):
    """This revision cannot run on the local backend; the message is shown to the tenant."""


class RefusedRevision(UnsupportedRuntime):
    """The revision's args would override what the agent sets; shown to the tenant like UnsupportedRuntime."""


def _checked_args(revision: DesiredRevision, reserved: tuple[str, ...]) -> list[str]:
    """The tenant's args, refused (RefusedRevision) when they repeat a flag the agent passes or break local rules.

    The API refuses these first; the agent checks again because the desired state in Redis is all it trusts.
    """
    raw = revision.spec.get("args") or []
    errors = args_errors(raw, local=True, reserved=reserved)
    if errors:
        raise RefusedRevision(f"the local agent refuses this revision's args: {'; '.join(errors)}")
    return [str(arg) for arg in raw]


def build_argv(
    config: AgentConfig,
    revision: DesiredRevision,
    port: int,
    builtin: BuiltinRuntime | None = None,
    unavailable: str = "",
) -> list[str]:
    """The replica's command line; raises UnsupportedRuntime when the runtime has no local command.

    ``builtin`` is the interpreter a builtin replica runs with (staged for the run-as user); without it a builtin
    revision raises UnsupportedRuntime with ``unavailable`` (why it is not ready) as the message.
    """
    runtime = revision.runtime
    if runtime == "builtin":
        args = _checked_args(revision, RESERVED_FLAGS)
        if builtin is None:
            raise UnsupportedRuntime(unavailable or "the built-in model server is not ready on the local backend")
        model = revision.model or "frontdoor/sim-chat"
        # -P: the replica's own (writable) working directory never lands on sys.path.
        base = [builtin.python, "-P", "-m", "modelserver", "--host", config.host, "--port", str(port)]
        return [*base, "--model-name", model, *builtin_mode_args(revision.spec), *args]
    if runtime in TEMPLATE_RUNTIMES:
        template = config.commands.get(runtime)
        if not template:
            raise UnsupportedRuntime(
                f"runtime {runtime} is not configured on the local backend: set"
                f" FRONTDOOR_LOCAL_COMMAND_{runtime.upper()} to an OpenAI-compatible server command with"
                " {port} and {model}"
            )
        # Substitute per word after splitting, so a model id can never inject extra arguments.
        words = [
            word.replace("{port}", str(port)).replace("{model}", revision.model).replace("{host}", config.host)
            for word in shlex.split(template)
        ]
        return words + _checked_args(revision, RESERVED_FLAGS + template_flags(shlex.split(template)))
    raise UnsupportedRuntime(f"runtime {runtime} has no local processes on the local backend")


def passthrough_env(patterns: tuple[str, ...], environ: dict[str, str] | None = None) -> dict[str, str]:
    """The agent's variables the operator listed (``NAME`` or ``PREFIX*``), plus its proxy settings."""
    environ = dict(os.environ) if environ is None else environ
    picked = {name: value for name, value in environ.items() if any(fnmatch.fnmatchcase(name, p) for p in patterns)}
    picked.update({name: environ[name] for name in PROXY_ENV if name in environ})
    return picked


def secret_env(revision: DesiredRevision, owner: DesiredDeployment, key: str, sealer: Sealer | None) -> dict[str, str]:
    """The revision's secret variables, opened; one that does not open (no key, another key, another deployment's
    value) is left out with a warning that names the variable, never its value."""
    opened: dict[str, str] = {}
    for name, sealed in revision.sealed_env.items():
        if sealer is None:
            log.warning("replica %s: %s is left out: the agent has no FRONTDOOR_SEAL_KEY", key, name)
            continue
        try:
            opened[name] = sealer.unseal(sealed, secret_env_context(owner.tenant, owner.id, name))
        except SealError as exc:
            log.warning("replica %s: %s is left out: %s", key, name, exc)
    return opened


def tenant_env(revision: DesiredRevision, key: str, secrets: dict[str, str] | None = None) -> dict[str, str]:
    """The revision's variables and opened secret variables, minus those the local backend refuses (dropped with a
    warning, never started)."""
    kept: dict[str, str] = {}
    for name, value in {**(revision.spec.get("env") or {}), **(secrets or {})}.items():
        if not isinstance(name, str) or not ENV_NAME.match(name) or not isinstance(value, str) or "\x00" in value:
            log.warning("replica %s: dropping malformed environment entry %r", key, name)
            continue
        if reason := env_refusal(name):
            log.warning("replica %s: dropping %s=... from the tenant's env: %s", key, name, reason)
            continue
        kept[name] = value
    return kept


def build_env(
    config: AgentConfig,
    revision: DesiredRevision,
    key: str,
    gpus: list[int],
    *,
    run_as: RunAs,
    replica_dir: ReplicaDir,
    builtin: BuiltinRuntime | None = None,
    environ: dict[str, str] | None = None,
    owner: DesiredDeployment | None = None,
) -> dict[str, str]:
    """The replica's whole environment, built from nothing (see the module docstring for the layers)."""
    environ = dict(os.environ) if environ is None else environ
    env = {"PATH": builtin.path if builtin else BASE_PATH, "LANG": environ.get("LANG") or DEFAULT_LANG}
    env |= passthrough_env(config.replica_env, environ)
    if builtin is not None and revision.runtime == "builtin":
        env |= builtin.env
    env |= {
        "HOME": str(replica_dir.home),
        "TMPDIR": str(replica_dir.tmp),
        "USER": run_as.name,
        "LOGNAME": run_as.name,
    }
    secrets = secret_env(revision, owner, key, config.sealer) if owner is not None else {}
    env |= tenant_env(revision, key, secrets)
    env[MARKER_ENV] = marker(config, key)
    if revision.gpu_count:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(i) for i in gpus)
    return env


def marker_prefix(config: AgentConfig) -> str:
    """Ties a replica to this agent's state dir, so two agents on one machine never touch each other's."""
    return f"{Path(config.state_dir).resolve()}|"


def marker(config: AgentConfig, key: str) -> str:
    return f"{marker_prefix(config)}{key}"


def log_path(config: AgentConfig, key: str) -> Path:
    return Path(config.state_dir) / "logs" / f"{key}.log"
