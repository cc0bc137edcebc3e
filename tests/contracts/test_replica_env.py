"""The tenant's env and args: what can change how a program on the host starts is refused on the local backend."""

from __future__ import annotations

import pytest

from controlplane.contracts.replica_env import args_errors, env_errors, env_refusal, template_flags


@pytest.mark.parametrize(
    "name",
    [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "ld_audit",
        "PYTHONSTARTUP",
        "PYTHONPATH",
        "PYTHONWARNINGS",
        "PYTHONHOME",
        "PYTHONBREAKPOINT",
        "BROWSER",
        "PERL5OPT",
        "RUBYOPT",
        "NODE_OPTIONS",
        "BASH_ENV",
        "ENV",
        "IFS",
        "GCONV_PATH",
        "GLIBC_TUNABLES",
        "OPENSSL_CONF",
        "JAVA_TOOL_OPTIONS",
        "GIT_SSH_COMMAND",
        "PATH",
        "HOME",
        "CUDA_VISIBLE_DEVICES",
        "HTTPS_PROXY",
        "http_proxy",
        "FRONTDOOR_LOCAL_REPLICA",
        "HF_TRUST_REMOTE_CODE",
    ],
)
def test_it_refuses_variables_that_change_how_programs_start(name: str) -> None:
    assert env_refusal(name)
    errors = env_errors({name: "x"}, local=True)
    assert len(errors) == 1 and name in errors[0]


@pytest.mark.parametrize("name", ["PYTHONUNBUFFERED", "PYTHONHASHSEED", "HF_HUB_OFFLINE", "VLLM_LOGGING_LEVEL", "LANG"])
def test_it_keeps_harmless_variables(name: str) -> None:
    assert env_errors({name: "1"}, local=True) == []


def test_kubernetes_owns_its_image_so_only_the_shape_is_checked() -> None:
    assert env_errors({"LD_PRELOAD": "x"}, local=False) == []
    assert env_errors({"1BAD": "x"}, local=False)
    assert env_errors({"OK": "a\x00b"}, local=False) == ["OK: the value contains a NUL byte"]
    assert env_errors(["not", "a", "dict"], local=False)


@pytest.mark.parametrize(
    "args",
    [
        ["--port", "9"],
        ["--port=9"],
        ["--po", "9"],
        ["--host=0.0.0.0"],
        ["--model-name", "x"],
        ["--served_model_name=x"],
    ],
)
def test_args_never_override_the_platforms_flags(args: list[str]) -> None:
    for local in (True, False):
        errors = args_errors(args, local=local)
        assert errors and "set by the platform" in errors[0]


@pytest.mark.parametrize(
    "args",
    [
        ["--trust-remote-code"],
        ["--trust_remote_code"],
        ["--worker-extension-cls", "evil.Ext"],
        ["--download-dir", "/etc"],
        ["--chat-template=../../secrets.jinja"],
        ["~/x"],
        ["file:///etc/passwd"],
    ],
)
def test_local_args_may_not_load_code_or_leave_the_replica_directory(args: list[str]) -> None:
    assert args_errors(args, local=True)


def test_ordinary_args_pass_and_kubernetes_allows_code_loading_flags() -> None:
    assert args_errors(["--max-num-seqs", "4", "--ttft-ms=20", "weights/model.bin"], local=True) == []
    assert args_errors(["--trust-remote-code", "--download-dir", "/models"], local=False) == []
    assert args_errors("--port 9", local=True) == ["must be a list of strings"]


def test_template_flags_are_the_commands_own() -> None:
    words = ["vllm", "serve", "{model}", "--port", "{port}", "--gpu-memory-utilization=0.9"]
    assert template_flags(words) == ("--port", "--gpu-memory-utilization")
    assert args_errors(["--gpu-memory-utilization", "1"], local=True, reserved=template_flags(words))
