"""Deployment priors (longtail.shift): shifted test subsets, calibration on validation, prior adaptation.

All on synthetic logits and labels: nothing is trained.
"""

from __future__ import annotations

import inspect
import json
import math
import statistics

import numpy as np
import pytest
import torch

from longtail.errors import DataError
from longtail.shift import (
    Calibration,
    PriorAdapter,
    Shift,
    adapt_prior,
    bbse_prior,
    em_prior,
    fit_bbse,
    fit_calibration,
    fit_prior_adapter,
    fold_known_prior,
    out_of_fold_top1,
    reweight,
    select_calibration,
    shifted_counts,
    shifted_subset,
    standard_shifts,
)
from longtail.shift.calibrate import nll_and_gradient
from longtail.shift.em import em_priors
from longtail.shift.select import _simplest_within_one_se, stratified_folds
from longtail.shift.subsets import IMBALANCES, training_ranks


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: on a busy machine a second intra-op thread only waits (3x slower measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TRAIN = [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]  # Fashion-MNIST-LT, imbalance 100
TEST = np.repeat(np.arange(10), 1000)


# --------------------------------------------------------------------------- shifted subsets


@pytest.mark.parametrize("factor", [2, 5, 10, 25, 50])
def test_forward_and_backward_follow_the_training_shape(factor: int) -> None:
    forward = shifted_subset(TEST, TRAIN, f"forward-{factor}", seed=0)
    backward = shifted_subset(TEST, TRAIN, f"backward-{factor}", seed=0)
    expected = [math.floor(1000 * factor ** (-j / 9) + 1e-9) for j in range(10)]
    assert forward.counts.tolist() == expected
    assert backward.counts.tolist() == expected[::-1]
    for subset in (forward, backward):
        assert subset.counts.max() == 1000  # the largest target class keeps every test image
        assert subset.counts.max() / subset.counts.min() == pytest.approx(factor, rel=0.05)
        drawn = np.bincount(TEST[subset.indices], minlength=10)
        assert drawn.tolist() == subset.counts.tolist()
        assert len(np.unique(subset.indices)) == len(subset.indices)
        assert subset.prior == pytest.approx(subset.counts / subset.counts.sum())
        assert subset.prior.sum() == pytest.approx(1.0)


def test_subsets_are_seeded_and_uniform_is_the_whole_set() -> None:
    a = shifted_subset(TEST, TRAIN, "forward-10", seed=3)
    assert np.array_equal(a.indices, shifted_subset(TEST, TRAIN, "forward-10", seed=3).indices)
    assert not np.array_equal(a.indices, shifted_subset(TEST, TRAIN, "forward-10", seed=4).indices)
    uniform = shifted_subset(TEST, TRAIN, "uniform", seed=5)
    assert np.array_equal(uniform.indices, np.arange(len(TEST)))
    assert uniform.prior == pytest.approx(np.full(10, 0.1))


def test_standard_shifts_run_forward_to_backward() -> None:
    names = [s.name for s in standard_shifts()]
    assert names == [f"forward-{f}" for f in (50, 25, 10, 5, 2)] + ["uniform"] + [
        f"backward-{f}" for f in (2, 5, 10, 25, 50)
    ]
    assert Shift.parse("backward-2.5") == Shift("backward", 2.5)
    for bad in ("sideways-2", "forward-1", "forward-x", "forward", "uniform-2"):
        with pytest.raises(Exception, match="expected"):
            Shift.parse(bad)


def test_tied_training_sizes_share_a_target_size() -> None:
    step = [500] * 5 + [50] * 5  # the step profile: two tied halves
    assert training_ranks(step).tolist() == [2.0] * 5 + [7.0] * 5
    labels = np.repeat(np.arange(10), 100)
    counts = shifted_subset(labels, step, "forward-10").counts
    assert counts.tolist() == [100] * 5 + [10] * 5
    assert shifted_subset(labels, step, "backward-10").counts.tolist() == [10] * 5 + [100] * 5
    with pytest.raises(DataError, match="same size"):
        shifted_subset(labels, [50] * 10, "forward-2")


def test_a_short_test_class_scales_every_class_down_keeping_the_shape() -> None:
    test_counts = np.array([1000] * 10)
    test_counts[0] = 500  # the largest target class has only half the images its share asks
    counts = shifted_counts(test_counts, TRAIN, Shift("forward", 10))
    assert counts[0] == 500
    assert counts.tolist() == [math.floor(500 * 10 ** (-j / 9) + 1e-9) for j in range(10)]
    assert (counts <= test_counts).all()


def test_a_class_with_no_test_image_is_left_out_not_scaling_every_class_to_nothing() -> None:
    # Its 0 images made k = 0: every shifted subset was empty and eval.shift refused the run
    # ("forward-10: the test set has no image to draw from") although the test set had 900 images.
    labels = np.repeat(np.arange(10), [100] * 9 + [0])
    forward = shifted_subset(labels, TRAIN, "forward-10")
    assert forward.counts.tolist() == [math.floor(100 * 10 ** (-j / 9) + 1e-9) for j in range(9)] + [0]
    assert forward.prior[9] == 0 and len(forward.indices) == forward.counts.sum()
    backward = shifted_subset(labels, TRAIN, "backward-10")
    assert backward.counts[8] == 100 and backward.counts[9] == 0
    with pytest.raises(DataError, match="no image to draw from"):
        shifted_subset(np.zeros(0, dtype=np.int64), TRAIN, "forward-10")


# --------------------------------------------------------------------------- Bayes adjustment


def test_known_prior_is_the_bayes_adjustment_by_hand() -> None:
    # p_s = (0.6, 0.3, 0.1) for π_s = (0.5, 0.25, 0.25); π_t = (0.2, 0.2, 0.6):
    # weights π_t/π_s = (0.4, 0.8, 2.4): 0.24, 0.24, 0.24 -> (1/3, 1/3, 1/3).
    log_p = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.1, 0.8]]).log()
    source, target = [0.5, 0.25, 0.25], [0.2, 0.2, 0.6]
    moved = reweight(log_p, source, target).exp()
    by_hand = torch.tensor([[0.24, 0.24, 0.24], [0.04, 0.08, 1.92]])
    assert torch.allclose(moved, (by_hand / by_hand.sum(1, keepdim=True)).double(), atol=1e-12)
    from longtail.shift import identity_calibration

    adapted = adapt_prior(log_p, "known", calibration=identity_calibration(3, source), target_prior=target)
    assert torch.allclose(adapted.log_posteriors.exp(), moved, atol=1e-12)
    assert adapted.prior.tolist() == pytest.approx(target)


