"""The console palette meets WCAG 2.1 AA contrast: 4.5:1 for text (1.4.3), 3:1 for control borders and the focus
ring (1.4.11). Colours are read from static/console/console.css, so a palette change is checked here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[2] / "static" / "console" / "console.css"
_HEX = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")


def rules() -> list[tuple[list[str], dict[str, str]]]:
    text = re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S)
    parsed = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", text):
        declarations = dict(
            (name.strip(), value.strip()) for name, _, value in (d.partition(":") for d in body.split(";") if ":" in d)
        )
        parsed.append(([s.strip() for s in selectors.split(",")], declarations))
    return parsed


def colour(selector: str, prop: str) -> str:
    """The hex colour ``selector`` sets for ``prop`` (CSS variables resolved from ``:root``)."""
    variables = next(d for s, d in rules() if s == [":root"])
    for selectors, declarations in rules():
        if selector in selectors and prop in declarations:
            value = declarations[prop]
            if (var := re.search(r"var\((--[\w-]+)\)", value)) is not None:
                value = variables[var.group(1)]
            match = _HEX.search(value)
            assert match is not None, f"{selector} {{{prop}: {value}}} is not a hex colour"
            return match.group(0)
    raise AssertionError(f"console.css has no {prop} for {selector}")


def luminance(hex_colour: str) -> float:
    digits = hex_colour.lstrip("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    channels = [int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


BODY, CARD = ("body", "background"), (".card", "background")
TEXT = ("body", "color")
# (what, foreground (selector, property), background (selector, property))
TEXT_PAIRS = [
    ("text on the page", TEXT, BODY),
    ("text on a card", TEXT, CARD),
    ("muted text on a card", (".muted", "color"), CARD),
    ("muted text on the page", (".muted", "color"), BODY),
    ("links on a card", ("a", "color"), CARD),
    ("links on the page", ("a", "color"), BODY),
    ("primary button", ("button.primary", "color"), ("button.primary", "background")),
    ("danger button", ("button.danger", "color"), ("button.danger", "background")),
    ("plain button", ("button", "color"), ("button", "background")),
    ("top bar", (".topbar", "color"), (".topbar", "background")),
    ("signed-in name in the top bar", (".signout .who", "color"), (".topbar", "background")),
    ("ready badge", (".status-ready", "color"), CARD),
    ("progressing badge", (".status-progressing", "color"), CARD),
    ("degraded badge", (".status-degraded", "color"), CARD),
    ("rolled-back rollout", (".rollout-rolled_back", "color"), CARD),
    ("field errors", (".errorlist li", "color"), CARD),
    ("text on an info banner", TEXT, (".banner", "background")),
    ("text on a success banner", TEXT, (".banner.success", "background")),
    ("text on an error banner", TEXT, (".banner.error", "background")),
    ("text on form errors", TEXT, (".form-errors", "background")),
    ("shown key", TEXT, (".copy-row code", "background")),
    ("manifests", (".code", "color"), (".code", "background")),
]
NON_TEXT_PAIRS = [
    ("input border", ("input:not([type=checkbox]):not([type=radio]):not([type=range])", "border"), CARD),
    ("focus ring on a card", ("a:focus-visible", "outline"), CARD),
    ("focus ring on the page", ("a:focus-visible", "outline"), BODY),
    ("focus ring in the top bar", ("a:focus-visible", "outline"), (".topbar", "background")),
]


@pytest.mark.parametrize(("what", "fg", "bg"), TEXT_PAIRS, ids=[p[0] for p in TEXT_PAIRS])
def test_it_gives_text_aa_contrast(what: str, fg: tuple[str, str], bg: tuple[str, str]) -> None:
    ratio = contrast(colour(*fg), colour(*bg))
    assert ratio >= 4.5, f"{what}: {colour(*fg)} on {colour(*bg)} is {ratio:.2f}:1"


@pytest.mark.parametrize(("what", "fg", "bg"), NON_TEXT_PAIRS, ids=[p[0] for p in NON_TEXT_PAIRS])
def test_it_gives_controls_and_focus_aa_contrast(what: str, fg: tuple[str, str], bg: tuple[str, str]) -> None:
    ratio = contrast(colour(*fg), colour(*bg))
    assert ratio >= 3, f"{what}: {colour(*fg)} against {colour(*bg)} is {ratio:.2f}:1"


def test_it_computes_known_ratios() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
