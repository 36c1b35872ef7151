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
    out_of_fold_posteriors,
    reweight,
    select_calibration,
    shifted_counts,
    shifted_subset,
    standard_shifts,
)
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


def test_test_time_functions_take_no_labels() -> None:
    """What was learned from labels is fitted on validation; nothing applied to test data can take them."""
    assert list(inspect.signature(fit_calibration).parameters) == [
        "val_logits",
        "val_labels",
        "kind",
        "implicit_prior",
        "train_prior",
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
    labels = torch.zeros(200, dtype=torch.long)
    simple = -torch.rand(200, generator=generator, dtype=torch.float64)  # log q of the true class, per image
    noise = 0.05 * torch.randn(200, generator=generator, dtype=torch.float64)

    def as_log_q(true_class: torch.Tensor) -> torch.Tensor:  # (N, 2) rows whose column 0 is the true class
        return torch.stack([true_class, torch.log1p(-true_class.exp().clamp(max=1 - 1e-9))], dim=1)

    by_a_hair = {"temperature": as_log_q(simple), "bcts": as_log_q((simple + 0.001 + noise).clamp(max=-1e-6))}
    assert _simplest_within_one_se(by_a_hair, labels, ["temperature", "bcts"]) == "temperature"
    clearly = {"temperature": as_log_q(simple), "bcts": as_log_q((simple + 0.2 + noise).clamp(max=-1e-6))}
    assert _simplest_within_one_se(clearly, labels, ["temperature", "bcts"]) == "bcts"


def test_out_of_fold_posteriors_come_from_the_fit_without_the_image_and_match_the_cv_nll() -> None:
    scores, labels = shifted_scores(200, seed=18, exponent=-0.5)
    selection = select_calibration(scores, labels, LONG_TAIL.tolist())
    for kind in ("temperature", "bcts"):
        log_q = out_of_fold_posteriors(scores, labels, LONG_TAIL.tolist(), kind)
        assert float(torch.nn.functional.nll_loss(log_q, labels)) == pytest.approx(selection.cv_nll[kind])
    held = stratified_folds(labels, 5) == 2
    by_hand = fit_calibration(scores[~held], labels[~held], "bcts", train_prior=LONG_TAIL.tolist())
    assert torch.allclose(log_q[held], by_hand.log_posteriors(scores[held]))
    assert not torch.allclose(log_q[held], selection.calibration.log_posteriors(scores[held]))  # not in-sample
    with pytest.raises(DataError, match="cross-validation needs 2 per class"):
        out_of_fold_posteriors(scores[:6], torch.tensor([0, 1, 2, 3, 4, 4]), LONG_TAIL.tolist(), "temperature")


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
