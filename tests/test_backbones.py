"""ImageNet-style backbones: published sizes, features, initialisation, pretrained weights, partial freezing."""

from pathlib import Path

import pytest
import torch
from torch import nn

from longtail.errors import ConfigError
from longtail.models import create_backbone
from longtail.models import create_model as build_model
from longtail.models.pretrained import configure_backbone, load_pretrained


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize(
    "name, published",
    [
        ("resnet50", 25_557_032),  # "25.6M", torchvision's count with the 1000-class classifier
        ("resnext50_32x4d", 25_028_904),  # "25.0M"
        ("resnet152", 60_192_808),  # "60.2M"
    ],
)
def test_parameter_counts_match_the_published_ones(name: str, published: int):
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        assert parameters(build_model(name, 3, 1000)) == published


@pytest.mark.parametrize("name, width", [("resnet10", 512), ("resnet50", 2048), ("resnext50_32x4d", 2048)])
def test_features_of_one_small_image(name: str, width: int):
    backbone = create_backbone(name).eval()
    assert backbone.num_features == width
    with torch.no_grad():
        assert backbone.forward_features(torch.randn(1, 3, 32, 32)).shape == (1, width)


def test_any_input_size_and_channel_count():
    backbone = create_backbone("resnet10", in_channels=1).eval()
    assert backbone.conv1.weight.shape[1] == 1
    with torch.no_grad():
        for size in (16, 45, 80):  # adaptive pooling: any size works
            assert backbone.forward_features(torch.randn(2, 1, size, size)).shape == (2, 512)


def test_he_initialisation_and_batchnorm_at_identity():
    backbone = create_backbone("resnet10")
    conv = backbone.layer3[0].conv1  # 3x3, 256 output channels: fan-out 2304
    assert conv.weight.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)


def test_pretrained_weights_load_with_module_prefix_and_classifier_dropped(tmp_path: Path):
    source = create_backbone("resnet10")
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    state["module.fc.weight"], state["module.fc.bias"] = torch.zeros(1000, 512), torch.zeros(1000)
    torch.save({"state_dict": state}, tmp_path / "r10.pth")
    target = create_backbone("resnet10")
    load_pretrained(target, tmp_path / "r10.pth", "resnet10")
    assert all(
        torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
    )


def test_a_longtail_checkpoint_is_a_valid_pretrained_file(tmp_path: Path):
    model = build_model("resnet8", 3, 4)
    torch.save({"model": model.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    fresh = build_model("resnet8", 3, 10)
    configure_backbone(fresh, backbone="resnet8", pretrained=str(tmp_path / "checkpoint.pt"), trainable="all")
    assert torch.equal(fresh.backbone.stem[0].weight, model.backbone.stem[0].weight)


def test_cifar_weights_with_projection_shortcuts_are_refused_with_the_reason(tmp_path: Path):
    state = create_backbone("resnet8").state_dict()
    state["stages.1.0.shortcut.0.weight"] = torch.zeros(32, 16, 1, 1)  # a 1x1 projection (option B)
    torch.save(state, tmp_path / "projection.pth")
    with pytest.raises(ConfigError, match=r"unexpected stages\.1\.0\.shortcut\.0\.weight\).*option-A shortcuts"):
        load_pretrained(create_backbone("resnet8"), tmp_path / "projection.pth", "resnet8")


def test_pretrained_mismatch_is_one_line_naming_the_file(tmp_path: Path):
    torch.save(create_backbone("resnet10").state_dict(), tmp_path / "r10.pth")
    with pytest.raises(ConfigError, match=r"model\.pretrained='.*r10\.pth': weights do not fit .*'resnet50' \(missing"):
        load_pretrained(create_backbone("resnet50"), tmp_path / "r10.pth", "resnet50")
    with pytest.raises(ConfigError, match=r"r10\.pth': conv1\.weight has shape \(64, 3, 7, 7\), .* \(64, 1, 7, 7\)"):
        load_pretrained(create_backbone("resnet10", in_channels=1), tmp_path / "r10.pth", "resnet10")
    with pytest.raises(ConfigError, match=r"nope\.pth': file not found"):
        load_pretrained(create_backbone("resnet10"), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(ConfigError, match=r"junk\.pth': not a PyTorch weights file"):
        load_pretrained(create_backbone("resnet10"), tmp_path / "junk.pth")


def test_last_stage_training_freezes_the_rest_and_its_batchnorm_statistics():
    model = build_model("resnet10", 3, 5)
    configure_backbone(model, backbone="resnet10", pretrained=None, trainable="last_stage")
    trainable = {name.split(".")[1] for name, p in model.named_parameters() if p.requires_grad and "backbone" in name}
    assert trainable == {"layer4"} and all(p.requires_grad for p in model.head.parameters())
    before = model.backbone.layer1[0].bn1.running_mean.clone()
    last_before = model.backbone.layer4[0].bn1.running_mean.clone()
    model.train()
    model(torch.randn(4, 3, 32, 32) + 3).sum().backward()
    assert torch.equal(model.backbone.layer1[0].bn1.running_mean, before)  # frozen: eval-mode BatchNorm
    assert not torch.equal(model.backbone.layer4[0].bn1.running_mean, last_before)
    assert model.backbone.conv1.weight.grad is None and model.backbone.layer4[0].conv1.weight.grad is not None
