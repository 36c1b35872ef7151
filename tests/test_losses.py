import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from longtail.errors import ConfigError
from longtail.losses import (
    LOSSES,
    BalancedSoftmaxLoss,
    ClassBalancedLoss,
    CrossEntropyLoss,
    FocalLoss,
    LabelAwareSmoothingLoss,
    LDAMLoss,
    LogitAdjustedLoss,
    Loss,
    class_balanced_weights,
    create_loss,
    ldam_margins,
    log_prior,
)

COUNTS = [100, 10, 1]  # class 0 frequent, class 2 rare
LOGITS = np.array([[1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [-0.5, 0.2, 0.1]])
TARGETS = np.array([0, 2, 1])
COSINES = np.array([[0.9, 0.1, -0.3], [0.2, -0.4, 0.6], [-0.1, 0.5, 0.3]])  # LDAM input, in [-1, 1]
NAMES = ["ce", "focal", "class_balanced", "ldam_drw", "balanced_softmax", "logit_adjusted"]


def t(x: np.ndarray) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64 if x.dtype.kind == "f" else torch.int64)


def np_log_softmax(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))


def np_ce_terms(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np_log_softmax(z)[np.arange(len(y)), y]


def np_cb_weights(counts, beta: float) -> np.ndarray:
    effective = np.array([(1 - beta**n) / (1 - beta) for n in counts])
    w = 1 / effective
    return w * len(counts) / w.sum()


def value(loss: torch.nn.Module, logits: np.ndarray = LOGITS, targets: np.ndarray = TARGETS) -> float:
    out = loss(t(logits), t(targets))
    assert out.shape == ()
    return float(out)


def logit_grad(loss: torch.nn.Module, logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    z = t(logits).requires_grad_(True)
    loss(z, t(targets)).backward()
    return z.grad.numpy()


# --------------------------------------------------------------------------- hand-computed values


def test_cross_entropy_matches_hand_value():
    expected = np.mean(
        [math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(LOGITS, TARGETS, strict=True)]
    )
    assert value(CrossEntropyLoss()) == pytest.approx(expected, rel=1e-12)


def test_focal_matches_hand_value():
    p = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
    pt = p[np.arange(3), TARGETS]
    expected = np.mean(-((1 - pt) ** 2) * np.log(pt))
    assert value(FocalLoss(gamma=2.0)) == pytest.approx(expected, rel=1e-12)
    assert value(FocalLoss(gamma=2.0)) < value(CrossEntropyLoss())  # down-weights every sample


def test_weighted_focal_uses_cross_entropy_mean_convention():
    w = np.array([0.5, 2.0, 3.0])
    p = np.exp(np_log_softmax(LOGITS))[np.arange(3), TARGETS]
    terms = -((1 - p) ** 0.5) * np.log(p)
    expected = (w[TARGETS] * terms).sum() / w[TARGETS].sum()
    assert value(FocalLoss(gamma=0.5, weight=torch.tensor(w))) == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_zero_equals_cross_entropy():
    assert value(FocalLoss(gamma=0.0)) == pytest.approx(value(CrossEntropyLoss()), rel=1e-12)
    w = torch.tensor([0.5, 2.0, 3.0])
    weighted = F.cross_entropy(t(LOGITS), t(TARGETS), weight=w.double())
    assert value(FocalLoss(gamma=0.0, weight=w)) == pytest.approx(float(weighted), rel=1e-6)


def test_focal_is_stable_for_extreme_logits_and_confident_samples():
    logits = np.array([[1000.0, -1000.0, 0.0], [1000.0, 0.0, 0.0]])
    targets = np.array([1, 0])  # a hopeless sample, and one with p_t == 1 exactly in float64
    loss = value(FocalLoss(gamma=2.0), logits, targets)
    assert loss == pytest.approx(2000.0 / 2, rel=1e-9)  # (1 - 0)^2 * 2000 and 0, averaged
    grad = logit_grad(FocalLoss(gamma=0.5), logits, targets)
    assert np.isfinite(grad).all()


def test_class_balanced_weights_on_known_counts():
    beta = 0.9
    expected = []
    for n in COUNTS:
        expected.append((1 - beta) / (1 - beta**n))
    expected = np.array(expected) * 3 / sum(expected)
    weights = class_balanced_weights(COUNTS, beta)
    assert weights.shape == (3,) and weights.dtype == torch.float32
    assert weights.numpy() == pytest.approx(expected, rel=1e-6)
    assert float(weights.sum()) == pytest.approx(3.0)
    assert weights[0] < weights[1] < weights[2]


def test_class_balanced_weights_limits():
    assert class_balanced_weights(COUNTS, 0.0).numpy() == pytest.approx([1.0, 1.0, 1.0])
    inverse = np.array([1 / 100, 1 / 10, 1.0])
    inverse *= 3 / inverse.sum()
    assert class_balanced_weights(COUNTS, 1 - 1e-9).numpy() == pytest.approx(inverse, rel=1e-5)
    # in between, w_2 / w_0 = E_100 / E_1 lies between 1 (beta=0) and 100 (inverse frequency)
    ratio = class_balanced_weights(COUNTS, 0.999).numpy()
    ratio = ratio[2] / ratio[0]
    assert ratio == pytest.approx((1 - 0.999**100) / (1 - 0.999), rel=1e-5)
    assert 1 < ratio < 100


def test_class_balanced_weights_zero_count_class_gets_zero():
    weights = class_balanced_weights([50, 0, 5], 0.99)
    assert torch.isfinite(weights).all()
    assert weights[1] == 0
    assert float(weights.sum()) == pytest.approx(3.0)
    assert weights[0] < weights[2]


def test_class_balanced_loss_matches_hand_value():
    w = np_cb_weights(COUNTS, 0.999)
    terms = np_ce_terms(LOGITS, TARGETS)
    expected = (w[TARGETS] * terms).sum() / w[TARGETS].sum()
    assert value(ClassBalancedLoss(COUNTS, beta=0.999)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_class_balanced_focal_is_cao_et_al_weighted_focal(gamma: float):
    # LDAM-DRW losses.py: ce = F.cross_entropy(z, y, weight=w, reduction="none"); p = exp(-ce);
    # loss = ((1 - p) ** gamma * ce).mean(): the weight inside the focal term, a plain mean over N.
    w = np_cb_weights(COUNTS, 0.999)
    ce = w[TARGETS] * np_ce_terms(LOGITS, TARGETS)
    expected = np.mean((1 - np.exp(-ce)) ** gamma * ce)
    loss = ClassBalancedLoss(COUNTS, beta=0.999, gamma=gamma)
    assert value(loss) == pytest.approx(expected, rel=1e-6)
    assert torch.autograd.gradcheck(lambda z: loss(z, t(TARGETS)), (t(LOGITS).requires_grad_(True),))
    # Not the focal term weighted afterwards (the two differ on this batch).
    pt = np.exp(-np_ce_terms(LOGITS, TARGETS))
    outside = (w[TARGETS] * (1 - pt) ** gamma * np_ce_terms(LOGITS, TARGETS)).sum() / w[TARGETS].sum()
    assert abs(expected - outside) > 1e-3


def test_class_balanced_focal_zero_weight_targets_give_zero_and_finite_gradients():
    loss = ClassBalancedLoss([50, 0, 5], beta=0.99, gamma=0.5)  # γ < 1: (1 - p)^γ is steep at p = 1
    z = t(LOGITS).requires_grad_(True)
    out = loss(z, torch.tensor([1, 1, 1]))
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))
    half = loss(t(LOGITS).half(), t(TARGETS))  # upcast inside: the float32 value, up to fp16 rounding of z
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(loss(t(LOGITS).float(), t(TARGETS)).item(), rel=1e-2)


def test_class_balanced_loss_with_only_zero_weight_targets_is_zero_not_nan():
    loss = ClassBalancedLoss([50, 0, 5], beta=0.99)
    z = t(LOGITS).requires_grad_(True)
    out = loss(z, torch.tensor([1, 1, 1]))
    out.backward()
    assert out.item() == 0.0
    assert torch.equal(z.grad, torch.zeros_like(z))


# --------------------------------------------------------------------------- LDAM (+DRW)


def test_ldam_margins_favour_rare_classes_and_top_out_at_max_margin():
    margins = ldam_margins(COUNTS, max_margin=0.5).numpy()
    expected = 0.5 * np.array([100**-0.25, 10**-0.25, 1.0])  # n^-1/4, the rarest (n=1) gets 0.5
    assert margins == pytest.approx(expected, rel=1e-6)
    assert margins[0] < margins[1] < margins[2]
    assert margins.max() == pytest.approx(0.5)
    assert LDAMLoss(COUNTS, max_margin=0.3).margins.max() == pytest.approx(0.3)


def test_ldam_matches_hand_value():
    scale = 30.0
    m = 0.5 * np.array([n**-0.25 for n in COUNTS]) / max(n**-0.25 for n in COUNTS)
    z = COSINES.copy()
    z[np.arange(3), TARGETS] -= m[TARGETS]
    expected = np_ce_terms(scale * z, TARGETS).mean()
    assert value(LDAMLoss(COUNTS, max_margin=0.5, scale=scale), COSINES) == pytest.approx(expected, rel=1e-6)


def test_ldam_margin_enlarges_the_gradient_most_for_rare_classes():
    loss = LDAMLoss(COUNTS, max_margin=0.5, scale=30.0)
    cosines = np.zeros((3, 3))
    targets = np.array([0, 1, 2])
    ldam = logit_grad(loss, cosines, targets)[np.arange(3), targets]
    plain = logit_grad(lambda z, y: F.cross_entropy(30.0 * z, y), cosines, targets)[np.arange(3), targets]
    assert (ldam < 0).all() and (plain < 0).all()  # both push the true logit up
    assert abs(ldam[2]) > abs(plain[2])  # the rare-class sample is pushed harder
    ratios = ldam / plain
    assert ratios[0] < ratios[1] < ratios[2]  # and the rarer the class, the more so


def test_drw_is_off_before_drw_epoch_and_on_from_it():
    w = np_cb_weights(COUNTS, 0.9999)
    m = 0.5 * np.array([n**-0.25 for n in COUNTS])
    z = 30.0 * COSINES
    z[np.arange(3), TARGETS] -= 30.0 * m[TARGETS]
    terms = np_ce_terms(z, TARGETS)
    unweighted = terms.mean()
    weighted = (w[TARGETS] * terms).sum() / w[TARGETS].sum()
    assert not math.isclose(unweighted, weighted, rel_tol=1e-3)

    loss = LDAMLoss(COUNTS, drw_epoch=2, beta=0.9999)
    for epoch, expected in [(0, unweighted), (1, unweighted), (2, weighted), (7, weighted), (0, unweighted)]:
        loss.set_epoch(epoch)
        assert loss.drw_active == (epoch >= 2)
        assert value(loss, COSINES) == pytest.approx(expected, rel=1e-6), epoch

    never = LDAMLoss(COUNTS, drw_epoch=None)
    never.set_epoch(10_000)
    assert not never.drw_active
    assert value(never, COSINES) == pytest.approx(unweighted, rel=1e-6)
    assert LDAMLoss(COUNTS, drw_epoch=0).drw_active  # on from the first epoch


# --------------------------------------------------------------------------- logit adjustment


def test_log_prior_values():
    assert log_prior([3, 1]).numpy() == pytest.approx(np.log([0.75, 0.25]), rel=1e-6)
    with_empty = log_prior([30, 0, 10])
    assert torch.isfinite(with_empty).all()
    assert with_empty[0] == pytest.approx(math.log(0.75)) and with_empty[2] == pytest.approx(math.log(0.25))
    assert with_empty[1] < math.log(1 / 40) - 10  # far below a one-image class


def test_balanced_softmax_matches_hand_value():
    expected = np_ce_terms(LOGITS + np.log(np.array(COUNTS, dtype=float)), TARGETS).mean()
    assert value(BalancedSoftmaxLoss(COUNTS)) == pytest.approx(expected, rel=1e-6)


def test_logit_adjusted_matches_hand_value():
    prior = np.array(COUNTS) / sum(COUNTS)
    expected = np_ce_terms(LOGITS + 0.5 * np.log(prior), TARGETS).mean()
    assert value(LogitAdjustedLoss(COUNTS, tau=0.5)) == pytest.approx(expected, rel=1e-6)
    assert value(LogitAdjustedLoss(COUNTS, tau=0.0)) == pytest.approx(value(CrossEntropyLoss()), rel=1e-6)


def test_balanced_softmax_equals_logit_adjusted_with_tau_one():
    balanced, adjusted = BalancedSoftmaxLoss(COUNTS), LogitAdjustedLoss(COUNTS, tau=1.0)
    assert value(balanced) == pytest.approx(value(adjusted), rel=1e-6)
    assert logit_grad(balanced, LOGITS, TARGETS) == pytest.approx(logit_grad(adjusted, LOGITS, TARGETS), abs=1e-6)


def test_logit_adjustment_pushes_rare_logits_up_relative_to_ce():
    logits = np.zeros((3, 3))
    targets = np.array([0, 1, 2])
    adjusted = logit_grad(LogitAdjustedLoss(COUNTS, tau=1.0), logits, targets)
    plain = logit_grad(CrossEntropyLoss(), logits, targets)
    # gradient descent moves z by -grad: a smaller gradient on the rare logit means it rises relative to CE,
    # whether the rare class is the target (row 2) or not (rows 0, 1); the frequent logit the other way round
    assert (adjusted[:, 2] < plain[:, 2]).all()
    assert (adjusted[:, 0] > plain[:, 0]).all()


# --------------------------------------------------------------------------- robustness


@pytest.mark.parametrize("name", NAMES)
def test_zero_count_class_gives_finite_loss_and_gradient(name: str):
    loss = create_loss(name, [50, 0, 5], drw_epoch=0)
    loss.set_epoch(1)
    for targets in (np.array([0, 2, 1]), np.array([1, 1, 1])):  # the empty class as a target too
        z = t(LOGITS / 3).requires_grad_(True)
        out = loss(z, t(targets))
        out.backward()
        assert torch.isfinite(out) and torch.isfinite(z.grad).all(), targets


@pytest.mark.parametrize("name", NAMES)
def test_create_loss_builds_every_name(name: str):
    loss = create_loss(name, COUNTS)
    assert isinstance(loss, Loss)
    loss.set_epoch(3)
    z = t(COSINES).requires_grad_(True)
    out = loss(z, t(TARGETS))
    out.backward()
    assert out.shape == () and out.item() > 0
    assert z.grad.abs().sum() > 0


def test_registry_names_and_create_loss_passes_each_loss_its_own_options():
    assert sorted(LOSSES.names()) == sorted(NAMES)
    assert type(create_loss("ce", COUNTS)) is CrossEntropyLoss
    focal = create_loss("focal", COUNTS, gamma=0.5)
    assert type(focal) is FocalLoss and focal.gamma == 0.5 and focal.weight is None
    cb = create_loss("class_balanced", COUNTS, beta=0.99)
    assert type(cb) is ClassBalancedLoss and cb.gamma == 0.0 and cb.beta == 0.99
    assert cb.weight.numpy() == pytest.approx(np_cb_weights(COUNTS, 0.99), rel=1e-6)
    ldam = create_loss("ldam_drw", COUNTS, max_margin=0.3, scale=16.0, drw_epoch=4, beta=0.99)
    assert type(ldam) is LDAMLoss and ldam.scale == 16.0 and ldam.drw_epoch == 4 and ldam.beta == 0.99
    assert float(ldam.margins.max()) == pytest.approx(0.3)
    assert create_loss("ldam_drw", COUNTS, epochs=10).drw_epoch == 8  # by default 80 % of the training
    assert type(create_loss("balanced_softmax", COUNTS)) is BalancedSoftmaxLoss
    la = create_loss("logit_adjusted", COUNTS, tau=1.5)
    assert type(la) is LogitAdjustedLoss and la.tau == 1.5
    assert create_loss("focal", COUNTS, tau=9.0).gamma == 2.0  # another loss's key: not focal's, ignored
    with pytest.raises(ConfigError, match="loss 'focal': unknown option 'gama'"):
        create_loss("focal", COUNTS, gama=1.5)  # no loss has it: a typo, named


def test_unknown_loss_name_names_the_key_and_the_choices():
    with pytest.raises(ConfigError) as err:
        create_loss("ldam", COUNTS)
    message = str(err.value)
    assert "train.loss='ldam'" in message
    for name in NAMES:
        assert name in message


@pytest.mark.parametrize(
    "build, culprit",
    [
        (lambda: FocalLoss(gamma=-1.0), "gamma=-1.0"),
        (lambda: FocalLoss(gamma=float("nan")), "gamma=nan"),
        (lambda: create_loss("focal", COUNTS, gamma=-0.5), "gamma=-0.5"),
        (lambda: class_balanced_weights(COUNTS, 1.0), "beta=1.0"),
        (lambda: ClassBalancedLoss(COUNTS, beta=-0.1), "beta=-0.1"),
        (lambda: ClassBalancedLoss(COUNTS, gamma=-2), "gamma=-2"),
        (lambda: create_loss("class_balanced", COUNTS, beta=1.5), "beta=1.5"),
        (lambda: LDAMLoss(COUNTS, max_margin=0.0), "max_margin=0.0"),
        (lambda: LDAMLoss(COUNTS, scale=-30.0), "scale=-30.0"),
        (lambda: LDAMLoss(COUNTS, scale=0), "scale=0"),
        (lambda: LDAMLoss(COUNTS, drw_epoch=-1), "drw_epoch=-1"),
        (lambda: LDAMLoss(COUNTS, drw_epoch=1.5), "drw_epoch=1.5"),
        (lambda: create_loss("ldam_drw", COUNTS, max_margin=-1), "max_margin=-1"),
        (lambda: LogitAdjustedLoss(COUNTS, tau=-1.0), "tau=-1.0"),
        (lambda: create_loss("logit_adjusted", COUNTS, tau="big"), "tau='big'"),
        (lambda: create_loss("ce", []), "class_counts"),
        (lambda: BalancedSoftmaxLoss([]), "class_counts"),
        (lambda: LogitAdjustedLoss([5, -1, 3]), "class_counts"),
        (lambda: create_loss("balanced_softmax", [0, 0]), "class_counts"),
        (lambda: log_prior([[1, 2], [3, 4]]), "class_counts"),
    ],
)
def test_bad_parameters_raise_one_line_config_errors(build, culprit: str):
    with pytest.raises(ConfigError) as err:
        build()
    message = str(err.value)
    assert culprit in message and "expected" in message and "\n" not in message


def test_negative_count_error_says_which_class():
    with pytest.raises(ConfigError, match=r"class_counts: expected counts >= 0, got -1 for class 1"):
        create_loss("ldam_drw", [5, -1, 3])


def test_constants_are_buffers_that_follow_to():
    losses = {
        "weight": ClassBalancedLoss(COUNTS),
        "margins": LDAMLoss(COUNTS),
        "drw_weights": LDAMLoss(COUNTS),
        "log_prior": LogitAdjustedLoss(COUNTS),
    }
    for buffer, loss in losses.items():
        assert buffer in loss.state_dict()
        loss.to(torch.float64)
        assert getattr(loss, buffer).dtype == torch.float64
        loss.to("meta")
        assert getattr(loss, buffer).device.type == "meta"


def test_wrong_number_of_classes_is_reported():
    with pytest.raises(ValueError, match="logits have 4 classes, the loss was built for 3"):
        LogitAdjustedLoss(COUNTS)(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected logits \(N, C\) and targets \(N,\)"):
        CrossEntropyLoss()(torch.zeros(2, 3), torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("name", NAMES)
def test_half_precision_logits_give_a_float32_loss(name: str):
    loss = create_loss(name, COUNTS)
    out = loss(torch.tensor(COSINES, dtype=torch.bfloat16), t(TARGETS))
    assert out.dtype == torch.float32 and torch.isfinite(out)
    expected = loss(torch.tensor(COSINES, dtype=torch.bfloat16).float(), t(TARGETS))
    assert float(out) == pytest.approx(float(expected), rel=1e-6)


def test_counts_may_be_a_list_an_array_or_a_tensor():
    expected = log_prior(COUNTS)
    assert torch.equal(log_prior(np.array(COUNTS)), expected)
    assert torch.equal(log_prior(torch.tensor(COUNTS)), expected)
    assert torch.equal(create_loss("ldam_drw", torch.tensor(COUNTS)).margins, ldam_margins(COUNTS, 0.5))


ALL_LOSSES = ["ce", "focal", "class_balanced", "balanced_softmax", "ldam_drw", "logit_adjusted"]


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("drw", [False, True])
def test_an_empty_batch_gives_zero_loss_for_every_loss(name: str, drw: bool):
    # As a batch whose targets all have weight 0: 0 with a zero gradient, not NaN (LDAM gave NaN before DRW
    # and 0 after it).
    loss = create_loss(name, [30, 5, 1], epochs=4, gamma=1.0, drw_epoch=1)
    loss.set_epoch(2 if drw else 0)
    logits = torch.zeros(0, 3, requires_grad=True)
    value = loss(logits, torch.zeros(0, dtype=torch.int64))
    assert value.item() == 0.0
    value.backward()
    assert logits.grad.shape == (0, 3)
    for other in (LabelAwareSmoothingLoss([30, 5, 1], 0.4, 0.1), ClassBalancedLoss([30, 5, 1], gamma=1.0)):
        assert other(torch.zeros(0, 3), torch.zeros(0, dtype=torch.int64)).item() == 0.0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_inputs_of_the_wrong_type_or_dtype_are_named(name: str):
    loss = create_loss(name, [30, 5, 1])
    logits, targets = torch.zeros(2, 3), torch.tensor([0, 2])
    with pytest.raises(TypeError, match="expected logits and targets as tensors, got list and ndarray"):
        loss(logits.tolist(), targets.numpy())
    # Integer logits ran through LDAM with its margins cast to integers (0): a silently different loss.
    with pytest.raises(TypeError, match="logits: expected a floating-point tensor, got torch.int64"):
        loss(logits.long(), targets)
    for dtype in (torch.float32, torch.int32, torch.bool):
        with pytest.raises(TypeError, match=f"targets: expected int64 class indices, got {dtype}"):
            loss(logits, targets.to(dtype))


@pytest.mark.parametrize("epochs", [0, -5, "10", 2.5, None])
def test_create_loss_names_epochs_of_the_wrong_kind(epochs):
    # ldam_drw's default drw_epoch is 80 % of epochs: -5 was reported as "drw_epoch=-4", "10" as a TypeError.
    with pytest.raises(ConfigError, match=f"epochs={epochs!r}: expected an integer >= 1"):
        create_loss("ldam_drw", COUNTS, epochs=epochs)


@pytest.mark.parametrize("epoch", [None, "3", 1.5])
def test_ldam_set_epoch_names_what_is_not_an_epoch(epoch):
    with pytest.raises(ValueError, match=f"epoch={epoch!r}: expected an integer >= 0"):
        LDAMLoss(COUNTS, drw_epoch=1).set_epoch(epoch)
