import pytest
import torch
from torch import nn

from longtail.errors import DataError
from longtail.methods.logit_adjust import LogitAdjustedHead
from longtail.methods.lws import LWSHead
from longtail.methods.ncm import NCMClassifier
from longtail.methods.tau_norm import TauNormHead, tau_normalize, tau_sweep
from longtail.models import Classifier, LinearHead, create_backbone, weight_norms
from longtail.models.heads import CosineHead
from longtail.models.serialize import head_from_dict, head_to_dict


def test_tau_normalize_by_hand():
    weight = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # norms 5 and 2
    assert torch.allclose(tau_normalize(weight, 0.0), weight)
    assert torch.allclose(tau_normalize(weight, 1.0), torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    assert torch.allclose(tau_normalize(weight, 2.0), torch.tensor([[3 / 25, 4 / 25], [0.0, 0.5]]))
    assert torch.isfinite(tau_normalize(torch.zeros(2, 3), 1.0)).all()


def test_tau_sweep_equals_normalised_weights():
    torch.manual_seed(0)
    weight, x = torch.randn(5, 8), torch.randn(7, 8)
    raw = x @ weight.T
    for tau, logits in tau_sweep(raw, weight_norms(weight), [0.0, 0.5, 1.3, 2.0]):
        assert torch.allclose(logits, x @ tau_normalize(weight, tau).T, atol=1e-5)
        assert torch.allclose(logits, TauNormHead(weight, tau)(x), atol=1e-5)


def test_tau_norm_head_drops_the_bias_and_is_frozen():
    linear = LinearHead(3, 2)
    head = TauNormHead.from_linear(linear, 1.0)
    x = torch.randn(4, 3)
    assert torch.allclose(head(x), x @ tau_normalize(linear.weight, 1.0).T)
    assert list(head.parameters()) == []


def test_lws_scales_weight_and_bias_and_trains_only_scales():
    linear = LinearHead(3, 2)
    head = LWSHead.from_linear(linear)
    x = torch.randn(4, 3)
    assert torch.allclose(head(x), linear(x))  # scales start at 1
    with torch.no_grad():
        head.scales.copy_(torch.tensor([2.0, 0.5]))
    assert torch.allclose(head(x), linear(x) * torch.tensor([2.0, 0.5]))
    assert [name for name, _ in head.named_parameters()] == ["scales"]


def test_ncm_cl2n_by_hand():
    features = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    labels = torch.tensor([0, 0, 1, 1])
    ncm = NCMClassifier().fit(features, labels)
    assert torch.allclose(ncm.mean_, torch.tensor([1.5, 1.5]))
    # centred rows normalised, then averaged per class (not re-normalised)
    a = torch.nn.functional.normalize(torch.tensor([[0.5, -1.5], [2.5, -1.5]]), dim=1).mean(0)
    assert torch.allclose(ncm.centroids_[0], a)
    query = torch.tensor([[3.0, 0.5]])
    q = torch.nn.functional.normalize(query - ncm.mean_, dim=1)
    assert torch.allclose(
        ncm.decision_function(query)[0, 0], -torch.linalg.norm(q[0] - a).pow(2)
    )  # squared, as official
    assert ncm.predict(torch.tensor([[5.0, 0.0], [0.0, 5.0]])).tolist() == [0, 1]


def test_ncm_metrics_differ_as_documented():
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    l2 = NCMClassifier("l2").fit(features, labels)
    assert torch.allclose(l2.centroids_, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(l2.decision_function(torch.tensor([[2.0, 1.0]])), torch.tensor([[-1.0, -4.0]]))
    cosine = NCMClassifier("cosine").fit(features, labels)
    scores = cosine.decision_function(features)
    assert scores.max() <= 1.0 + 1e-6 and scores.min() >= -1.0 - 1e-6
    with pytest.raises(Exception, match="metric='dot'"):
        NCMClassifier("dot")


def test_ncm_needs_every_class():
    with pytest.raises(DataError, match="class 1 has no training images"):
        NCMClassifier().fit(torch.randn(3, 2), torch.tensor([0, 0, 2]), num_classes=3)


def test_ncm_classifier_takes_arrays_and_lists_and_refuses_bad_input_in_one_line():
    """README's ``NCMClassifier(...).fit(train_features, train_labels)``: NumPy arrays and lists raised
    ``'numpy.ndarray' object has no attribute 'long'``; fractional labels were truncated into a class, NaN
    features predicted class 0 for everything, and a mismatch or an unfitted classifier raised torch's or
    Python's own errors."""
    features, labels = torch.tensor([[2.0, 0.0], [4.0, 0.0], [0.0, 2.0], [0.0, 4.0]]), torch.tensor([0, 0, 1, 1])
    expected = NCMClassifier().fit(features, labels).decision_function(features)
    for x, y in ((features.numpy(), labels.numpy()), (features.tolist(), labels.tolist())):
        ncm = NCMClassifier().fit(x, y)
        assert torch.allclose(ncm.decision_function(x), expected)
    fitted = NCMClassifier().fit(features, labels)
    bad = [
        (lambda: NCMClassifier().fit(features, [0.5, 0, 1, 1]), "^labels: expected integer class indices, found 0.5"),
        (lambda: NCMClassifier().fit(features, ["a", "a", "b", "b"]), "labels: expected integer class indices"),
        (lambda: NCMClassifier().fit(features, [-1, 0, 1, 1]), "labels: class indices must be >= 0, found -1"),
        (lambda: NCMClassifier().fit(features, labels[:3]), "labels: 3 labels for 4 rows of features"),
        (lambda: NCMClassifier().fit(features, labels, num_classes=1), "labels: class index 1 for num_classes=1"),
        (lambda: NCMClassifier().fit(features * float("nan"), labels), "features: NaN or infinite values"),
        (lambda: NCMClassifier().fit(features[:0], labels[:0]), r"features: expected \(N, d\) with N, d >= 1"),
        (lambda: NCMClassifier().fit(features[:, 0], labels), r"got shape \(4,\)"),
        (lambda: NCMClassifier().predict(features), "NCMClassifier: not fitted; call fit"),
        (lambda: fitted.predict(features[:, :1]), "features: 1 per row; expected 2, as in training"),
    ]
    for call, message in bad:
        with pytest.raises(DataError, match=message):
            call()


def test_ncm_head_matches_estimator():
    torch.manual_seed(0)
    features, labels = torch.randn(30, 4), torch.arange(30) % 3
    for metric in ("cl2n", "l2", "cosine"):
        ncm = NCMClassifier(metric).fit(features, labels)
        assert torch.allclose(ncm.to_head()(features), ncm.decision_function(features))


@pytest.mark.parametrize("name, params", [("resnet20", 0.27e6), ("resnet32", 0.46e6), ("resnet56", 0.85e6)])
def test_cifar_resnet_sizes(name: str, params: float):
    model = Classifier(create_backbone(name, in_channels=3), LinearHead(64, 10))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count - params) / params < 0.01  # He et al. 2016, Table 6 (option-A shortcuts)


@pytest.mark.parametrize("num_classes, params", [(10, 464_154), (100, 470_004)])
def test_resnet32_has_the_parameter_count_of_cao_et_al(num_classes: int, params: int):
    # kaidic/LDAM-DRW resnet_cifar.py: ResNet-32, option A, linear head; the count CIFAR-LT papers quote.
    model = Classifier(create_backbone("resnet32"), LinearHead(64, num_classes))
    assert sum(p.numel() for p in model.parameters()) == params


def test_cifar_shortcuts_are_parameter_free_subsampling_and_zero_padding():
    backbone = create_backbone("resnet8")
    assert not any("shortcut" in name for name in backbone.state_dict())  # no weights, no buffers
    shortcut = backbone.stages[1][0].shortcut  # 16 -> 32 channels, stride 2
    assert isinstance(backbone.stages[0][0].shortcut, nn.Identity)
    x = torch.randn(2, 16, 7, 7)
    expected = nn.functional.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))  # Cao et al.'s LambdaLayer
    assert torch.equal(shortcut(x), expected)
    # Channels-last in, channels-last out, so the residual sum stays channels-last.
    assert shortcut(x.contiguous(memory_format=torch.channels_last)).is_contiguous(memory_format=torch.channels_last)
    # Odd sizes: the shortcut matches the stride-2 convolution of the block (7 -> 4 -> 2).
    assert backbone(torch.randn(1, 3, 7, 7)).shape == (1, 64)


