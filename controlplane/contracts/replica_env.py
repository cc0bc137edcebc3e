"""What a tenant may put in a replica's environment and command line, and the environment the agent builds.

On the local backend a replica is a process on the platform's host, so a variable that changes how an
interpreter, the dynamic loader or a shell starts is a way to run code as the agent's user: those are refused
(``refused_env``), and so are the variables the platform itself sets (paths, GPUs, proxies, its own markers).
Arguments may never override the flags the platform passes (``--host``, ``--port``, ``--model-name`` ...), and on
the local backend they may not load code (``--trust-remote-code`` ...) or name paths outside the replica's own
directory. On Kubernetes the tenant owns the image, so only the reserved flags apply there.
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")

# Exact names refused on the local backend (compared upper-cased).
REFUSED_ENV_NAMES = frozenset(
    {
        # shells: startup files, word splitting, prompts and hooks that run commands
        "BASH_ENV",
        "ENV",
        "IFS",
        "CDPATH",
        "GLOBIGNORE",
        "PROMPT_COMMAND",
        "PS4",
        "SHELL",
        "SHELLOPTS",
        "BASHOPTS",
        # programs that other programs start on their behalf
        "BROWSER",
        "EDITOR",
        "VISUAL",
        "PAGER",
        "MANPAGER",
        "CC",
        "CXX",
        "CPP",
        "LD",
        "AR",
        # the C library and OpenSSL loading code or data from a path
        "GCONV_PATH",
        "LOCPATH",
        "NLSPATH",
        "GLIBC_TUNABLES",
        "HOSTALIASES",
        "RESOLV_HOST_CONF",
        "OPENSSL_CONF",
        "OPENSSL_ENGINES",
        "OPENSSL_MODULES",
        # interpreters' option variables
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
        "JDK_JAVA_OPTIONS",
        "NODE_OPTIONS",
        # set by the platform for every replica
        "PATH",
        "HOME",
        "TMPDIR",
        "TMP",
        "TEMP",
        "USER",
        "LOGNAME",
        "CUDA_VISIBLE_DEVICES",
        "NVIDIA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        # proxies are the operator's setting, injected by the platform
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "NO_PROXY",
        "FTP_PROXY",
    }
)
# Name prefixes refused on the local backend (compared upper-cased).
REFUSED_ENV_PREFIXES = (
    "LD_",  # LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT ...
    "DYLD_",
    "PERL5",
    "PERL_",
    "RUBY",
    "GEM_",
    "BUNDLE_",
    "NODE_",
    "NPM_CONFIG_",
    "GIT_",  # GIT_SSH_COMMAND, GIT_CONFIG_* run commands
    "LUA_",
    "FRONTDOOR_",  # the platform's own settings and replica markers
)
# PYTHON* variables that only tune output or hashing; every other PYTHON* one (PYTHONPATH, PYTHONSTARTUP,
# PYTHONWARNINGS, PYTHONHOME, PYTHONBREAKPOINT, PYTHONINSPECT, PYTHONUSERBASE ...) can load code and is refused.
HARMLESS_PYTHON_ENV = frozenset(
    {
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
        "PYTHONFAULTHANDLER",
        "PYTHONUTF8",
        "PYTHONNOUSERSITE",
        "PYTHONOPTIMIZE",
    }
)

# Flags the platform passes to the runtimes it starts (and their aliases); a tenant's args may not repeat them.
RESERVED_FLAGS = (
    "--host",
    "--hostname",
    "--port",
    "--uds",
    "--fd",
    "--model",
    "--model-id",
    "--model-name",
    "--served-model-name",
    "--http-port",
    "--http-address",
    "--grpc-port",
    "--grpc-address",
    "--metrics-port",
    "--model-repository",
    "--root-path",
    "--protocol",  # the built-in server's mode: the deployment's protocol, which the gateway routes by
)
# Flags that make a runtime import code chosen by the tenant (vLLM, TGI, Triton); refused on the local backend.
CODE_LOADING_FLAGS = (
    "--trust-remote-code",
    "--worker-cls",
    "--worker-extension-cls",
    "--middleware",
    "--tool-parser-plugin",
    "--logits-processors",
    "--logits-processor-pattern",
    "--plugins",
    "--backend-directory",
    "--repoagent-directory",
    "--cache-directory",
)
# Shortest flag prefix taken as an abbreviation (argparse accepts unambiguous prefixes such as ``--po``).
_MIN_ABBREVIATION = 4


def env_refusal(name: str) -> str:
    """Why ``name`` may not be set by a tenant on the local backend, or "" when it may."""
    upper = name.upper()
    if upper in REFUSED_ENV_NAMES:
        return f"{name} is set by the platform or changes how programs start"
    if upper.startswith("PYTHON") and upper not in HARMLESS_PYTHON_ENV:
        return f"{name} changes how the Python interpreter starts"
    for prefix in REFUSED_ENV_PREFIXES:
        if upper.startswith(prefix):
            return f"{name} ({prefix}*) changes how programs start or is the platform's own"
    if "TRUST_REMOTE_CODE" in upper:
        return f"{name} makes the runtime load code from the model repository"
    return ""


def env_errors(env: object, *, local: bool) -> list[str]:
    """Every problem with a tenant's ``env``: shape on every backend, the denylist on the local one."""
    if not isinstance(env, dict):
        return ["must map environment variable names to strings"]
    errors: list[str] = []
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            errors.append(f"{name!r} is not a variable name (letters, digits and '_', not starting with a digit)")
            continue
        if not isinstance(value, str):
            errors.append(f"{name}: the value must be a string")
            continue
        if "\x00" in value:
            errors.append(f"{name}: the value contains a NUL byte")
            continue
        if local and (reason := env_refusal(name)):
            errors.append(f"{reason}; it cannot be set on the local backend")
    return errors


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0] if arg.startswith("--") else ""


def _matches(flag: str, known: tuple[str, ...]) -> str:
    """The known flag ``flag`` spells, exactly or as an argparse abbreviation; "" when none."""
    flag = flag.replace("_", "-")  # vLLM and others accept --trust_remote_code as well
    for name in known:
        if flag == name or (len(flag) >= _MIN_ABBREVIATION and name.startswith(flag)):
            return name
    return ""


def _is_outside_path(value: str) -> bool:
    if value.startswith(("/", "~", "file:")):
        return True
    return ".." in re.split(r"[/\\]", value)


def args_errors(args: object, *, local: bool, reserved: tuple[str, ...] = RESERVED_FLAGS) -> list[str]:
    """Every problem with a tenant's ``args``: shape and reserved flags everywhere; code and paths on local."""
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        return ["must be a list of strings"]
    errors: list[str] = []
    for arg in args:
        if "\x00" in arg:
            errors.append(f"{arg!r} contains a NUL byte")
            continue
        flag = _flag_name(arg)
        if flag and (name := _matches(flag, reserved)):
            errors.append(f"{arg!r}: {name} is set by the platform and cannot be overridden")
            continue
        if not local:
            continue
        if flag and (name := _matches(flag, CODE_LOADING_FLAGS)):
            errors.append(f"{arg!r}: {name} loads code chosen by the deployment and is refused on the local backend")
            continue
        value = arg.split("=", 1)[1] if flag and "=" in arg else arg
        if _is_outside_path(value):
            errors.append(f"{arg!r}: paths outside the replica's own directory are refused on the local backend")
    return errors


def template_flags(words: list[str]) -> tuple[str, ...]:
    """The ``--flags`` a command template passes itself: a tenant's args may not repeat them either."""
    return tuple(dict.fromkeys(w.split("=", 1)[0] for w in words if w.startswith("--")))
