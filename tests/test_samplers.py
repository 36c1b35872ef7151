import numpy as np
import pytest
import torch

from longtail.errors import ConfigError, DataError
from longtail.samplers import ClassAwareSampler, ClassPowerSampler, InstanceSampler, make_sampler

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
    with pytest.raises(ConfigError, match="sampler='uniform': unknown sampler"):
        make_sampler(LABELS, "uniform")
    with pytest.raises(ConfigError, match="q=1.5"):
        make_sampler(LABELS, "power", q=1.5)
    with pytest.raises(DataError, match=">= 0"):
        make_sampler([-1, 0], "class")


def test_power_sampler_skips_empty_classes_when_q_positive():
    sampler = ClassPowerSampler([0, 0, 2], q=0.5, num_samples=200)
    assert set(np.array([0, 0, 2])[list(sampler)]) == {0, 2}


def test_progressive_law_moves_from_instance_to_class_balanced():
    counts = np.bincount(LABELS).astype(float)
    instance, balanced = counts / counts.sum(), np.full(4, 0.25)
    sampler = make_sampler(LABELS, "progressive", epochs=10, seed=0, num_samples=40000)
    for epoch in (0, 5, 9):
        mix = epoch / 9  # the official schedule: λ_t = t / (T - 1)
        expected = (1 - mix) * instance + mix * balanced
        assert class_frequencies(sampler, [epoch]) == pytest.approx(expected, abs=0.015)


@pytest.mark.parametrize("epochs", [1, 2, 90])
def test_progressive_first_epoch_is_instance_balanced_and_last_class_balanced(epochs: int):
    counts = torch.bincount(torch.as_tensor(LABELS)).double()
    sampler = make_sampler(LABELS, "progressive", epochs=epochs, seed=0, num_samples=20000)
    balanced = torch.full((4,), 0.25, dtype=torch.float64)
    assert sampler.lambda_at(epochs - 1) == 1.0
    assert torch.allclose(sampler.probs_at(epochs - 1), balanced, rtol=0, atol=1e-15)
    assert torch.allclose(sampler.probs_at(epochs + 5), balanced, rtol=0, atol=1e-15)  # past the end: stays
    assert class_frequencies(sampler, [epochs - 1]) == pytest.approx(balanced.numpy(), abs=0.015)
    if epochs > 1:  # with one epoch, that epoch is the last: class-balanced
        assert sampler.lambda_at(0) == 0.0
        assert torch.allclose(sampler.probs_at(0), counts / counts.sum(), rtol=0, atol=1e-15)


