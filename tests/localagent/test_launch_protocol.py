"""The built-in server starts in the mode of its revision's protocol, and a tenant's args cannot choose another."""

from __future__ import annotations

import pytest

from controlplane.contracts.localagent import DesiredRevision
from controlplane.contracts.protocols import BUILTIN_PROTOCOL_FLAG
from localagent import launch, staging
from localagent.config import AgentConfig
from modelserver.config import config_from_args

BUILTIN = staging.BuiltinRuntime(python="/stage/bin/python")


def revision(**spec: object) -> DesiredRevision:
    return DesiredRevision(id=7, number=1, replicas=1, spec={"runtime": "builtin", "model": "frontdoor/ranker", **spec})


def server_args(rev: DesiredRevision) -> list[str]:
    """What follows ``python -P -m modelserver`` on the replica's command line."""
    argv = launch.build_argv(AgentConfig(), rev, 4000, BUILTIN)
    assert argv[:4] == ["/stage/bin/python", "-P", "-m", "modelserver"]
    return argv[4:]


def test_a_v2_revision_starts_the_builtin_server_in_v2_mode() -> None:
    args = server_args(revision(protocol="v2", args=["--stall-ms", "5"]))

    assert args == [
        "--host",
        "127.0.0.1",
        "--port",
        "4000",
        "--model-name",
        "frontdoor/ranker",
        BUILTIN_PROTOCOL_FLAG,
        "v2",
        "--stall-ms",
        "5",
    ]
    config = config_from_args(args, environ={})  # the server's own parser takes exactly these
    assert (config.protocol, config.model_name, config.port) == ("v2", "frontdoor/ranker", 4000)


@pytest.mark.parametrize("spec", [{}, {"protocol": "openai"}], ids=["a spec from before protocols", "openai"])
def test_an_openai_revision_starts_as_it_always_did(spec: dict[str, object]) -> None:
    args = server_args(revision(**spec))

    assert args == ["--host", "127.0.0.1", "--port", "4000", "--model-name", "frontdoor/ranker"]
    assert config_from_args(args, environ={}).protocol == "openai"


@pytest.mark.parametrize("args", [["--protocol", "openai"], ["--protocol=v2"], ["--proto", "v2"]])
def test_it_refuses_args_that_choose_the_servers_mode(args: list[str]) -> None:
    with pytest.raises(launch.RefusedRevision, match="--protocol is set by the platform"):
        launch.build_argv(AgentConfig(), revision(protocol="v2", args=args), 4000, BUILTIN)