def test_backbone_features_and_swappable_head():
    backbone = create_backbone("resnet8", in_channels=1)
    model = Classifier(backbone, LinearHead(backbone.num_features, 10))
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, 64)
    assert model(x).shape == (2, 10)
    model.reset_classifier(nn.Linear(64, 3))
    assert model(x).shape == (2, 3)
    assert create_backbone("resnet8", in_channels=3)(torch.randn(1, 3, 8, 8)).shape == (1, 64)


def test_unknown_backbone():
    with pytest.raises(Exception, match="model.backbone='resnet9'.*resnet8"):
        create_backbone("resnet9")


def test_heads_round_trip_through_dicts():
    torch.manual_seed(0)
    linear = LinearHead(4, 3)
    x = torch.randn(5, 4)
    lws = LWSHead.from_linear(linear)
    with torch.no_grad():
        lws.scales.mul_(torch.tensor([1.0, 2.0, 3.0]))
    heads = [
        linear,
        TauNormHead.from_linear(linear, 0.7),
        lws,
        NCMClassifier("cosine").fit(x, torch.tensor([0, 1, 2, 0, 1])).to_head(),
        LogitAdjustedHead(linear.weight, linear.bias, torch.tensor([-0.1, -1.0, -3.0]), 0.5),
        CosineHead(4, 3),
    ]
    for head in heads:
        rebuilt = head_from_dict(head_to_dict(head), num_features=4, num_classes=3)
        assert type(rebuilt) is type(head)
        assert torch.allclose(rebuilt(x), head(x))


