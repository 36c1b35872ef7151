import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from longtail.config import load_config
from longtail.data import (
    BatchTransform,
    balanced_holdout,
    channel_stats,
    create_dataset,
    longtail_counts,
    longtail_subset,
    read_idx,
    write_idx,
)
from longtail.errors import ConfigError, DataError


def test_exp_counts_of_the_demo():
    assert longtail_counts(10, 1000, 100) == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]


def test_cifar_lt_totals():
    assert sum(longtail_counts(10, 5000, 100)) == 12406
    assert sum(longtail_counts(100, 500, 100)) == 10847


def test_step_profile():
    assert longtail_counts(4, 100, 10, "step") == [100, 100, 10, 10]
    assert longtail_counts(5, 100, 10, "step") == [100, 100, 10, 10, 10]


def test_counts_edge_cases():
    assert longtail_counts(1, 50, 10) == [50]
    assert longtail_counts(3, 50, 1) == [50, 50, 50]
    with pytest.raises(ConfigError, match="imbalance_factor"):
        longtail_counts(10, 100, 0.5)
    with pytest.raises(ConfigError, match="profile"):
        longtail_counts(10, 100, 10, "linear")


@pytest.mark.parametrize(
    "args, message",
    [
        ((10.5, 100, 10), r"num_classes=10\.5: expected an integer >= 1"),
        (("10", 100, 10), r"num_classes='10': expected an integer >= 1"),
        ((10, 100.0, 10), r"n_max=100\.0: expected an integer >= 1"),
        ((10, 100, float("nan")), r"imbalance_factor=nan: expected a number >= 1"),
        ((10, 100, float("inf")), r"imbalance_factor=inf: expected a number >= 1"),
    ],
)
def test_counts_of_the_wrong_type_are_a_config_error(args, message):
    """README's ``longtail_counts``: these raised Python's TypeError / ValueError mid-formula (inf gave every
    class but the first 0 images)."""
    with pytest.raises(ConfigError, match=f"^{message}$"):
        longtail_counts(*args)


def test_subset_is_seeded_and_exact():
    labels = np.repeat(np.arange(3), 10)
    counts = [10, 5, 2]
    subset = longtail_subset(labels, counts, seed=0)
    assert np.bincount(labels[subset]).tolist() == counts
    assert np.array_equal(subset, longtail_subset(labels, counts, seed=0))
    assert not np.array_equal(subset, longtail_subset(labels, counts, seed=1))
    with pytest.raises(DataError, match="class 2: 11 images wanted"):
        longtail_subset(labels, [1, 1, 11], seed=0)


def test_holdout_is_balanced_and_from_the_pool():
    labels = np.repeat(np.arange(3), 10)
    pool = np.setdiff1d(np.arange(30), longtail_subset(labels, [8, 4, 2], seed=0))
    held = balanced_holdout(labels, pool, per_class=2, num_classes=3, seed=1)
    assert np.bincount(labels[held]).tolist() == [2, 2, 2]
    assert set(held) <= set(pool)
    with pytest.raises(DataError, match="class 0: 3 validation images wanted, only 2"):
        balanced_holdout(labels, pool, per_class=3, num_classes=3, seed=1)


def test_idx_round_trip(tmp_path: Path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.gz", "b"):
        write_idx(tmp_path / name, array)
        assert np.array_equal(read_idx(tmp_path / name), array)


def test_idx_errors_name_the_file(tmp_path: Path):
    with pytest.raises(DataError, match="missing.gz: file not found"):
        read_idx(tmp_path / "missing.gz")
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DataError, match="junk: not an IDX file"):
        read_idx(tmp_path / "junk")
    write_idx(tmp_path / "t.gz", np.zeros((4, 5), dtype=np.uint8))
    raw = gzip.decompress((tmp_path / "t.gz").read_bytes())
    (tmp_path / "short").write_bytes(raw[:-3])
    with pytest.raises(DataError, match="short: IDX body has 17 bytes"):
        read_idx(tmp_path / "short")


def test_fashion_mnist_lt_from_generated_files(tiny_fmnist: Path):
    config = load_config(
        None, [f"data.root={tiny_fmnist}", "data.n_max=40", "data.imbalance_factor=10", "data.val_per_class=5"]
    )
    splits = create_dataset(config.data)
    assert splits.train_counts == longtail_counts(10, 40, 10)
    assert np.bincount(splits.val.labels.numpy()).tolist() == [5] * 10
    assert len(splits.test) == 200
    assert splits.train.image_shape == (1, 28, 28)
    # The validation images are training images outside the long-tailed subset.
    train_rows = {bytes(img.numpy()) for img in splits.train.images}
    assert not any(bytes(img.numpy()) in train_rows for img in splits.val.images)
    again = create_dataset(config.data)
    assert torch.equal(again.train.images, splits.train.images)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path: Path):
    config = load_config(None, [f"data.root={tmp_path}"])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: Fashion-MNIST file not found; install Debian"):
        create_dataset(config.data)
    config = load_config(None, [f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(DataError, match="nope: Fashion-MNIST directory not found"):
        create_dataset(config.data)


def test_real_fashion_mnist_lt(real_fmnist: Path):
    splits = create_dataset(load_config().data)
    assert splits.train_counts == [1000, 599, 359, 215, 129, 77, 46, 27, 16, 10]
    assert np.bincount(splits.val.labels.numpy()).tolist() == [20] * 10
    assert np.bincount(splits.test.labels.numpy()).tolist() == [1000] * 10
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[9] == "Ankle boot"


def test_channel_stats():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 2, 2).contiguous()
    mean, std = channel_stats(images)
    assert mean == pytest.approx((0.5,))
    assert std[0] == pytest.approx(np.std([0, 0, 0, 0, 1, 1, 1, 1], ddof=1))


def test_transform_normalises_without_augmentation():
    images = torch.full((2, 1, 3, 3), 51, dtype=torch.uint8)
    out = BatchTransform((0.1,), (0.5,))(images)
    assert out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (0.2 - 0.1) / 0.5))


def test_random_crop_is_a_shifted_window_and_seeded():
    image = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
    crop = BatchTransform((0.0,), (1.0,), crop_padding=1, generator=torch.Generator().manual_seed(0))
    out = (crop(image) * 255).round().to(torch.uint8)
    padded = torch.nn.functional.pad(image[0, 0], (1, 1, 1, 1))
    windows = [padded[r : r + 4, c : c + 4] for r in range(3) for c in range(3)]
    for sample in out[:, 0]:
        assert any(torch.equal(sample, w) for w in windows)
    again = BatchTransform((0.0,), (1.0,), crop_padding=1, generator=torch.Generator().manual_seed(0))(image)
    assert torch.equal((again * 255).round().to(torch.uint8), out)


def test_flip_flips_about_half():
    image = torch.arange(4, dtype=torch.uint8).view(1, 1, 1, 4).repeat(400, 1, 1, 1)
    out = BatchTransform((0.0,), (1.0,), hflip=True, generator=torch.Generator().manual_seed(0))(image)
    flipped = (out[:, 0, 0, 0] > out[:, 0, 0, 3]).float().mean()
    assert 0.4 < float(flipped) < 0.6


def test_out_of_range_labels_name_the_file(tiny_fmnist: Path, tmp_path: Path):
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (tmp_path / name).write_bytes((tiny_fmnist / name).read_bytes())
    labels = read_idx(tiny_fmnist / "train-labels-idx1-ubyte.gz").copy()
    labels[3] = 12
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz: label 12, expected 0 to 9"):
        create_dataset(load_config(None, [f"data.root={tmp_path}"]).data)