def test_a_zero_target_class_is_never_predicted_and_bad_priors_are_refused() -> None:
    log_p = torch.log_softmax(torch.randn(20, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    moved = reweight(log_p, [1 / 3] * 3, [0.5, 0.5, 0.0])
    assert (moved.argmax(1) != 2).all() and torch.isinf(moved[:, 2]).all()
    for bad, match in (([0.5, 0.5], "3 class"), ([0.7, 0.7, -0.4], ">= 0"), ([0.2, 0.2, 0.2], "sum")):
        with pytest.raises(DataError, match=match):
            reweight(log_p, [1 / 3] * 3, bad)
    with pytest.raises(DataError, match="probability 0"):
        reweight(log_p, [0.5, 0.5, 0.0], [1 / 3] * 3)


# --------------------------------------------------------------------------- EM and BBSE


def gaussian_posteriors(prior: list[float], n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n images drawn with ``prior`` from 4 Gaussian classes; exact log posteriors for the uniform prior
    (calibrated by construction), the labels, and the class-conditional log-likelihoods."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    labels = torch.multinomial(torch.tensor(prior), n, replacement=True, generator=g)
    x = means[labels] + torch.randn(n, 2, generator=g)
    log_lik = -0.5 * ((x[:, None, :] - means[None]) ** 2).sum(-1)
    return torch.log_softmax(log_lik, dim=1).double(), labels, log_lik


def test_em_recovers_a_planted_prior() -> None:
    planted = [0.55, 0.25, 0.15, 0.05]
    log_q, labels, _ = gaussian_posteriors(planted, 20000, seed=1)
    result = em_prior(log_q, [0.25] * 4)
    assert result.converged and 1 < result.iterations < 1000
    empirical = torch.bincount(labels, minlength=4).double() / len(labels)
    assert torch.allclose(result.prior, empirical, atol=0.015)
    # The adapted predictions beat the uniform-prior ones on this shifted batch.
    adapted = adapt_prior(log_q, "em").predictions()
    assert (adapted == labels).double().mean() > (log_q.argmax(1) == labels).double().mean()


def test_em_pseudo_count_shrinks_to_the_source_and_batches_match_single_runs() -> None:
    log_q, _, _ = gaussian_posteriors([0.7, 0.1, 0.1, 0.1], 40, seed=2)
    source = torch.full((4,), 0.25, dtype=torch.float64)
    free = em_prior(log_q, source).prior
    shrunk = em_prior(log_q, source, pseudo_count=1000.0).prior
    assert (shrunk - source).abs().max() < (free - source).abs().max() / 5
    batches = log_q.reshape(4, 10, 4)
    priors, iterations, converged = em_priors(batches, source)
    for b in range(4):
        alone = em_prior(batches[b], source)
        assert torch.allclose(priors[b], alone.prior, atol=1e-12) and int(iterations[b]) == alone.iterations
    assert converged.all()
    assert em_prior(log_q[:0], source).prior.tolist() == source.tolist()


def test_bbse_recovers_a_planted_prior() -> None:
    _, val_labels, val_scores = gaussian_posteriors([0.25] * 4, 20000, seed=3)
    _, test_labels, test_scores = gaussian_posteriors([0.1, 0.2, 0.3, 0.4], 20000, seed=4)
    fit = fit_bbse(val_scores, val_labels)
    assert fit.confusion.sum() == pytest.approx(1.0)
    estimate = bbse_prior(fit, test_scores)
    assert estimate.tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4], abs=0.02)
    json.dumps(fit.to_dict())


# --------------------------------------------------------------------------- calibration


def overconfident(n: int, seed: int, temperature: float = 3.0, bias: torch.Tensor | None = None):
    """Labels drawn from softmax(z); the scores handed over are ``temperature · z - bias·temperature``."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    shift = torch.zeros(5) if bias is None else bias
    return temperature * (z - shift), labels


def test_temperature_is_recovered_and_never_changes_the_argmax() -> None:
    scores, labels = overconfident(5000, seed=5)
    cal = fit_calibration(scores, labels, "temperature")
    assert cal.temperature == pytest.approx(3.0, rel=0.08)
    assert cal.nll_after < cal.nll_before and all(b == 0 for b in cal.bias)
    other, _ = overconfident(700, seed=6)
    assert torch.equal(cal.logits(other).argmax(1), other.argmax(1))
    assert torch.equal(adapt_prior(other, "none", calibration=cal).predictions(), other.argmax(1))


def test_bcts_recovers_a_planted_bias_and_is_deterministic() -> None:
    planted = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0])
    scores, labels = overconfident(8000, seed=7, temperature=2.0, bias=planted)
    cal = fit_calibration(scores, labels, "bcts")
    assert cal.temperature == pytest.approx(2.0, rel=0.08)
    assert torch.tensor(cal.bias) == pytest.approx(planted.tolist(), abs=0.12)  # bias sums to 0, as planted
    assert sum(cal.bias) == pytest.approx(0.0, abs=1e-9)
    assert cal.prior == pytest.approx((torch.bincount(labels, minlength=5) / len(labels)).tolist())
    assert fit_calibration(scores, labels, "bcts") == cal


def test_calibration_round_trips_through_json_and_bad_data_is_refused() -> None:
    scores, labels = overconfident(500, seed=8)
    cal = fit_calibration(scores, labels, "bcts")
    again = Calibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert again == cal
    assert torch.equal(again.logits(scores), cal.logits(scores))
    with pytest.raises(DataError, match="calibration.json: expected kind"):
        Calibration.from_dict({"kind": "bcts"}, "calibration.json")
    with pytest.raises(DataError, match="temperature"):
        Calibration.from_dict({**cal.to_dict(), "temperature": -1.0})
    with pytest.raises(DataError, match="3 labels for 500"):
        fit_calibration(scores, labels[:3])
    with pytest.raises(DataError, match="finite"):
        fit_calibration(torch.full((4, 5), float("nan")), labels[:4])
    with pytest.raises(DataError, match=r"calibration rows: expected indices in \[0, 500\)"):
        fit_calibration(scores, labels, rows=torch.tensor([0, 500]))


def test_test_time_functions_take_no_labels() -> None:
    """What was learned from labels is fitted on validation; nothing applied to test data can take them."""
    assert list(inspect.signature(fit_calibration).parameters) == [
        "val_logits",
        "val_labels",
        "kind",
        "implicit_prior",
        "train_prior",
        "rows",
    ]
    assert list(inspect.signature(fit_bbse).parameters) == ["val_logits", "val_labels"]
    for applied in (
        adapt_prior,
        em_prior,
        em_priors,
        bbse_prior,
        reweight,
        Calibration.logits,
        Calibration.log_posteriors,
    ):
        assert not any("label" in name for name in inspect.signature(applied).parameters), applied.__name__


def test_adapt_prior_refuses_what_it_cannot_do() -> None:
    scores = torch.randn(6, 3)
    with pytest.raises(DataError, match="expected one of"):
        adapt_prior(scores, "oracle")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="target prior"):
        adapt_prior(scores, "known")
    with pytest.raises(DataError, match="BBSE fit"):
        adapt_prior(scores, "bbse")
    with pytest.raises(DataError, match=r"\(N, C\)"):
        adapt_prior(torch.randn(6), "em")


def test_a_known_prior_folds_into_an_affine_map_of_the_logits() -> None:
    scores, labels = overconfident(600, seed=9)
    cal = fit_calibration(scores, labels, "bcts")
    target = [0.4, 0.3, 0.15, 0.1, 0.05]
    scale, offset = fold_known_prior(cal, target)
    folded = scores.double() * scale + offset
    adapted = adapt_prior(scores, "known", calibration=cal, target_prior=target)
    assert torch.allclose(torch.log_softmax(folded, 1), adapted.log_posteriors, atol=1e-10)
    scale, offset = fold_known_prior(cal)
    assert torch.equal((scores.double() * scale + offset).argmax(1), adapt_prior(scores, calibration=cal).predictions())


# --------------------------------------------------------------------------- the power family, PCTS, selection

LONG_TAIL = torch.tensor([400.0, 150.0, 60.0, 20.0, 8.0])  # training sizes of a 5-class long tail


def test_em_power_family_recovers_a_planted_power_prior_and_stays_in_the_family() -> None:
    phi = LONG_TAIL.double().log()
    source = torch.full((4,), 0.25, dtype=torch.float64)
    planted = torch.softmax(source.log() + 0.8 * phi[:4], dim=0)  # a forward-long-tailed prior
    log_q, labels, _ = gaussian_posteriors(planted.tolist(), 20000, seed=10)
    result = em_prior(log_q, source, direction=phi[:4])
    empirical = torch.bincount(labels, minlength=4).double() / len(labels)
    assert result.converged and result.iterations < 200
    assert torch.allclose(result.prior, empirical, atol=0.015)
    # Off the family (a prior not a power of phi), the estimate is still a member of it: log(π/π_s) affine in phi.
    log_q, _, _ = gaussian_posteriors([0.1, 0.6, 0.1, 0.2], 4000, seed=11)
    estimate = em_prior(log_q, source, direction=phi[:4]).prior
    ratio = (estimate / source).log()
    slope = (ratio[0] - ratio[3]) / (phi[0] - phi[3])
    assert torch.allclose(ratio - ratio[3], slope * (phi[:4] - phi[3]), atol=1e-9)
    with pytest.raises(DataError, match="moves nothing"):
        em_prior(log_q, source, direction=[1.0, 1.0, 1.0, 1.0])


def plain_power_em(log_q: torch.Tensor, source: torch.Tensor, phi: torch.Tensor, pseudo_count: float) -> torch.Tensor:
    """The reference: plain EM along ``π_s · exp(θ φ)`` from ``θ = 0`` (E-step, then the family member matching the
    M-step's mean of φ, by bisection), run to its fixed point; the (C,) prior there."""

    def family(t: float) -> torch.Tensor:
        return torch.softmax(source.log() + t * phi, 0)

    count, theta = len(log_q), 0.0
    for _ in range(5000):
        posteriors = torch.softmax(log_q + theta * phi, 1)
        target = (posteriors.sum(0) @ phi + pseudo_count * float(source @ phi)) / (count + pseudo_count)
        low, high = -20.0, 20.0
        for _ in range(60):
            middle = (low + high) / 2
            low, high = (middle, high) if float(family(middle) @ phi) < target else (low, middle)
        step, theta = abs(middle - theta), middle
        if step < 1e-13:
            break
    return family(theta)


@pytest.mark.parametrize(
    ("num_classes", "theta", "pseudo_count"),
    [(10, 0.8, 0.0), (10, -1.0, 50.0), pytest.param(1000, -1.0, 0.0, marks=pytest.mark.slow)],  # slow: 8 s of EM
)
def test_em_power_family_reaches_plain_em_s_fixed_point_in_a_few_passes(num_classes, theta, pseudo_count) -> None:
    # At 1,000 classes with flat posteriors plain EM takes hundreds of steps.
    g = torch.Generator().manual_seed(num_classes)
    sizes = torch.logspace(3, 1, num_classes, dtype=torch.float64)
    phi = sizes.log() - sizes.log().mean()
    labels = torch.multinomial(torch.softmax(theta * phi, 0), 3000, replacement=True, generator=g)
    scores = torch.randn(3000, num_classes, generator=g, dtype=torch.float64) * 1.5
    scores[torch.arange(3000), labels] += 5.0
    log_q = scores.log_softmax(1)
    source = torch.full((num_classes,), 1.0 / num_classes, dtype=torch.float64)
    result = em_prior(log_q, source, direction=phi, pseudo_count=pseudo_count)
    assert result.converged and result.iterations <= 10
    assert torch.allclose(result.prior, plain_power_em(log_q, source, phi, pseudo_count), rtol=1e-7, atol=0)


# 16 calibrated log posteriors of the demo's WB on backward-50 test images (seed 0, rounded): far below EM's first
# root the likelihood rises again toward a prior with all its mass on the last class, where a bisection toward the
# family's limit ended (0.998 on the last class; EM: 0.43).
TAIL_BATCH = [
    [-8.48, -9.46, -8.95, -9.52, -7.64, -4.67, -8.32, -1.58, -3.03, -0.31],
    [-12.02, -12.92, -12.46, -14.86, -13.5, -9.27, -14.36, -0.34, -2.15, -1.77],
    [-7.29, -9.21, -7.04, -9.2, -1.68, -11.09, -0.21, -13.23, -9.65, -5.87],
    [-6.91, -8.13, -5.48, -8.37, -2.55, -10.72, -0.09, -12.63, -9.53, -6.05],
    [-7.39, -8.76, -7.47, -8.5, -5.94, -6.12, -6.84, -2.65, -1.57, -0.34],
    [-7.65, -8.31, -7.37, -7.76, -7.36, -3.96, -7.37, -1.69, -3.04, -0.29],
    [-16.28, -16.43, -16.91, -17.41, -17.34, -7.9, -18.0, -0.03, -9.72, -3.57],
    [-12.66, -12.77, -13.34, -11.97, -12.21, -0.11, -12.46, -3.34, -8.41, -2.67],
    [-8.1, -9.12, -8.19, -9.16, -7.48, -5.25, -8.2, -1.74, -2.15, -0.35],
    [-7.33, -6.34, -6.85, -5.67, -6.0, -2.32, -5.71, -2.81, -4.08, -0.21],
    [-8.37, -9.03, -9.0, -9.19, -7.12, -3.69, -7.86, -2.12, -3.06, -0.21],
    [-16.12, -16.48, -16.6, -17.69, -17.53, -9.47, -18.35, -0.03, -8.25, -3.51],
    [-7.42, -11.11, -7.36, -8.23, -0.67, -11.48, -0.72, -13.66, -9.85, -5.73],
    [-6.85, -7.62, -6.9, -6.19, -6.98, -6.73, -7.48, -2.9, -1.18, -0.46],
    [-3.59, -4.93, -5.14, -4.87, -6.17, -3.55, -3.81, -2.62, -2.09, -0.35],
    [-15.04, -15.85, -16.01, -16.79, -16.54, -8.35, -17.01, -0.04, -8.37, -3.21],
]
TAIL_DIRECTION = [2.3117, 1.7992, 1.2873, 0.7746, 0.2638, -0.2522, -0.7674, -1.3002, -1.8234, -2.2934]


def test_em_power_family_stops_at_em_s_first_root_not_a_degenerate_prior_far_beyond() -> None:
    log_q = torch.tensor(TAIL_BATCH, dtype=torch.float64)
    phi, source = torch.tensor(TAIL_DIRECTION, dtype=torch.float64), torch.full((10,), 0.1, dtype=torch.float64)
    result = em_prior(log_q, source, direction=phi)
    assert result.converged and float(result.prior.max()) < 0.5
    assert torch.allclose(result.prior, plain_power_em(log_q, source, phi, 0.0), rtol=1e-7, atol=0)


def shifted_scores(n: int, seed: int, exponent: float, bias: torch.Tensor | None = None):
    """Labels from softmax(z) (calibrated, uniform prior); the scores handed over are
    ``2 (z + exponent · log π_train - bias)``: a method whose scores carry ``exponent`` times the training log prior
    (Joint: about 1), plus an optional class bias."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(z, 1), 1, generator=g).squeeze(1)
    log_prior = (LONG_TAIL / LONG_TAIL.sum()).log()
    shift = -exponent * log_prior + (torch.zeros(5) if bias is None else bias)
    return 2.0 * (z - shift), labels


def test_pcts_recovers_a_planted_prior_exponent() -> None:
    scores, labels = shifted_scores(6000, seed=12, exponent=-0.7)
    cal = fit_calibration(scores, labels, "pcts", train_prior=LONG_TAIL)
    assert cal.temperature == pytest.approx(2.0, rel=0.08)
    assert cal.exponent == pytest.approx(0.7, abs=0.1)  # β undoes what the scores carry: z / T + β log π
    with pytest.raises(DataError, match="train_prior"):
        fit_calibration(scores, labels, "pcts")


def test_cross_validation_prefers_few_parameters_unless_the_bias_is_class_specific() -> None:
    scores, labels = shifted_scores(200, seed=13, exponent=0.0)  # a small validation split, no bias at all
    plain = select_calibration(scores, labels, LONG_TAIL.tolist())
    assert plain.calibration.kind != "bcts" and plain.cv_nll["bcts"] > plain.cv_nll["temperature"]
    assert plain.folds == 5 and set(plain.shift_gain) == {
        f"{d}-{f}" for d in ("forward", "backward") for f in IMBALANCES
    }
    bias = torch.tensor([1.5, -1.5, 1.5, -1.5, 0.0])  # not a power of the training prior
    scores, labels = shifted_scores(3000, seed=14, exponent=0.0, bias=bias)
    assert select_calibration(scores, labels, LONG_TAIL.tolist()).calibration.kind == "bcts"


def test_a_richer_calibration_must_beat_the_simpler_by_more_than_one_standard_error() -> None:
    generator = torch.Generator().manual_seed(21)
    simple = torch.rand(200, generator=generator, dtype=torch.float64)  # out-of-fold NLL per image
    noise = 0.05 * torch.randn(200, generator=generator, dtype=torch.float64)
    noise -= noise.mean()  # the paired differences' spread, around exactly the margin below
    by_a_hair = {"temperature": simple, "bcts": simple - 0.001 + noise}
    assert _simplest_within_one_se(by_a_hair, ["temperature", "bcts"]) == "temperature"
    clearly = {"temperature": simple, "bcts": simple - 0.2 + noise}
    assert _simplest_within_one_se(clearly, ["temperature", "bcts"]) == "bcts"


def test_out_of_fold_top1_comes_from_the_fit_without_the_image() -> None:
    scores, labels = shifted_scores(200, seed=18, exponent=-0.5)
    selection = select_calibration(scores, labels, LONG_TAIL.tolist())
    confidence, predicted = out_of_fold_top1(scores, labels, LONG_TAIL.tolist(), "bcts")
    held = stratified_folds(labels, 5) == 2
    by_hand = fit_calibration(scores[~held], labels[~held], "bcts", train_prior=LONG_TAIL.tolist())
    top, top_class = by_hand.log_posteriors(scores[held]).max(dim=1)
    assert torch.allclose(confidence[held], top.exp()) and torch.equal(predicted[held], top_class)
    in_sample = selection.calibration.log_posteriors(scores[held]).max(dim=1).values.exp()
    assert not torch.allclose(confidence[held], in_sample)  # not in-sample
    own, own_class = out_of_fold_top1(scores, labels, LONG_TAIL.tolist(), "none")  # the raw softmax
    raw = scores.double()
    assert torch.allclose(own, torch.softmax(raw, 1).max(1).values) and torch.equal(own_class, raw.argmax(1))
    with pytest.raises(DataError, match="cross-validation needs 2 per class"):
        out_of_fold_top1(scores[:6], torch.tensor([0, 1, 2, 3, 4, 4]), LONG_TAIL.tolist(), "temperature")


def test_the_adapter_keeps_its_fold_fits_for_the_out_of_fold_diagnostics() -> None:
    scores, labels = shifted_scores(200, seed=18, exponent=-0.5)
    adapter = fit_prior_adapter(scores, labels, LONG_TAIL.tolist())
    kind = adapter.calibration.kind
    assert len(adapter.fold_calibrations) == 5 and {fit.kind for fit in adapter.fold_calibrations} == {kind}
    refitted = out_of_fold_top1(scores, labels, LONG_TAIL.tolist(), kind)
    reused = out_of_fold_top1(scores, labels, LONG_TAIL.tolist(), kind, fold_calibrations=adapter.fold_calibrations)
    assert torch.equal(refitted[0], reused[0]) and torch.equal(refitted[1], reused[1])
    assert PriorAdapter.from_dict(adapter.to_dict()).fold_calibrations == ()  # not recorded
    other = "temperature" if kind != "temperature" else "pcts"
    with pytest.raises(DataError, match="fold calibrations: expected 5 of kind"):
        out_of_fold_top1(scores, labels, LONG_TAIL.tolist(), other, fold_calibrations=adapter.fold_calibrations)


def test_the_cross_validated_nll_is_that_of_each_fold_fit_on_its_held_out_images() -> None:
    scores, labels = shifted_scores(200, seed=18, exponent=-0.5)
    selection = select_calibration(scores, labels, LONG_TAIL.tolist())
    fold = stratified_folds(labels, 5)
    for kind in ("temperature", "pcts", "bcts"):
        by_hand = torch.empty(len(labels), dtype=torch.float64)
        for k in range(5):
            fit = fit_calibration(scores[fold != k], labels[fold != k], kind, train_prior=LONG_TAIL.tolist())
            by_hand[fold == k] = -fit.log_posteriors(scores[fold == k]).gather(1, labels[fold == k, None]).squeeze(1)
        assert selection.cv_nll[kind] == pytest.approx(float(by_hand.mean()), rel=1e-9)


def test_the_hand_written_gradient_of_the_calibration_nll_is_autograds() -> None:
    """The calibration's NLL and gradient are computed by hand in row chunks (no autograd graph over the
    table); they must be autograd's, on a table of several chunks and on a subset of its rows."""
    generator = torch.Generator().manual_seed(3)
    scores = 3 * torch.randn(2500, 700, generator=generator, dtype=torch.float64)  # 3 chunks of rows
    labels = torch.randint(0, 700, (2500,), generator=generator)
    rows = torch.randperm(2500, generator=generator)[:1900]
    bias = torch.randn(700, generator=generator, dtype=torch.float64, requires_grad=True)
    log_t = torch.tensor(0.4, dtype=torch.float64, requires_grad=True)
    for subset in (None, rows):
        index = torch.arange(2500) if subset is None else subset
        loss = torch.nn.functional.cross_entropy(scores[index] / log_t.exp() + bias, labels[index])
        grad_log_t, grad_bias = torch.autograd.grad(loss, [log_t, bias])
        value, by_hand_log_t, by_hand_bias = nll_and_gradient(scores, labels, subset, math.exp(0.4), bias.detach())
        assert value == pytest.approx(float(loss.detach()), rel=1e-12)
        assert by_hand_log_t == pytest.approx(float(grad_log_t), rel=1e-9)
        assert torch.allclose(by_hand_bias, grad_bias, rtol=1e-9, atol=1e-15)


def test_adaptation_is_on_where_validation_shows_it_helps_and_off_where_nothing_can() -> None:
    scores, labels = shifted_scores(400, seed=15, exponent=0.0)  # calibrated, overlapping classes
    adapter = fit_prior_adapter(scores, labels, LONG_TAIL.tolist())
    assert adapter.enabled and statistics.fmean(adapter.shift_gain.values()) > 0
    # Every validation image predicted right: no prior shift can do better, so adaptation stays off ...
    labels = torch.arange(5).repeat(20)
    perfect = torch.nn.functional.one_hot(labels, 5).double() * 3.0
    off = fit_prior_adapter(perfect, labels, LONG_TAIL.tolist())
    assert not off.enabled
    # ... and the method keeps its own predictions, while the estimated prior is still reported.
    batch = torch.randn(50, 5, generator=torch.Generator().manual_seed(16))
    out = off.adapt(batch, "em")
    assert not out.applied and torch.equal(out.predictions(), batch.argmax(1))
    assert out.prior.sum() == pytest.approx(1.0)
    assert off.adapt(batch, "em", force=True).applied


def test_bcts_and_bbse_are_left_out_beyond_their_sizes_and_bbse_then_says_why(monkeypatch) -> None:
    """BCTS (C + 1 parameters) is a candidate up to MAX_BCTS_VALUES validation logits, BBSE (a C x C least squares
    per estimate) is fitted up to MAX_BBSE_CLASSES classes; beyond, the adapter still fits (temperature, PCTS,
    EM) and ``bbse`` is refused in one line."""
    import longtail.shift.adapter as adapter_module

    scores, labels = shifted_scores(300, seed=17, exponent=-0.5)
    within = fit_prior_adapter(scores, labels, LONG_TAIL.tolist())
    assert set(within.cv_nll) == {"temperature", "pcts", "bcts"} and within.bbse is not None
    monkeypatch.setattr(adapter_module, "MAX_BCTS_VALUES", scores.numel() - 1)
    monkeypatch.setattr(adapter_module, "MAX_BBSE_CLASSES", 4)
    beyond = fit_prior_adapter(scores, labels, LONG_TAIL.tolist())
    assert set(beyond.cv_nll) == {"temperature", "pcts"} and beyond.bbse is None
    assert beyond.cv_nll == {kind: within.cv_nll[kind] for kind in ("temperature", "pcts")}
    assert within.calibration.kind == "pcts"  # so leaving BCTS out changes nothing here
    assert torch.equal(beyond.adapt(scores[:64], "em").prior, within.adapt(scores[:64], "em").prior)
    with pytest.raises(DataError, match=r"^prior 'bbse': this adapter has no BBSE fit \(fitted up to 4 classes"):
        beyond.adapt(scores[:64], "bbse")
    explicit = fit_prior_adapter(scores, labels, LONG_TAIL.tolist(), candidates=["bcts"])
    assert set(explicit.cv_nll) == {"bcts"}  # a caller's own candidates are kept at any size


def test_a_prior_adapter_round_trips_through_json() -> None:
    scores, labels = shifted_scores(300, seed=17, exponent=-0.5)
    adapter = fit_prior_adapter(scores, labels, LONG_TAIL.tolist())
    again = PriorAdapter.from_dict(json.loads(json.dumps(adapter.to_dict())))
    batch = scores[:64]
    for method in ("none", "em", "bbse"):
        assert torch.equal(again.adapt(batch, method).log_posteriors, adapter.adapt(batch, method).log_posteriors)
    assert torch.equal(again.adapt(batch, "em", family="full").prior, adapter.adapt(batch, "em", family="full").prior)
    with pytest.raises(DataError, match="adapter.json: expected calibration"):
        PriorAdapter.from_dict({"direction": []}, "adapter.json")
    with pytest.raises(DataError, match="family"):
        adapter.adapt(batch, "em", family="mixture")  # type: ignore[arg-type]