def test_frozen_backbone_trains_only_the_head():
    backbone = create_backbone("resnet8", in_channels=1)
    model = Classifier(backbone, LinearHead(backbone.num_features, 4)).freeze_backbone()
    model.train()
    assert not backbone.training and model.head.training
    assert all(not p.requires_grad for p in backbone.parameters())
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    torch.nn.functional.cross_entropy(model(torch.randn(8, 1, 28, 28)), torch.arange(8) % 4).backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())  # BN running stats too


def test_logit_adjusted_head_subtracts_tau_log_prior():
    linear = LinearHead(3, 2)
    prior = torch.tensor([0.9, 0.1]).log()
    head = LogitAdjustedHead(linear.weight, linear.bias, prior, tau=2.0)
    x = torch.randn(4, 3)
    assert torch.allclose(head(x), linear(x) - 2.0 * prior)
    assert not list(head.parameters())  # nothing to train: all buffers


def test_cosine_head_outputs_cosines():
    head = CosineHead(5, 3)
    x = torch.randn(6, 5)
    logits = head(x)
    expected = torch.nn.functional.cosine_similarity(x.unsqueeze(1), head.weight.unsqueeze(0), dim=2)
    assert torch.allclose(logits, expected, atol=1e-6)
    assert logits.abs().max() <= 1.0 + 1e-6
    assert torch.allclose(head(3.0 * x), logits, atol=1e-6)  # scale of the features does not matter


def test_keep_last_stage_trains_the_last_stage_only():
    backbone = create_backbone("resnet8", in_channels=1)
    model = Classifier(backbone, LinearHead(backbone.num_features, 4)).freeze_backbone(keep_last_stage=True)
    model.train()
    assert backbone.last_stage.training and not backbone.stem.training and not backbone.stages[0].training
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(name.startswith(("backbone.stages.2.", "head.")) for name in trainable)
    assert any(name.startswith("backbone.stages.2.") for name in trainable)
    model.unfreeze_backbone()
    assert all(p.requires_grad for p in model.parameters()) and backbone.stem.training


