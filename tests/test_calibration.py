"""Expected calibration error and reliability-diagram bins."""

import math

import numpy as np
import pytest
import torch

from longtail.evaluation.calibration import expected_calibration_error, reliability, softmax_confidence


def test_ece_by_hand():
    # Ten bins. 0.9 twice, one right: |0.5 - 0.9| * 2/5; 0.6 twice, both right: |1 - 0.6| * 2/5;
    # 0.3 once, wrong: |0 - 0.3| * 1/5. Total 0.16 + 0.16 + 0.06.
    confidence = [0.9, 0.9, 0.6, 0.6, 0.3]
    correct = [True, False, True, True, False]
    assert expected_calibration_error(confidence, correct, num_bins=10) == pytest.approx(0.38)


def test_a_calibrated_classifier_has_zero_ece_and_one_bin_is_the_global_gap():
    assert expected_calibration_error([0.75] * 4, [1, 1, 1, 0], num_bins=15) == pytest.approx(0.0)
    # One bin: |mean confidence - accuracy| = |0.6 - 0.25|.
    assert expected_calibration_error([0.9, 0.5, 0.5, 0.5], [1, 0, 0, 0], num_bins=1) == pytest.approx(0.35)


def test_bins_are_closed_on_the_right_and_zero_goes_to_the_first():
    diagram = reliability([0.0, 0.5, 0.5000001, 1.0], [0, 1, 1, 1], num_bins=2)
    assert diagram.edges.tolist() == [0.0, 0.5, 1.0]
    assert diagram.counts.tolist() == [2, 2]
    assert diagram.confidence.tolist() == pytest.approx([0.25, 0.75000005])
    assert diagram.accuracy.tolist() == [0.5, 1.0]


def test_given_edges_bin_in_them_and_below_the_first_counts_in_the_first():
    edges = np.geomspace(1e-3, 1.0, 4)  # 0.001, 0.01, 0.1, 1
    diagram = reliability([0.0005, 0.005, 0.05, 0.5, 1.0], [0, 0, 1, 1, 1], edges=edges)
    assert diagram.edges.tolist() == pytest.approx(edges.tolist())
    assert diagram.counts.tolist() == [2, 1, 2]
    assert diagram.accuracy.tolist() == [0.0, 1.0, 1.0]
    # ECE over these bins: |0.00275 - 0| * 2/5 + |0.05 - 1| * 1/5 + |0.75 - 1| * 2/5.
    assert diagram.ece == pytest.approx(0.0011 + 0.19 + 0.1)
    for bad in ([0.5], [0.2, 0.1], [0.0, 1.5], [[0.0, 1.0]]):
        with pytest.raises(ValueError, match="edges"):
            reliability([0.5], [1], edges=np.array(bad))


def test_empty_bins_are_nan_and_counts_add_up():
    diagram = reliability([0.95, 0.91, 0.12], [1, 0, 0], num_bins=10)
    assert diagram.counts.sum() == 3
    assert np.isnan(diagram.accuracy[5]) and np.isnan(diagram.confidence[5])
    assert diagram.counts[1] == 1 and diagram.counts[9] == 2


def test_matches_a_direct_loop_over_bins():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.05, 1.0, size=2000)
    correct = rng.uniform(size=2000) < confidence**1.5  # over-confident
    bins = 15
    expected = 0.0
    for m in range(bins):
        lo, hi = m / bins, (m + 1) / bins
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            expected += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    assert expected > 0.02
    assert expected_calibration_error(confidence, correct, bins) == pytest.approx(expected, rel=1e-9)
    as_tensors = expected_calibration_error(torch.from_numpy(confidence), torch.from_numpy(correct), bins)
    assert as_tensors == pytest.approx(expected, rel=1e-9)


def test_softmax_confidence_and_ties_go_to_the_first_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [-1.0, 3.0]])
    confidence, correct = softmax_confidence(logits, torch.tensor([0, 1, 1]))
    assert confidence.tolist() == pytest.approx([math.exp(2) / (1 + math.exp(2)), 0.5, math.exp(4) / (1 + math.exp(4))])
    assert correct.tolist() == [True, False, True]


@pytest.mark.parametrize(
    ("confidence", "correct", "bins", "message"),
    [
        ([0.5, 1.2], [1, 0], 10, "in \\[0, 1\\]"),
        ([0.5], [1, 0], 10, "1 values but correct has 2"),
        ([0.5], [1], 0, "num_bins"),
    ],
)
def test_bad_inputs_are_refused(confidence, correct, bins, message):
    with pytest.raises(ValueError, match=message):
        reliability(confidence, correct, bins)


def test_no_predictions_give_nan():
    assert math.isnan(expected_calibration_error([], []))
