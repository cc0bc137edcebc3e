"""The sealing format (``controlplane.contracts.sealing``): what the control plane seals, the gateway and the local
agent open, with the same keys, and nothing else does."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlplane.contracts.sealing import (
    KEY_BYTES,
    PREFIX,
    Sealer,
    SealError,
    context,
    key_text_problem,
    new_key,
    parse_keys,
    sealer_from_env,
)
from controlplane.contracts.snapshot import upstream_key_context

VALUE = "sk-test-0123456789abcdef"
CONTEXT = context("upstream", "acme", "chat")


@pytest.fixture
def sealer() -> Sealer:
    return Sealer.from_text(new_key())


def test_it_opens_what_it_sealed_in_either_mode(sealer: Sealer) -> None:
    for deterministic in (True, False):
        sealed = sealer.seal(VALUE, CONTEXT, deterministic=deterministic)
        assert sealed.startswith(f"{PREFIX}.")
        assert VALUE not in sealed
        assert sealer.unseal(sealed, CONTEXT) == VALUE


def test_it_seals_a_value_to_the_same_text_every_time_when_deterministic(sealer: Sealer) -> None:
    first = sealer.seal(VALUE, CONTEXT, deterministic=True)
    assert sealer.seal(VALUE, CONTEXT, deterministic=True) == first
    assert first.split(".")[2] == "d"
    # Only the same value under the same context seals alike.
    assert sealer.seal(VALUE + "x", CONTEXT, deterministic=True) != first
    assert sealer.seal(VALUE, context("upstream", "acme", "other"), deterministic=True) != first


def test_it_seals_a_value_to_a_new_text_every_time_when_random(sealer: Sealer) -> None:
    texts = {sealer.seal(VALUE, CONTEXT) for _ in range(5)}
    assert len(texts) == 5
    assert {text.split(".")[2] for text in texts} == {"r"}
    assert {sealer.unseal(text, CONTEXT) for text in texts} == {VALUE}


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "random"])
def test_it_refuses_a_seal_opened_under_another_context(sealer: Sealer, deterministic: bool) -> None:
    sealed = sealer.seal(VALUE, upstream_key_context("acme", "chat"), deterministic=deterministic)
    for other in (upstream_key_context("acme", "chat2"), upstream_key_context("globex", "chat"), "secret:1:chat"):
        with pytest.raises(SealError, match="does not open"):
            sealer.unseal(sealed, other)


def test_it_refuses_a_seal_of_a_key_it_does_not_hold(sealer: Sealer) -> None:
    sealed = Sealer.from_text(new_key()).seal(VALUE, CONTEXT, deterministic=True)
    with pytest.raises(SealError, match="not among the keys given"):
        sealer.unseal(sealed, CONTEXT)


def test_it_refuses_texts_that_are_no_seal_or_were_altered(sealer: Sealer) -> None:
    sealed = sealer.seal(VALUE, CONTEXT, deterministic=True)
    prefix, kid, mode, body = sealed.split(".")
    altered = f"{prefix}.{kid}.{mode}.{body[:-2]}{'A' if body[-2] != 'A' else 'B'}{body[-1]}"
    for text in (VALUE, "", "fd1.x.d", f"fd0.{kid}.{mode}.{body}", f"{prefix}.{kid}.z.{body}", altered):
        with pytest.raises(SealError):
            sealer.unseal(text, CONTEXT)


def test_a_rotated_key_list_seals_with_the_new_key_and_still_opens_old_seals() -> None:
    old_key, new = new_key(), new_key()
    old = Sealer.from_text(old_key)
    rotated = Sealer.from_text(f"# rotated: the new key first\n{new}\n\n{old_key}\n")
    before = old.seal(VALUE, CONTEXT, deterministic=True)

    assert rotated.unseal(before, CONTEXT) == VALUE
    after = rotated.seal(VALUE, CONTEXT, deterministic=True)
    assert after != before and after.split(".")[1] != before.split(".")[1]
    assert Sealer.from_text(new).unseal(after, CONTEXT) == VALUE  # the old key can be dropped once resealed
    with pytest.raises(SealError):
        old.unseal(after, CONTEXT)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abcde", "not base64url"),
        ("c2hvcnQta2V5", f"a key is {KEY_BYTES} bytes, this one is 9"),
        ("# only a comment\n", "holds no key"),
    ],
)
def test_it_refuses_a_malformed_key_file(
    text: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert problem in key_text_problem(text)
    key_file = tmp_path / "seal.key"
    key_file.write_text(f"{new_key()}\n{text}" if "bytes" in problem else text)
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY", raising=False)
    monkeypatch.setenv("FRONTDOOR_SEAL_KEY_FILE", str(key_file))
    with pytest.raises(SealError):
        sealer_from_env("FRONTDOOR_SEAL_KEY")


def test_it_reads_the_keys_of_a_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = new_key(), new_key()
    key_file = tmp_path / "seal.key"
    key_file.write_text(f"{first}\n{second}\n")
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY", raising=False)
    monkeypatch.setenv("FRONTDOOR_SEAL_KEY_FILE", str(key_file))

    sealer = sealer_from_env("FRONTDOOR_SEAL_KEY")

    assert sealer is not None and sealer.keys == tuple(parse_keys(f"{first}\n{second}"))
    assert sealer.unseal(Sealer.from_text(second).seal(VALUE, CONTEXT), CONTEXT) == VALUE  # every key opens
    assert sealer.seal(VALUE, CONTEXT, deterministic=True) == Sealer.from_text(first).seal(  # the first seals
        VALUE, CONTEXT, deterministic=True
    )


def test_no_key_set_is_no_sealer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY", raising=False)
    monkeypatch.delenv("FRONTDOOR_SEAL_KEY_FILE", raising=False)
    assert sealer_from_env("FRONTDOOR_SEAL_KEY") is None


def test_the_upstream_key_context_names_the_tenant_and_the_deployment() -> None:
    assert upstream_key_context("acme", "chat") == "upstream:acme:chat"
