"""Bootstrap confidence intervals and the paired bootstrap (evaluation.bootstrap)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from longtail.evaluation.bootstrap import (
    MAX_BLOCK_CELLS,
    METRICS,
    bootstrap_ci,
    bootstrap_ci_from_predictions,
    paired_bootstrap,
    resample_blocks,
)
from longtail.evaluation.metrics import accuracy_summary, shot_groups

COUNTS = [1000, 500, 200, 80, 40, 25, 15, 10]  # many: 0-2, medium: 3-5, few: 6-7


def balanced_test(per_class: int, accuracies: list[float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N,) correctness and labels of a balanced test set, class c right with probability accuracies[c]."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(accuracies)), per_class)
    correct = rng.random(len(labels)) < np.asarray(accuracies)[labels]
    return correct, labels


ACCURACIES = [0.95, 0.9, 0.85, 0.7, 0.6, 0.5, 0.4, 0.3]


def point_estimates(correct: np.ndarray, labels: np.ndarray, counts=COUNTS) -> dict:
    """The metrics of accuracy_summary for a correctness vector (prediction = label where right)."""
    predictions = np.where(correct, labels, (labels + 1) % len(counts))
    return accuracy_summary(torch.from_numpy(predictions), torch.from_numpy(labels), counts)


def test_intervals_cover_the_point_estimates_and_are_ordered():
    correct, labels = balanced_test(100, ACCURACIES)
    ci = bootstrap_ci(correct, labels, COUNTS)
    summary = point_estimates(correct, labels)
    assert set(ci) == set(METRICS)
    for metric in METRICS:
        low, high = ci[metric]
        assert low < summary[metric] < high, metric
        assert 0.0 <= low <= high <= 100.0


def test_intervals_shrink_with_more_test_images():
    small = bootstrap_ci(*balanced_test(25, ACCURACIES), COUNTS)
    large = bootstrap_ci(*balanced_test(400, ACCURACIES), COUNTS)
    for metric in METRICS:
        width_small = small[metric][1] - small[metric][0]
        width_large = large[metric][1] - large[metric][0]
        # The width goes as 1 / sqrt(N): 16 times the images, about a quarter of the width.
        assert width_large < 0.45 * width_small, metric


def test_same_seed_same_intervals_other_seed_other_intervals():
    correct, labels = balanced_test(50, ACCURACIES)
    assert bootstrap_ci(correct, labels, COUNTS, seed=3) == bootstrap_ci(correct, labels, COUNTS, seed=3)
    assert bootstrap_ci(correct, labels, COUNTS, seed=3) != bootstrap_ci(correct, labels, COUNTS, seed=4)


def test_empty_group_is_none_and_tensors_are_accepted():
    counts = [500, 300, 50]  # no few-shot class
    correct, labels = balanced_test(40, [0.9, 0.8, 0.5])
    ci = bootstrap_ci(torch.from_numpy(correct), torch.from_numpy(labels), counts)
    assert ci["few"] is None
    assert all(ci[m] is not None for m in ("many", "medium", "all", "macro"))


def test_a_class_without_test_images_is_left_out_like_accuracy_summary():
    correct, labels = balanced_test(60, [0.9, 0.8, 0.5])
    counts = [500, 300, 50, 5]  # class 3 (few) has no test image: the few group is undefined
    ci = bootstrap_ci(correct, labels, counts)
    assert ci["few"] is None
    summary = point_estimates(correct, labels, counts)
    assert ci["macro"][0] < summary["macro"] < ci["macro"][1]


def test_perfect_and_hopeless_predictions_give_degenerate_intervals():
    labels = np.repeat(np.arange(4), 30)
    right = bootstrap_ci(np.ones(len(labels), bool), labels, [500, 50, 10, 5])
    wrong = bootstrap_ci(np.zeros(len(labels), bool), labels, [500, 50, 10, 5])
    assert all(right[m] == [100.0, 100.0] for m in METRICS)
    assert all(wrong[m] == [0.0, 0.0] for m in METRICS)


def naive_bootstrap_macro(correct: np.ndarray, labels: np.ndarray, resamples: int, stratified: bool) -> np.ndarray:
    """Macro accuracy over explicitly resampled image indices: the slow definition the fast code must match."""
    rng = np.random.default_rng(123)
    num_classes = labels.max() + 1
    by_class = [np.flatnonzero(labels == c) for c in range(num_classes)]
    values = []
    for _ in range(resamples):
        if stratified:
            index = np.concatenate([rng.choice(members, len(members)) for members in by_class])
        else:
            index = rng.integers(0, len(labels), len(labels))
        hits = np.bincount(labels[index], weights=correct[index], minlength=num_classes)
        sizes = np.bincount(labels[index], minlength=num_classes)
        present = sizes > 0
        values.append(100.0 * np.mean(hits[present] / sizes[present]))
    return np.array(values)


@pytest.mark.parametrize("stratified", [True, False])
def test_counts_drawn_directly_match_resampling_indices(stratified: bool):
    correct, labels = balanced_test(30, ACCURACIES, seed=1)
    naive = naive_bootstrap_macro(correct, labels, 2000, stratified)
    # The fast interval against the naive one's percentiles: both estimate the same distribution.
    fast = bootstrap_ci(correct, labels, COUNTS, num_resamples=2000, stratified=stratified, seed=5)["macro"]
    low, high = np.percentile(naive, [2.5, 97.5])
    width = high - low
    assert abs(fast[0] - low) < 0.1 * width and abs(fast[1] - high) < 0.1 * width


def test_plain_resampling_is_wider_than_stratified_for_macro():
    correct, labels = balanced_test(30, ACCURACIES, seed=2)
    stratified = bootstrap_ci(correct, labels, COUNTS, num_resamples=3000)["macro"]
    plain = bootstrap_ci(correct, labels, COUNTS, num_resamples=3000, stratified=False)["macro"]
    # Plain resampling adds the variance of the class sizes; never narrower beyond noise.
    assert plain[1] - plain[0] > 0.95 * (stratified[1] - stratified[0])


def test_ten_thousand_images_thousand_resamples_well_under_a_second():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 10_000)
    correct = rng.random(10_000) < 0.7
    counts = list(np.geomspace(500, 5, 100).astype(int))
    bootstrap_ci(correct, labels, counts)  # warm-up (imports, first allocation)
    start = time.perf_counter()
    bootstrap_ci(correct, labels, counts, num_resamples=1000)
    paired_bootstrap(correct, ~correct, labels, counts)
    assert time.perf_counter() - start < 0.5


def test_from_predictions_equals_from_correctness():
    correct, labels = balanced_test(20, ACCURACIES)
    predictions = np.where(correct, labels, (labels + 3) % 8)
    assert bootstrap_ci_from_predictions(predictions, labels, COUNTS) == bootstrap_ci(correct, labels, COUNTS)


def test_bad_inputs_are_refused():
    correct, labels = balanced_test(5, ACCURACIES)
    with pytest.raises(ValueError, match="one correctness value per label"):
        bootstrap_ci(correct[:-1], labels, COUNTS)
    with pytest.raises(ValueError, match="labels must lie"):
        bootstrap_ci(correct, labels, COUNTS[:4])
    with pytest.raises(ValueError, match="num_resamples"):
        bootstrap_ci(correct, labels, COUNTS, num_resamples=0)
    with pytest.raises(ValueError, match="metric"):
        paired_bootstrap(correct, correct, labels, COUNTS, metric="top5")


# --------------------------------------------------------------------------- paired


def test_paired_bootstrap_of_identical_vectors_is_zero_and_all_ties():
    correct, labels = balanced_test(50, ACCURACIES)
    result = paired_bootstrap(correct, correct.copy(), labels, COUNTS)
    assert result["difference"] == 0.0
    assert result["ci"] == [0.0, 0.0]
    assert result["ties"] == 1.0 and result["a_wins"] == 0.0 and result["b_wins"] == 0.0
    assert result["resamples"] == 1000


def test_paired_difference_is_the_difference_of_the_point_estimates():
    correct_a, labels = balanced_test(80, ACCURACIES, seed=0)
    correct_b, _ = balanced_test(80, [a - 0.1 for a in ACCURACIES], seed=1)
    for metric in METRICS:
        result = paired_bootstrap(correct_a, correct_b, labels, COUNTS, metric=metric)
        expected = point_estimates(correct_a, labels)[metric] - point_estimates(correct_b, labels)[metric]
        assert result["difference"] == pytest.approx(expected, abs=1e-9)
        assert result["ci"][0] <= result["difference"] <= result["ci"][1]
        assert result["a_wins"] + result["ties"] + result["b_wins"] == pytest.approx(1.0)


def test_a_much_better_method_wins_almost_every_resample():
    labels = np.repeat(np.arange(8), 100)
    a = np.ones(len(labels), bool)
    b = np.zeros(len(labels), bool)
    b[::3] = True  # B right on a third of the images, A on all of them
    result = paired_bootstrap(a, b, labels, COUNTS, metric="all")
    assert result["a_wins"] == 1.0 and result["ci"][0] > 60.0
    swapped = paired_bootstrap(b, a, labels, COUNTS, metric="all")
    assert swapped["b_wins"] == 1.0 and swapped["difference"] == pytest.approx(-result["difference"])


def test_pairing_makes_the_interval_narrower_than_independent_intervals():
    # B is A with 20 extra images right: paired, the difference is known to within a few of them.
    correct_a, labels = balanced_test(100, ACCURACIES, seed=0)
    correct_b = correct_a.copy()
    wrong = np.flatnonzero(~correct_a)[:20]
    correct_b[wrong] = True
    paired = paired_bootstrap(correct_a, correct_b, labels, COUNTS, metric="all")
    single = bootstrap_ci(correct_a, labels, COUNTS)["all"]
    assert paired["ci"][1] - paired["ci"][0] < 0.5 * (single[1] - single[0])
    assert paired["b_wins"] > 0.99 and paired["ci"][1] < 0


def test_paired_bootstrap_of_an_empty_group_is_refused():
    correct, labels = balanced_test(10, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="undefined"):
        paired_bootstrap(correct, correct, labels, [500, 300, 50], metric="few")


def test_groups_follow_shot_groups_thresholds():
    correct, labels = balanced_test(50, ACCURACIES)
    ci = bootstrap_ci(correct, labels, COUNTS, many=300, few=50)
    groups = shot_groups(COUNTS, 300, 50)
    assert groups["many"] == [0, 1] and ci["many"] is not None
    predictions = torch.from_numpy(np.where(correct, labels, (labels + 1) % 8))
    summary = accuracy_summary(predictions, torch.from_numpy(labels), COUNTS, many=300, few=50)
    assert ci["many"][0] < summary["many"] < ci["many"][1]


# --- memory: resamples in blocks ------------------------------------------------------------------------------


@pytest.mark.slow  # 5-6 s: make test runs it (keeps plain pytest under 3 minutes)
def test_resamples_are_drawn_in_blocks_one_after_the_other():
    """The default 1000 resamples are one block: bit for bit the numbers of drawing them all at once. More are
    drawn block by block from the same generator, so the intervals depend on the seed and C, not the machine."""
    from longtail.evaluation.bootstrap import _cell_counts, _interval, _metrics_from_counts, _resampled_cells

    correct, labels = balanced_test(30, ACCURACIES)
    cells = _cell_counts(labels, correct.astype(np.int64), len(COUNTS), 2)
    groups = shot_groups(COUNTS, 100, 20)

    def reference(blocks: list[int]) -> dict[str, list[float] | None]:
        rng = np.random.default_rng(3)
        drawn = np.concatenate([_resampled_cells(rng, cells, size, True) for size in blocks])  # (B, C, 2) at once
        samples = _metrics_from_counts(drawn[..., 1], drawn.sum(axis=-1), groups)
        return {metric: _interval(samples[metric], 0.95) for metric in METRICS}

    assert resample_blocks(1000, len(COUNTS), 2) == [1000]
    assert bootstrap_ci(correct, labels, COUNTS, num_resamples=1000, seed=3) == reference([1000])
    assert resample_blocks(2500, len(COUNTS), 2) == [1000, 1000, 500]
    assert bootstrap_ci(correct, labels, COUNTS, num_resamples=2500, seed=3) == reference([1000, 1000, 500])


def test_the_block_depends_on_the_classes_only():
    assert resample_blocks(10**6, 200, 2) == [1000] * 1000  # 1000 x 200 x 2 counts per block
    assert resample_blocks(2500, 2097, 2) == [1000, 1000, 500]  # the largest C whose default count is one block
    assert resample_blocks(2500, 2098, 2) == [999, 999, 502]
    assert resample_blocks(3, 10**7, 4) == [1, 1, 1]  # at least one resample per block, whatever C
    assert max(resample_blocks(10**6, 5000, 4)) * 5000 * 4 <= MAX_BLOCK_CELLS


def test_many_resamples_at_many_classes_stay_in_bounded_memory():
    """`eval.bootstrap_resamples=1000000` at 200 classes needed a 3 GiB array; now one block of counts at a time.
    20,000 resamples (64 MiB of counts drawn at once, more with the binomial's temporaries) stay under 24 MiB."""
    import tracemalloc

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(200), 10)
    correct = rng.random(len(labels)) < 0.6
    counts = list(range(400, 0, -2))
    tracemalloc.start()
    try:
        intervals = bootstrap_ci(correct, labels, counts, num_resamples=20_000, seed=0)
        paired = paired_bootstrap(correct, rng.random(len(labels)) < 0.6, labels, counts, num_resamples=5_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MiB"
    assert all(intervals[m] is not None for m in ("all", "macro")) and paired["resamples"] == 5_000
