import io
import math
import sys

import pytest
import torch

from longtail.errors import ConfigError
from longtail.evaluation import accuracy_summary, per_class_accuracy, shot_groups
from longtail.evaluation.table import format_table


def test_shot_group_boundaries():
    counts = [101, 100, 20, 19, 0]
    assert shot_groups(counts) == {"many": [0], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups(counts, many=50, few=5) == {"many": [0, 1], "medium": [2, 3], "few": [4]}


def test_shot_groups_refuse_overlapping_thresholds_and_counts_that_are_not_a_vector():
    """README's ``shot_groups``: ``few > many`` put a class of 15 in both many and few; a nested list was
    flattened into indices of nothing; text raised NumPy's UFuncTypeError."""
    with pytest.raises(ConfigError, match=r"^few=20, many=10: expected few <= many"):
        shot_groups([15], many=10, few=20)
    for counts in ([[1, 2]], "abc"):
        with pytest.raises(ConfigError, match=r"^train_counts: expected a 1-D sequence of class sizes"):
            shot_groups(counts)
    assert shot_groups([]) == {"many": [], "medium": [], "few": []}
    assert shot_groups(torch.tensor([200, 5])) == {"many": [0], "medium": [], "few": [1]}


def test_per_class_accuracy_marks_absent_classes():
    acc = per_class_accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 3)
    assert acc[0] == 0.5 and acc[1] == 1.0 and math.isnan(acc[2])


def test_summary_by_hand():
    train_counts = [500, 50, 5]  # many, medium, few
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 0, 0])
    s = accuracy_summary(preds, labels, train_counts)
    assert s["many"] == 75.0 and s["medium"] == 50.0 and s["few"] == 0.0
    assert s["all"] == 50.0  # 4 of 8
    assert s["macro"] == pytest.approx((75.0 + 50.0 + 0.0) / 3)
    assert s["per_class"] == [75.0, 50.0, 0.0]


def test_empty_group_is_none_not_zero():
    s = accuracy_summary(torch.tensor([0, 1]), torch.tensor([0, 1]), [500, 300])
    assert s["many"] == 100.0 and s["medium"] is None and s["few"] is None
    assert "–" in format_table({"joint": s})


def test_table_orders_methods_like_the_paper():
    row = {"many": 1.0, "medium": 2.0, "few": 3.0, "all": 4.0, "macro": 5.0}
    table = format_table({"lws": row, "joint": row, "tau_norm": {**row, "tau": 0.8}, "crt": row, "ncm": row})
    names = [line.split()[0] for line in table.splitlines()[2:]]
    assert names == ["Joint", "NCM", "cRT", "τ-norm", "LWS"]
    assert "τ = 0.8" in table
    assert format_table({"joint": row}, markdown=True).startswith("| Method | Many")


@pytest.mark.parametrize("encoding", ["ascii", "latin-1", "utf-8"])
def test_a_table_printed_without_tau_or_plus_minus_keeps_its_columns_aligned(
    encoding: str, monkeypatch: pytest.MonkeyPatch
):
    # PYTHONIOENCODING=ascii: "τ-norm" and "±" were padded as 1 character, then spelled "tau-norm" and "+/-" by
    # the stream: every column after them 2 characters off
    stdout = io.TextIOWrapper(io.BytesIO(), encoding=encoding)
    monkeypatch.setattr(sys, "stdout", stdout)
    row = {"many": 1.0, "medium": 2.0, "few": 3.0, "all": 4.0, "macro": 5.0}
    row["ci"] = {column: [0.5, 1.5] for column in ("many", "medium", "few", "all", "macro")}
    table = format_table({"joint": row, "tau_norm": {**row, "tau": 0.8}, "lws": {**row, "few": None}})
    table.encode(encoding)  # strictly: nothing the stream lacks
    lines = table.splitlines()
    ends = [line.index("Macro") + len("Macro") for line in lines[:1]]
    for line in lines[2:]:  # the right-aligned Macro column ends at one place on every line
        assert line.index("5.0 ") + len("5.0 +/-0.5" if encoding == "ascii" else "5.0 ±0.5") == ends[0], table
    spelled = encoding != "utf-8"  # latin-1 has "±" but no "τ"
    assert ("tau-norm" in table) is spelled and ("τ-norm" in table) is not spelled
