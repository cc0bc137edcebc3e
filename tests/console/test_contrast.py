"""The console palette meets WCAG 2.1 AA contrast: 4.5:1 for text (1.4.3), 3:1 for control borders and the focus
ring (1.4.11), in the light palette and in the dark one (``@media (prefers-color-scheme: dark)``). Colours are read
from static/console/console.css, so a palette change is checked here; every colour there is a custom property of
the palettes, so the dark palette reaches every rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

CSS = Path(__file__).resolve().parents[2] / "static" / "console" / "console.css"
_HEX = re.compile(r"#(?:[0-9a-fA-F]{6}|[0-9a-fA-F]{3})\b")
_COLOUR_LITERAL = re.compile(r"#[0-9a-fA-F]{3,8}\b|\b(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch)\(")
_DARK = re.compile(r"@media\s*\(prefers-color-scheme:\s*dark\)\s*\{\s*:root\s*\{([^{}]*)\}\s*\}")
PALETTES = ("light", "dark")


def _css() -> str:
    return re.sub(r"/\*.*?\*/", "", CSS.read_text(), flags=re.S)


def _declarations(body: str) -> dict[str, str]:
    return {name.strip(): value.strip() for name, _, value in (d.partition(":") for d in body.split(";") if ":" in d)}


def rules() -> list[tuple[list[str], dict[str, str]]]:
    """Every rule outside the dark palette, as (selectors, declarations); rules inside other @media blocks count."""
    parsed = []
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", _DARK.sub("", _css())):
        parsed.append(([s.strip() for s in selectors.split(",")], _declarations(body)))
    return parsed


def variables(palette: str) -> dict[str, str]:
    """The custom properties of ``palette``: the light ``:root``, with the dark block's values over them."""
    light = next(d for s, d in rules() if s == [":root"])
    if palette == "light":
        return light
    dark = _DARK.search(_css())
    assert dark is not None, "console.css has no @media (prefers-color-scheme: dark) { :root { … } } palette"
    return light | _declarations(dark.group(1))


def colour(selector: str, prop: str, palette: str = "light") -> str:
    """The hex colour ``selector`` sets for ``prop`` in ``palette`` (CSS variables resolved)."""
    palette_vars = variables(palette)
    for selectors, declarations in rules():
        if selector in selectors and prop in declarations:
            value = declarations[prop]
            if (var := re.search(r"var\((--[\w-]+)\)", value)) is not None:
                value = palette_vars[var.group(1)]
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
INPUT = "input:not([type=checkbox]):not([type=radio]):not([type=range])"
FIELD = (INPUT, "background")
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
    ("link button on a card", ("button.link", "color"), CARD),
    ("typed text in a field", (INPUT, "color"), FIELD),
    ("top bar", (".topbar", "color"), (".topbar", "background")),
    ("signed-in name in the top bar", (".signout .who", "color"), (".topbar", "background")),
    ("tenant switcher entries", (".switcher li a", "color"), (".switcher ul", "background")),
    ("ready badge", (".status-ready", "color"), CARD),
    ("progressing badge", (".status-progressing", "color"), CARD),
    ("degraded badge", (".status-degraded", "color"), CARD),
    ("rolled-back rollout", (".rollout-rolled_back", "color"), CARD),
    ("field errors", (".errorlist li", "color"), CARD),
    ("text on an info banner", TEXT, (".banner", "background")),
    ("text on a success banner", TEXT, (".banner.success", "background")),
    ("text on an error banner", TEXT, (".banner.error", "background")),
    ("text on form errors", TEXT, (".form-errors", "background")),
    ("links in the error summary", (".error-summary a", "color"), (".form-errors", "background")),
    ("field errors in the error summary", (".errorlist li", "color"), (".form-errors", "background")),
    ("shown key", TEXT, (".copy-row code", "background")),
    ("manifests", (".code", "color"), (".code", "background")),
    ("skip link", (".skip:focus", "color"), (".skip:focus", "background")),
]
NON_TEXT_PAIRS = [
    ("input border", (INPUT, "border"), CARD),
    (
        "input border on its own field",
        (INPUT, "border"),
        FIELD,
    ),
    ("focus ring on a card", ("a:focus-visible", "outline"), CARD),
    ("focus ring on the page", ("a:focus-visible", "outline"), BODY),
    ("focus ring in the top bar", ("a:focus-visible", "outline"), (".topbar", "background")),
    ("quota bar on its track", (".bar span", "background"), (".bar", "background")),
]


@pytest.mark.parametrize("palette", PALETTES)
@pytest.mark.parametrize(("what", "fg", "bg"), TEXT_PAIRS, ids=[p[0] for p in TEXT_PAIRS])
def test_it_gives_text_aa_contrast(palette: str, what: str, fg: tuple[str, str], bg: tuple[str, str]) -> None:
    front, back = colour(*fg, palette), colour(*bg, palette)
    ratio = contrast(front, back)
    assert ratio >= 4.5, f"{what} ({palette}): {front} on {back} is {ratio:.2f}:1"


@pytest.mark.parametrize("palette", PALETTES)
@pytest.mark.parametrize(("what", "fg", "bg"), NON_TEXT_PAIRS, ids=[p[0] for p in NON_TEXT_PAIRS])
def test_it_gives_controls_and_focus_aa_contrast(
    palette: str, what: str, fg: tuple[str, str], bg: tuple[str, str]
) -> None:
    front, back = colour(*fg, palette), colour(*bg, palette)
    ratio = contrast(front, back)
    assert ratio >= 3, f"{what} ({palette}): {front} against {back} is {ratio:.2f}:1"


def test_the_dark_palette_sets_every_colour_the_light_one_does() -> None:
    light, dark = variables("light"), variables("dark")
    colours = {name for name, value in light.items() if _COLOUR_LITERAL.search(value)}
    dark_block = _DARK.search(_css())
    assert dark_block is not None
    overridden = set(_declarations(dark_block.group(1)))
    assert colours - overridden == set(), "these colours stay light in dark mode"
    assert luminance(colour("body", "background", "dark")) < 0.02 < 0.9 < luminance(colour("body", "background"))
    assert luminance(dark["--text"]) > 0.7  # light text on the dark page


def test_no_rule_writes_a_colour_outside_the_palettes() -> None:
    literal = [
        f"{', '.join(selectors)} {{{prop}: {value}}}"
        for selectors, declarations in rules()
        if selectors != [":root"]
        for prop, value in declarations.items()
        if _COLOUR_LITERAL.search(value)
    ]
    assert literal == [], "use the palette's custom properties, so dark mode reaches these"


def test_it_computes_known_ratios() -> None:
    assert contrast("#000000", "#ffffff") == pytest.approx(21)
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