def test_class_aware_yields_blocks_over_a_reshuffled_class_cycle():
    sampler = make_sampler(LABELS, "class_aware", num_samples_cls=4, seed=1)
    sampler.set_epoch(0)
    draws = np.array(list(sampler))
    assert len(draws) == len(LABELS)
    block_classes = LABELS[draws][: len(draws) // 4 * 4].reshape(-1, 4)
    assert (block_classes == block_classes[:, :1]).all(), "each block of 4 comes from one class"
    cycle = block_classes[:, 0]
    for start in range(0, len(cycle) - 3, 4):  # every pass visits each of the 4 classes once
        assert sorted(cycle[start : start + 4]) == [0, 1, 2, 3]
    assert cycle[:4].tolist() != cycle[4:8].tolist() or cycle[8:12].tolist() != cycle[4:8].tolist()
    # Inside a class, images come in passes over all of its images: class 3 has 4 images.
    rare = draws[LABELS[draws] == 3]
    for start in range(0, len(rare) - 3, 4):
        assert sorted(rare[start : start + 4]) == [525, 526, 527, 528]
    # The 100 images of class 1 are all used before any repeats.
    medium = draws[LABELS[draws] == 1]
    assert len(set(medium[:100].tolist())) == min(100, len(medium))


@pytest.mark.parametrize("strategy", ["instance", "class", "sqrt", "progressive", "class_aware"])
@pytest.mark.parametrize("replicas", [2, 3])
def test_ddp_shares_are_disjoint_and_make_up_the_single_process_epoch(strategy: str, replicas: int):
    single = make_sampler(LABELS, strategy, seed=7, epochs=5)
    single.set_epoch(2)
    stream = np.array(list(single))
    shares = []
    for rank in range(replicas):
        sampler = make_sampler(LABELS, strategy, seed=7, epochs=5, num_replicas=replicas, rank=rank)
        sampler.set_epoch(2)
        shares.append(np.array(list(sampler)))
        assert len(shares[-1]) == len(sampler) == -(-len(LABELS) // replicas)
    interleaved = np.empty(sum(len(s) for s in shares), dtype=np.int64)
    for rank, share in enumerate(shares):
        interleaved[rank::replicas] = share
    padding = len(interleaved) - len(stream)
    assert 0 <= padding < replicas
    assert (interleaved[: len(stream)] == stream).all()
    assert (interleaved[len(stream) :] == stream[:padding]).all()


def test_replicas_default_to_a_single_process_without_torch_distributed():
    sampler = make_sampler(LABELS, "class")
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    with pytest.raises(ConfigError, match="rank=2"):
        make_sampler(LABELS, "class", num_replicas=2, rank=2)


@pytest.mark.parametrize("strategy", ["progressive", "class_aware", "power"])
def test_new_strategies_are_reproducible(strategy: str):
    a = make_sampler(LABELS, strategy, seed=5, epochs=4, q=0.3)
    b = make_sampler(LABELS, strategy, seed=5, epochs=4, q=0.3)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    assert len(list(make_sampler(LABELS, strategy, epochs=4, q=0.3, num_samples=77))) == 77


def test_strategy_errors():
    with pytest.raises(ConfigError, match="progressive sampler needs the number of epochs"):
        make_sampler(LABELS, "progressive")
    with pytest.raises(ConfigError, match="num_samples_cls=0"):
        make_sampler(LABELS, "class_aware", num_samples_cls=0)
    with pytest.raises(DataError, match="class 1 has no training images: class-aware"):
        make_sampler([0, 2, 2], "class_aware")


@pytest.mark.parametrize("strategy", ["instance", "class", "sqrt", "progressive", "class_aware"])
@pytest.mark.parametrize("size, replicas", [(1, 4), (2, 5), (3, 8)])
def test_more_replicas_than_draws_gives_every_rank_len_indices(strategy: str, size: int, replicas: int):
    # The padding is longer than the stream: it must cycle, or the last ranks get fewer indices than len().
    labels = np.arange(size) % 2 if strategy != "class" or size > 1 else [0]
    shares = []
    for rank in range(replicas):
        sampler = make_sampler(labels, strategy, seed=3, epochs=2, num_replicas=replicas, rank=rank)
        shares.append(list(sampler))
        assert len(shares[-1]) == len(sampler) == 1
    single = list(make_sampler(labels, strategy, seed=3, epochs=2))
    assert [share[0] for share in shares] == [single[i % len(single)] for i in range(replicas)]


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.array([0.5, 1.7, 1.2]), "expected integer class indices, found 0.5"),
        (np.array([0.0, np.nan]), "expected integer class indices, found nan"),
        (["a", "b"], "expected integer class indices"),
        (torch.tensor([0.0, 1.5]), "found 1.5"),
    ],
)
def test_labels_that_are_not_class_indices_are_refused(labels, message: str):
    with pytest.raises(DataError, match=message):
        make_sampler(labels, "instance")


def test_a_huge_label_or_class_count_is_refused_before_its_table_is_allocated():
    # make_sampler([0, 10**9], ...) counted 10**9 classes: 8 GB, killed for lack of memory.
    for labels, keywords in (([0, 10**9], {}), ([0, 1], {"num_classes": 10**9})):
        with pytest.raises(DataError, match=r"classes for 2 items; expected class indices 0 to C-1"):
            make_sampler(labels, "instance", **keywords)
    assert len(make_sampler([0, 99_999], "sqrt")) == 2  # empty classes are fine, up to the readers' bound


def test_integer_valued_float_labels_are_class_indices():
    assert list(make_sampler(np.array([0.0, 1.0, 1.0]), "class", seed=1)) == list(
        make_sampler([0, 1, 1], "class", seed=1)
    )


@pytest.mark.parametrize(
    "keywords, message",
    [
        ({"num_samples": 2.5}, "num_samples=2.5: expected an integer >= 1"),
        ({"num_samples": "3"}, "num_samples='3'"),
        ({"seed": -1}, "seed=-1: expected an integer >= 0"),
        ({"seed": None}, "seed=None"),
        ({"num_replicas": 2.0, "rank": 0}, "num_replicas=2.0"),
        ({"num_replicas": 2, "rank": 1.0}, r"rank=1.0: expected an integer in \[0, 2\)"),
        ({"num_classes": 3.0}, "num_classes=3.0"),
        ({"num_classes": -1}, "num_classes=-1: expected an integer >= 1"),
    ],
)
def test_sampler_arguments_of_the_wrong_type_are_named(keywords: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        make_sampler([0, 1, 1], "class", **keywords)


@pytest.mark.parametrize("epoch", [-1, 1.5, None])
def test_set_epoch_refuses_what_is_not_an_epoch(epoch):
    sampler = make_sampler([0, 1, 1], "sqrt")
    with pytest.raises(ConfigError, match=f"epoch={epoch!r}: expected an integer >= 0"):
        sampler.set_epoch(epoch)
    sampler.set_epoch(np.int64(2))  # a NumPy integer is an epoch
    assert len(list(sampler)) == 3


def test_progressive_and_class_aware_need_integer_settings():
    with pytest.raises(ConfigError, match="epochs=2.5"):
        make_sampler([0, 1], "progressive", epochs=2.5)
    with pytest.raises(ConfigError, match="num_samples_cls=2.5"):
        ClassAwareSampler([0, 1], num_samples_cls=2.5)
