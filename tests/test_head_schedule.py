"""decouple.<method>.batch_size=auto: the official batch at ImageNet-LT's size, enough steps on small data."""

import pytest
import torch

from longtail.config import load_config
from longtail.engine.head_schedule import (
    OFFICIAL_BATCH,
    auto_batch_size,
    resolve_batch_size,
    resolved_section,
    steps_per_epoch,
)
from longtail.engine.head_training import Features
from longtail.errors import ConfigError
from longtail.methods import METHODS, FitContext, train_on_features
from longtail.methods.crt import CRTConfig
from longtail.methods.las import LASConfig
from longtail.methods.lws import LWSConfig
from longtail.methods.wb import WBConfig
from longtail.models.heads import LinearHead

IMAGENET_LT = 115_846  # training images of ImageNet-LT
DEMO = 2_478  # training images of the demo (Fashion-MNIST-LT, 1000 -> 10)


def test_auto_is_the_official_512_at_imagenet_lt_size():
    assert auto_batch_size(IMAGENET_LT) == OFFICIAL_BATCH == 512
    assert steps_per_epoch(IMAGENET_LT, 512) == 226  # the official recipe's ~226 steps an epoch
    section = resolved_section(CRTConfig(), IMAGENET_LT)
    assert section.batch_size == 512 and isinstance(section.batch_size, int)


def test_auto_gives_small_data_64_steps_an_epoch_and_never_a_batch_under_32():
    batch = auto_batch_size(DEMO)
    assert batch == 38 and steps_per_epoch(DEMO, batch) == 65
    assert 5 * steps_per_epoch(DEMO, batch) == 325  # LWS's 5 epochs: 325 steps, not 20 at batch 512
    assert auto_batch_size(12_406) == 193 and steps_per_epoch(12_406, 193) == 64  # CIFAR-10-LT
    assert auto_batch_size(300) == 32 and auto_batch_size(5) == 32
    sizes = range(1, 40_000, 97)
    assert all(32 <= auto_batch_size(n) <= 512 for n in sizes)
    assert all(auto_batch_size(a) <= auto_batch_size(b) for a, b in zip(sizes, sizes[1:], strict=False))


def test_explicit_integers_are_used_as_they_are():
    for n in (5, DEMO, IMAGENET_LT):
        assert resolve_batch_size(512, n) == 512 and resolve_batch_size(7, n) == 7
    section = LWSConfig(batch_size=64)
    assert resolved_section(section, IMAGENET_LT).batch_size == 64 and section.batch_size == 64  # a copy
    with pytest.raises(ValueError, match="expected an integer or 'auto'"):
        resolve_batch_size("big", DEMO)


def test_methods_with_another_reference_batch_keep_it_where_the_data_allows():
    # WB's reference is batch 64, LAS's 128 (CIFAR): auto caps at them, shrinks only below 64 steps an epoch.
    assert [resolved_section(WBConfig(), n).batch_size for n in (IMAGENET_LT, 4_096, DEMO, 300)] == [64, 64, 38, 32]
    assert [resolved_section(LASConfig(), n).batch_size for n in (IMAGENET_LT, 8_192, DEMO, 300)] == [128, 128, 38, 32]


def test_auto_is_the_default_and_parses_from_the_command_line():
    config = load_config(None)
    sections = [s for s in config.decouple.sections.values() if hasattr(s, "batch_size")]
    assert {"crt", "lws", "wb", "las"} <= {n for n, s in config.decouple.sections.items() if s in sections}
    assert all(s.batch_size == "auto" for s in sections)
    config = load_config(None, ["decouple.crt.batch_size=512", "decouple.lws.batch_size=auto"])
    assert config.decouple.crt.batch_size == 512 and config.decouple.lws.batch_size == "auto"
    for bad in ("0", "big", "1.5"):
        with pytest.raises(ConfigError, match=r"^decouple\.crt\.batch_size=") as error:
            load_config(None, [f"decouple.crt.batch_size={bad}"])
        assert "\n" not in str(error.value)


def test_a_trained_head_records_the_batch_and_steps_it_got():
    counts = [120, 40, 12, 6]  # 178 samples: auto is 32, 5 steps an epoch
    g = torch.Generator().manual_seed(0)
    y = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    data = Features(torch.randn(len(y), 8, generator=g) + torch.eye(4, 8)[y] * 3, y)
    config = load_config(None, ["decouple.crt.epochs=3", "decouple.lws.epochs=2", "decouple.lws.batch_size=64"])
    trainer = train_on_features(lambda split: data, config, torch.device("cpu"))
    context = FitContext(lambda split: data, LinearHead(8, 4), counts, config, torch.device("cpu"), trainer)
    crt, lws = METHODS["crt"].fit(context), METHODS["lws"].fit(context)
    assert (crt.settings["batch_size"], crt.settings["steps"]) == (32, 3 * 5)
    assert (lws.settings["batch_size"], lws.settings["steps"]) == (64, 2 * 2)
