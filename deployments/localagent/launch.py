"""How a revision's replica is started: the command line and environment for its runtime."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from deployments.localagent.config import TEMPLATE_RUNTIMES, AgentConfig
from deployments.localagent.procs import MARKER_ENV
from deployments.localagent.protocol import DesiredRevision


class UnsupportedRuntime(Exception):
    """This revision cannot run on the local backend; the message is shown to the tenant."""


def build_argv(config: AgentConfig, revision: DesiredRevision, port: int) -> list[str]:
    """The replica's command line; raises UnsupportedRuntime when the runtime has no local command."""
    args = [str(arg) for arg in revision.spec.get("args") or []]
    runtime = revision.runtime
    if runtime == "builtin":
        model = revision.model or "frontdoor/sim-chat"
        base = [sys.executable, "-m", "modelserver", "--host", config.host, "--port", str(port), "--model-name", model]
        return base + args
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
        return words + args
    raise UnsupportedRuntime(f"runtime {runtime} has no local processes on the local backend")


def build_env(config: AgentConfig, revision: DesiredRevision, key: str, gpus: list[int]) -> dict[str, str]:
    env = dict(os.environ)
    env.update({str(k): str(v) for k, v in (revision.spec.get("env") or {}).items()})
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