def _sweep_argmax(features: torch.Tensor, weight: torch.Tensor, taus: list[float]) -> torch.Tensor:
    """(T, N) arg-max of tau_sweep's full logits: the reference tau_sweep_predictions must reproduce."""
    raw = features @ weight.T
    return torch.stack([logits.argmax(1) for _, logits in tau_sweep(raw, weight_norms(weight), taus)])


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_tau_sweep_predictions_match_tau_sweep_with_ties(chunk_rows):
    from longtail.methods.norm_sweep import tau_sweep_predictions

    # Small integers make every product exact, so both sides compute bit-identical scores and the
    # many exact ties (equal logits, equal norms) must be broken the same way: smallest class index.
    generator = torch.Generator().manual_seed(0)
    features = torch.randint(-3, 4, (203, 6), generator=generator).float()
    features[:10] = -features[:10].abs()  # rows whose logits are all <= 0 take the direct path
    features[10:13] = 0.0  # every logit 0: class 0 must win the tie
    weight = torch.randint(-2, 3, (12, 6), generator=generator).float()
    weight[4] = 0.0  # zero norm: logit 0 at every τ
    taus = [0.0, 0.3, 1.0, 1.5, 2.0, -0.5]
    predictions = tau_sweep_predictions(features, weight, taus, chunk_rows=chunk_rows)
    assert predictions.dtype == torch.int64 and predictions.shape == (len(taus), len(features))
    assert torch.equal(predictions, _sweep_argmax(features, weight, taus))


@pytest.mark.parametrize("chunk_rows", [5, 33, 200])
def test_tau_sweep_predictions_equal_normalised_weights(chunk_rows):
    from longtail.methods.norm_sweep import tau_sweep_predictions

    torch.manual_seed(1)
    # float64 keeps the two ways of rounding ((x·w)·||w||^-τ against x·(w/||w||^τ)) far below any score gap.
    features = torch.randn(101, 16, dtype=torch.float64).relu()
    weight = torch.randn(30, 16, dtype=torch.float64) * torch.rand(30, 1, dtype=torch.float64).add(0.2)
    weight[3] = 0.0
    taus = torch.linspace(0, 2, 21).tolist()
    predictions = tau_sweep_predictions(features, weight, taus, chunk_rows=chunk_rows)
    norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12)  # the zero row stays zero, as in TauNormHead
    for t, tau in enumerate(taus):
        assert torch.equal(predictions[t], (features @ (weight / norms**tau).T).argmax(1))
        assert torch.equal(predictions[t], TauNormHead(weight, tau)(features).argmax(1))


def test_tau_sweep_predictions_zero_norm_class_wins_only_over_negative_logits():
    from longtail.methods.norm_sweep import tau_sweep_predictions

    weight = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 2.0]])  # class 1 has norm 0
    features = torch.tensor([[-1.0, -1.0], [3.0, -1.0], [0.0, 0.0]])
    predictions = tau_sweep_predictions(features, weight, [0.0, 1.0, 2.0])
    assert predictions[:, 0].tolist() == [1, 1, 1]  # logits (-1, 0, -2)·scales: the 0 of class 1 is the best
    assert predictions[:, 1].tolist() == [0, 0, 0]
    assert predictions[:, 2].tolist() == [0, 0, 0]  # all logits 0: a tie, the smallest index


def test_tau_sweep_predictions_edge_shapes():
    from longtail.methods.norm_sweep import tau_sweep_predictions

    features, weight = torch.randn(4, 3), torch.randn(5, 3)
    assert tau_sweep_predictions(features, weight, []).shape == (0, 4)
    assert tau_sweep_predictions(features[:0], weight, [1.0]).shape == (1, 0)
    with pytest.raises(ValueError):
        tau_sweep_predictions(features, torch.randn(5, 2), [1.0])
    with pytest.raises(ValueError):
        tau_sweep_predictions(features, weight, [1.0], chunk_rows=0)
