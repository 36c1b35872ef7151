"""longtail.errors.shown: the one way a value from elsewhere is quoted in a one-line message."""

from __future__ import annotations

import pytest

from longtail.errors import SHOWN_CHARS, described, shown


def test_short_values_are_their_repr_or_text():
    assert shown("abc") == "'abc'" and shown(1.5) == "1.5" and shown(None) == "None"
    assert shown("abc", quote=False) == "abc" and shown(type(None).__name__, quote=False) == "NoneType"


@pytest.mark.parametrize("limit", [8, 40, 60, SHOWN_CHARS, 120])
def test_a_long_value_is_cut_at_the_limit_and_says_its_length(limit: int):
    text = shown("x" * 10_000, limit)
    kept, _, rest = text.partition("...")
    assert len(kept) + 3 == limit and kept == "'" + "x" * (limit - 4)
    assert rest == " (10,002 characters)"  # the repr's length, quotes included


def test_the_middle_cut_keeps_the_end():
    path = "/data/" + "d" * 500 + "/image.png"
    text = shown(path, 40, quote=False, middle=True)
    assert text.startswith("/data/") and text.endswith(f"/image.png ({len(path):,} characters)")
    assert len(text.partition(" (")[0]) == 40


def test_values_repr_cannot_show_are_described():
    assert shown(10**5000) == f"<an integer of {(10**5000).bit_length():,} bits>"
    nested: list = []
    inner = nested
    for _ in range(100_000):
        inner.append([])
        inner = inner[0]
    assert shown(nested) == "<a list nested too deep to show>"


def test_described_is_the_first_line_of_an_error_cut():
    assert described(ValueError("\n\nbad header\nmore")) == "ValueError: bad header"
    assert described(KeyError()) == "KeyError"
    assert described(OSError("y" * 500), 20) == "OSError: " + "y" * 17 + "... (500 characters)"


def test_a_repr_over_several_lines_is_shown_on_one():
    """A 2-D NumPy array (an estimator parameter) was quoted over lines: a "one-line" error of three lines."""
    import numpy as np

    assert shown(np.full((2, 2), 0.1)) == "array([[0.1, 0.1], [0.1, 0.1]])"
    assert shown("a\nb") == "'a\\nb'"  # a string's own line break stays escaped, as repr writes it
