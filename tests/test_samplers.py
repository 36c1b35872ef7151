import numpy as np
import pytest
import torch

from longtail.errors import ConfigError, DataError
from longtail.samplers import ClassPowerSampler, InstanceSampler, make_sampler

LABELS = np.repeat(np.arange(4), [400, 100, 25, 4])  # 529 items, imbalance 100


def class_frequencies(sampler, epochs=range(20)) -> np.ndarray:
    draws = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        draws.append(LABELS[list(sampler)])
    return np.bincount(np.concatenate(draws), minlength=4) / sum(len(d) for d in draws)


@pytest.mark.parametrize("strategy, q", [("class", 0.0), ("sqrt", 0.5), ("power", 0.25)])
def test_class_frequencies_follow_p_j(strategy: str, q: float):
    sampler = make_sampler(LABELS, strategy, seed=0, q=q)
    counts = np.bincount(LABELS).astype(float)
    expected = counts**q / (counts**q).sum()
    assert class_frequencies(sampler) == pytest.approx(expected, abs=0.02)


def test_instance_sampler_is_a_permutation_per_epoch():
    sampler = make_sampler(LABELS, "instance", seed=0)
    assert isinstance(sampler, InstanceSampler)
    sampler.set_epoch(0)
    first = list(sampler)
    assert sorted(first) == list(range(len(LABELS)))
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_instances_within_a_class_are_uniform():
    sampler = make_sampler(LABELS, "class", seed=0, num_samples=40000)
    draws = np.array(list(sampler))
    in_class_1 = draws[LABELS[draws] == 1]
    hits = np.bincount(in_class_1 - 400, minlength=100)
    assert hits.min() > 0.5 * hits.mean() and hits.max() < 1.5 * hits.mean()


def test_order_depends_only_on_seed_and_epoch():
    a, b = make_sampler(LABELS, "sqrt", seed=3), make_sampler(LABELS, "sqrt", seed=3)
    a.set_epoch(5)
    b.set_epoch(5)
    assert list(a) == list(b)
    b.set_epoch(6)
    assert list(a) != list(b)
    c = make_sampler(LABELS, "sqrt", seed=4)
    c.set_epoch(5)
    assert list(a) != list(c)


def test_epoch_length():
    for strategy in ("instance", "class", "sqrt"):
        sampler = make_sampler(LABELS, strategy)
        assert len(sampler) == len(list(sampler)) == len(LABELS)
    sampler = make_sampler(LABELS, "instance", num_samples=1000)
    assert len(list(sampler)) == 1000
    assert np.bincount(list(sampler), minlength=len(LABELS)).min() >= 1


def test_accepts_lists_arrays_and_tensors():
    for labels in (LABELS.tolist(), LABELS, torch.as_tensor(LABELS)):
        assert len(make_sampler(labels, "class")) == len(LABELS)


def test_errors():
    with pytest.raises(DataError, match="class 1 has no training images"):
        ClassPowerSampler([0, 0, 2], q=0.0)
    with pytest.raises(ConfigError, match="sampler 'uniform'"):
        make_sampler(LABELS, "uniform")
    with pytest.raises(ConfigError, match="q=1.5"):
        make_sampler(LABELS, "power", q=1.5)
    with pytest.raises(DataError, match=">= 0"):
        make_sampler([-1, 0], "class")


def test_power_sampler_skips_empty_classes_when_q_positive():
    sampler = ClassPowerSampler([0, 0, 2], q=0.5, num_samples=200)
    assert set(np.array([0, 0, 2])[list(sampler)]) == {0, 2}
