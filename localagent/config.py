"""The agent's settings, read from the environment (Django-free, through controlplane.contracts.env)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.contracts.drain import DEFAULT_ACK_TIMEOUT_S, DEFAULT_DRAIN_TIMEOUT_S
from controlplane.contracts.env import (
    ImproperlyConfiguredEnv,
    env_bool,
    env_float,
    env_gpu_counts,
    env_int,
    env_str,
)
from controlplane.contracts.sealing import Sealer, SealError, sealer_from_env

# Runtimes whose replicas are started from a command template in FRONTDOOR_LOCAL_COMMAND_<RUNTIME>.
TEMPLATE_RUNTIMES = ("vllm", "tgi", "triton")
DEFAULT_HEALTH_PATHS = {"triton": "/v2/health/ready"}
# Variables of the agent's own environment that replicas receive (names, or prefixes ending in "*"): the built-in
# server's knobs and the Hugging Face offline switch. Everything else in the agent's environment stays with it.
DEFAULT_REPLICA_ENV = ("HF_HUB_OFFLINE", "MODELSERVER_*")
_PASSTHROUGH_ENTRY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\*?$")


def _replica_env(raw: str | None) -> tuple[str, ...]:
    """Read from ``os.environ`` itself, not ``env_str``: set but empty means "pass nothing", unset the defaults."""
    if raw is None:
        return DEFAULT_REPLICA_ENV
    entries = tuple(part.strip() for part in raw.split(",") if part.strip())
    for entry in entries:
        # A bare "*" (or "X*" for a one-letter X) would hand replicas the agent's secrets: refuse what is not a
        # name or a prefix of at least two characters.
        if not _PASSTHROUGH_ENTRY.match(entry) or (entry.endswith("*") and len(entry) < 3):
            raise ImproperlyConfiguredEnv(
                f"FRONTDOOR_LOCAL_REPLICA_ENV: {entry!r} is not a variable name or a prefix such as MODELSERVER_*"
            )
    return entries


def _non_negative(name: str, default: float) -> float:
    value = env_float(name, default)
    if value < 0:
        raise ImproperlyConfiguredEnv(f"{name}={value}: use 0 or more seconds")
    return value


def _sealer() -> Sealer | None:
    try:
        return sealer_from_env("FRONTDOOR_SEAL_KEY")
    except SealError as exc:
        raise ImproperlyConfiguredEnv(f"FRONTDOOR_SEAL_KEY (or _FILE): {exc}") from exc


@dataclass
class AgentConfig:
    """Everything the agent reads from the environment; tests build one directly."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "fd"
    state_dir: Path = Path("var/localagent")
    # GPU type -> slots on this machine. Revisions needing a type not listed cannot be placed.
    gpu_slots: dict[str, int] = field(default_factory=dict)
    # runtime -> command template with {port} and {model} placeholders (shell-like words, no shell).
    commands: dict[str, str] = field(default_factory=dict)
    health_paths: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"  # replicas bind here; their endpoints use it too
    http_host: str = "127.0.0.1"
    http_port: int = 8002  # the control API; 0 = disabled
    tick_s: float = 1.0
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 30.0
    startup_timeout_s: float = 120.0  # a replica not healthy by then is restarted
    unhealthy_restart_after: int = 10  # consecutive failed health checks of a started replica before a restart
    stop_grace_s: float = 5.0  # SIGTERM to SIGKILL
    # A replica no longer wanted drains first (controlplane/contracts/drain.py): it is stopped once every live
    # gateway loaded a snapshot without it and it has nothing in flight, or after drain_timeout_s. A gateway that
    # does not acknowledge is waited for drain_ack_timeout_s at most.
    drain_ack_timeout_s: float = DEFAULT_ACK_TIMEOUT_S
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S
    stop_children_on_exit: bool = True  # False: leave replicas running for the next agent to adopt
    # The user replicas run as when the agent runs as root ("" = nobody); see sandbox.resolve_run_as.
    run_as: str = ""
    # Where the built-in runtime is staged and replicas get their own directories; None = chosen by sandbox.py.
    stage_dir: Path | None = None
    # Names (or "PREFIX*") passed from the agent's environment to every replica.
    replica_env: tuple[str, ...] = DEFAULT_REPLICA_ENV
    # Opens the replicas' secret variables (FRONTDOOR_SEAL_KEY or _FILE, the control plane's seal key); None: a
    # revision's secret variables are left out.
    sealer: Sealer | None = None

    def health_path(self, runtime: str) -> str:
        return self.health_paths.get(runtime) or DEFAULT_HEALTH_PATHS.get(runtime, "/health")

    @classmethod
    def from_env(cls) -> AgentConfig:
        commands = {rt: env_str(f"FRONTDOOR_LOCAL_COMMAND_{rt.upper()}") for rt in TEMPLATE_RUNTIMES}
        health = {rt: env_str(f"FRONTDOOR_LOCAL_HEALTH_PATH_{rt.upper()}") for rt in (*TEMPLATE_RUNTIMES, "builtin")}
        config = cls(
            redis_url=env_str("REDIS_URL", cls.redis_url),
            prefix=env_str("FRONTDOOR_REDIS_PREFIX", cls.prefix),
            state_dir=Path(env_str("FRONTDOOR_LOCAL_STATE_DIR", str(cls.state_dir))),
            gpu_slots=env_gpu_counts("FRONTDOOR_LOCAL_GPU_SLOTS"),
            commands={rt: cmd for rt, cmd in commands.items() if cmd},
            health_paths={rt: path for rt, path in health.items() if path},
            host=env_str("FRONTDOOR_LOCAL_HOST", cls.host),
            http_host=env_str("FRONTDOOR_LOCAL_AGENT_HOST", cls.http_host),
            http_port=env_int("FRONTDOOR_LOCAL_AGENT_PORT", cls.http_port),
            tick_s=env_float("FRONTDOOR_LOCAL_TICK_SECONDS", cls.tick_s),
            backoff_base_s=env_float("FRONTDOOR_LOCAL_BACKOFF_BASE_SECONDS", cls.backoff_base_s),
            backoff_cap_s=env_float("FRONTDOOR_LOCAL_BACKOFF_CAP_SECONDS", cls.backoff_cap_s),
            startup_timeout_s=env_float("FRONTDOOR_LOCAL_STARTUP_TIMEOUT_SECONDS", cls.startup_timeout_s),
            stop_children_on_exit=env_bool("FRONTDOOR_LOCAL_STOP_ON_EXIT", cls.stop_children_on_exit),
            drain_ack_timeout_s=_non_negative("FRONTDOOR_DRAIN_ACK_TIMEOUT_S", cls.drain_ack_timeout_s),
            drain_timeout_s=_non_negative("FRONTDOOR_DRAIN_TIMEOUT_S", cls.drain_timeout_s),
            run_as=env_str("FRONTDOOR_LOCAL_RUN_AS", cls.run_as),
            stage_dir=Path(stage_dir) if (stage_dir := env_str("FRONTDOOR_LOCAL_STAGE_DIR")) else None,
            replica_env=_replica_env(os.environ.get("FRONTDOOR_LOCAL_REPLICA_ENV")),
            sealer=_sealer(),
        )
        for runtime, template in config.commands.items():
            if "{port}" not in template:
                raise ImproperlyConfiguredEnv(f"FRONTDOOR_LOCAL_COMMAND_{runtime.upper()} must contain {{port}}")
        return config
