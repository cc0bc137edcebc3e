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
    ],
)
def test_it_refuses_bad_values(argv: list[str], environ: dict[str, str]) -> None:
    with pytest.raises(SystemExit):
        config_from_args(argv, environ=environ)
