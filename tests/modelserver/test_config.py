"""Settings: defaults, MODELSERVER_* variables, flags winning over variables, refusals."""

from __future__ import annotations

import pytest

from modelserver.config import config_from_args


def test_it_has_documented_defaults() -> None:
    config = config_from_args([], environ={})
    assert (config.host, config.port, config.model_name) == ("127.0.0.1", 9000, "frontdoor/sim-chat")
    assert (config.embeddings_model, config.embeddings_model_name, config.embedding_dim) == (
        "sim",
        "frontdoor/sim-embed",
        384,
    )
    assert (config.max_num_seqs, config.default_max_tokens, config.ttft_ms, config.tokens_per_s) == (256, 16, 0, 0)


def test_it_reads_the_environment() -> None:
    config = config_from_args([], environ={"MODELSERVER_TTFT_MS": "25", "MODELSERVER_TOKENS_PER_S": "40"})
    assert (config.ttft_ms, config.tokens_per_s) == (25.0, 40.0)


def test_it_lets_flags_win_over_the_environment() -> None:
    config = config_from_args(["--ttft-ms", "5"], environ={"MODELSERVER_TTFT_MS": "25"})
    assert config.ttft_ms == 5.0


def test_it_speaks_openai_unless_told_otherwise() -> None:
    assert config_from_args([], environ={}).protocol == "openai"


def test_it_takes_the_protocol_from_the_flag_or_the_environment() -> None:
    assert config_from_args(["--protocol", "v2"], environ={}).protocol == "v2"
    assert config_from_args([], environ={"MODELSERVER_PROTOCOL": "v2"}).protocol == "v2"
    assert config_from_args(["--protocol", "openai"], environ={"MODELSERVER_PROTOCOL": "v2"}).protocol == "openai"


def test_it_names_the_model_after_the_protocol_unless_named() -> None:
    assert config_from_args(["--protocol", "v2"], environ={}).model_name == "frontdoor-ranker"
    assert config_from_args(["--protocol", "v2", "--model-name", "acme/recs"], environ={}).model_name == "acme/recs"


def test_it_names_minilm_after_the_model() -> None:
    config = config_from_args(["--embeddings-model", "minilm"], environ={})
    assert config.embeddings_model_name == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("argv", "environ"),
    [
        (["--error-rate", "1.5"], {}),
        (["--max-num-seqs", "0"], {}),
        ([], {"MODELSERVER_PORT": "not-a-port"}),
        ([], {"MODELSERVER_EMBEDDINGS_MODEL": "bert"}),
        (["--protocol", "grpc"], {}),
        ([], {"MODELSERVER_PROTOCOL": "v3"}),
    ],
)
def test_it_refuses_bad_values(argv: list[str], environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(argv, environ=environ)
