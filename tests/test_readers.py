"""The dataset readers on real or generated files in the real formats, and the validation hold-out."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import longtail
from conftest import real_split
from datagen import write_cifar, write_filelist_dataset, write_imagefolder_dataset, write_list, write_npz
from longtail.cli import main
from longtail.config import load_config
from longtail.data import ImageFileDataset, TensorImageDataset, create_dataset, holdout_validation, longtail_counts
from longtail.data.filelist import class_names_from_paths, read_split_lines
from longtail.errors import ConfigError, DataError


def filelist_overrides(root: Path, lists: dict[str, Path], *extra: str) -> list[str]:
    keys = [f"data.filelist.{split}_list={path}" for split, path in lists.items()]
    return ["data.name=filelist", f"data.root={root}", "data.image_size=16", "data.resize=18", *keys, *extra]


# --- the validation hold-out ---------------------------------------------------------------


def test_holdout_takes_unused_images_first():
    labels = np.repeat(np.arange(3), 50)
    subset = np.concatenate([np.arange(0, 40), np.arange(50, 60), np.arange(100, 103)])
    held = holdout_validation(labels, subset, per_class=5, num_classes=3, seed=0)
    assert np.bincount(labels[held.val]).tolist() == [5, 5, 5]
    assert not set(held.val) & set(subset), "all three classes have unused images to spare"
    assert np.array_equal(held.train, np.sort(subset))
    assert (held.from_unused, held.from_train) == (15, 0)


def test_holdout_from_the_training_set_takes_at_most_a_fifth_and_never_the_last_image():
    labels = np.repeat(np.arange(5), [100, 20, 9, 5, 1])
    held = holdout_validation(labels, None, per_class=20, num_classes=5, seed=0)
    assert np.bincount(labels[held.val], minlength=5).tolist() == [20, 4, 1, 1, 0]
    assert np.bincount(labels[held.train], minlength=5).tolist() == [80, 16, 8, 4, 1]
    assert not set(held.val) & set(held.train)
    again = holdout_validation(labels, None, per_class=20, num_classes=5, seed=0)
    assert np.array_equal(again.val, held.val)


def test_holdout_mixes_sources_when_the_unused_images_run_short():
    labels = np.repeat(np.arange(2), 100)
    subset = np.concatenate([np.arange(0, 97), np.arange(100, 150)])  # class 0: 3 unused, class 1: 50
    held = holdout_validation(labels, subset, per_class=10, num_classes=2, seed=1)
    assert np.bincount(labels[held.val]).tolist() == [10, 10]
    assert np.bincount(labels[held.train]).tolist() == [90, 50]
    assert (held.from_unused, held.from_train) == (13, 7)


# --- filelist ------------------------------------------------------------------------------


def test_filelist_with_its_own_val_list(tmp_path: Path):
    lists = write_filelist_dataset(tmp_path, [12, 6, 3], test_per_class=4, val_per_class=2, size=20)
    splits = create_dataset(load_config(None, filelist_overrides(tmp_path, lists)).data)
    assert isinstance(splits.train, ImageFileDataset)
    assert splits.train_counts == [12, 6, 3]
    assert splits.val.labels.bincount().tolist() == [2, 2, 2] and len(splits.test) == 12
    assert splits.class_names == ["000", "001", "002"]  # the images' folder names
    assert splits.mean == (0.485, 0.456, 0.406)  # ImageNet statistics by default
    images, labels = splits.train.__getitems__([0, 1])
    assert images.shape == (2, 3, 16, 16) and labels.tolist() == splits.train.labels[:2].tolist()
    assert splits.train.per_item_augmentation and not splits.split("train").per_item_augmentation
    assert splits.info["val_source"] == "the dataset's own validation split"


def test_filelist_without_val_list_holds_out_of_training(tmp_path: Path):
    lists = write_filelist_dataset(tmp_path, [30, 10, 4], test_per_class=3, size=16)
    config = load_config(None, filelist_overrides(tmp_path, lists, "data.val_per_class=5"))
    splits = create_dataset(config.data)
    assert splits.val.labels.bincount(minlength=3).tolist() == [5, 2, 0]
    assert splits.train_counts == [25, 8, 4]
    train_paths = {splits.train.paths[i] for i in range(len(splits.train))}
    assert not any(splits.val.paths[i] in train_paths for i in range(len(splits.val)))
    assert "at most a fifth" in splits.info["val_source"]


def test_relative_lists_are_found_in_data_root(tmp_path: Path):
    lists = write_filelist_dataset(tmp_path, [5, 5], test_per_class=1, size=16)
    relative = {split: path.relative_to(tmp_path) for split, path in lists.items()}
    splits = create_dataset(load_config(None, filelist_overrides(tmp_path, relative)).data)
    assert len(splits.train) + len(splits.val) == 10


def test_filelist_warns_of_repeated_images_and_of_images_shared_between_splits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    lists = write_filelist_dataset(tmp_path, [8, 6, 5], test_per_class=2, val_per_class=1, size=16)
    with caplog.at_level("WARNING", logger="longtail"):
        create_dataset(load_config(None, filelist_overrides(tmp_path, lists)).data)
    assert caplog.text == ""  # a clean dataset: not a word
    train = lists["train"].read_text().splitlines()
    first, other = train[0].rsplit(" ", 1)[0], train[1].rsplit(" ", 1)[0]
    label = int(train[0].rsplit(" ", 1)[1])
    # Used as given before, silently: a repeated image counted twice, a training image scored as a test image.
    lists["train"].write_text("\n".join([*train, f"./{first} {label}", f"{first} {(label + 1) % 3}"]) + "\n")
    with open(lists["test"], "a") as handle:
        handle.write(f"{first} {label}\n{other} 0\n")
    with open(lists["val"], "a") as handle:
        handle.write(f"{lists['test'].read_text().splitlines()[0]}\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="longtail"):
        splits = create_dataset(load_config(None, filelist_overrides(tmp_path, lists)).data)
    assert sum(splits.train_counts) == len(train) + 2  # still used as listed
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        f"{lists['train']}: 2 entries repeat an image listed before, 1 with another label (first: {first!r}); "
        "each entry counts as one image (class sizes, training, scores)",
        f"{lists['test']}: 2 image(s) also listed in {lists['train']} (first: {first!r}); "
        "the test split should share none with the train split",
        f"{lists['test']}: 1 image(s) also listed in {lists['val']} "
        f"(first: {lists['test'].read_text().split()[0]!r}); the test split should share none with the val split",
    ]


@pytest.mark.parametrize(
    "line, message",
    [
        ("onlyapath\n", r"train\.txt:2: expected 'relative/path label', got 'onlyapath'"),
        ("a.jpg one\n", r"train\.txt:2: label 'one' is not an integer"),
        ("a.jpg -1\n", r"train\.txt:2: label -1, expected a class index >= 0"),
        # 4,300 digits or more: int() raised ValueError, a traceback
        ("a.jpg " + "9" * 5000 + "\n", r"train\.txt:2: label '9{40}\.\.\.', expected a class index 0 to 2\^31 - 1"),
        ("a.jpg -" + "9" * 5000 + "\n", r"train\.txt:2: label '-9{39}\.\.\.', expected a class index 0 to 2\^31"),
        ("a.jpg 00000000000000000003\n", None),  # leading zeros are still the number
    ],
)
def test_malformed_split_lines_name_file_and_line(tmp_path: Path, line: str, message: str):
    (tmp_path / "train.txt").write_text("img/a.jpg 0\n" + line)
    if message is None:
        assert read_split_lines(tmp_path / "train.txt")[1].tolist() == [0, 3]
        return
    with pytest.raises(DataError, match=message):
        read_split_lines(tmp_path / "train.txt")


def test_a_split_file_not_in_utf8_names_its_line(tmp_path: Path):
    # Latin-1 (a Windows editor's default): the message named neither the line nor what was expected.
    (tmp_path / "train.txt").write_bytes("a.jpg 0\r\nb.jpg 1\r\ncaf\xe9.jpg 1\r\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train\.txt:3: not UTF-8 text; expected a split file in UTF-8"):
        read_split_lines(tmp_path / "train.txt")
    (tmp_path / "mac.txt").write_bytes("\ufeffa.jpg 0\rcaf\xe9.jpg 1\r".encode())  # a BOM, old Mac line ends
    paths, labels = read_split_lines(tmp_path / "mac.txt")
    assert paths == ["a.jpg", "café.jpg"] and labels.tolist() == [0, 1]


def test_filelist_errors_name_what_is_wrong(tmp_path: Path):
    lists = write_filelist_dataset(tmp_path, [3, 3], test_per_class=1, size=16)
    with pytest.raises(DataError, match=r"data\.filelist\.test_list is not set"):
        create_dataset(load_config(None, filelist_overrides(tmp_path, {"train": lists["train"]})).data)
    with pytest.raises(
        DataError, match=r"lists/train/\d+/img_\d+\.jpg: not found \(first image of .*train\.txt\); data\.root"
    ):
        create_dataset(load_config(None, filelist_overrides(tmp_path / "lists", lists)).data)
    with pytest.raises(DataError, match=r"data\.filelist\.train_list='nope\.txt': split file not found"):
        create_dataset(load_config(None, filelist_overrides(tmp_path, {**lists, "train": Path("nope.txt")})).data)
    write_list(tmp_path / "bad_test.txt", [("test/000/x.jpg", 7)])
    with pytest.raises(DataError, match=r"bad_test\.txt: label 7, but the training split has classes 0 to 1"):
        create_dataset(
            load_config(None, filelist_overrides(tmp_path, {**lists, "test": tmp_path / "bad_test.txt"})).data
        )
    first, second = (line.split()[0] for line in lists["train"].read_text().splitlines()[:2])
    write_list(tmp_path / "gap.txt", [(first, 0), (second, 2)])
    with pytest.raises(DataError, match=r"class 1 has no training image"):
        create_dataset(load_config(None, filelist_overrides(tmp_path, {**lists, "train": tmp_path / "gap.txt"})).data)


@pytest.mark.parametrize(
    "name, classes, per_class, first_class",
    [
        ("ImageNet_LT_val.txt", 1000, 20, "n01440764"),
        ("ImageNet_LT_test.txt", 1000, 50, "n01440764"),
        ("Places_LT_val.txt", 365, 20, "airfield"),
        ("Places_LT_test.txt", 365, 100, "airfield"),
        ("iNaturalist18_val.txt", 8142, 3, "0"),
    ],
)
def test_real_split_files(name: str, classes: int, per_class: int, first_class: str):
    paths, labels = read_split_lines(real_split(name))
    assert np.bincount(labels).tolist() == [per_class] * classes
    assert class_names_from_paths(paths, labels, classes)[0] == first_class


# --- imagefolder ---------------------------------------------------------------------------


def test_imagefolder_sorts_class_names_and_holds_out_val(tmp_path: Path):
    names = ["zebra", "ant", "Moth"]
    write_imagefolder_dataset(tmp_path, names, [10, 5, 6], test_per_class=2)
    config = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}", "data.image_size=16"])
    splits = create_dataset(config.data)
    assert splits.class_names == ["Moth", "ant", "zebra"]  # sorted as Python sorts strings
    assert splits.train_counts == [5, 4, 8] and splits.val.labels.bincount().tolist() == [1, 1, 2]
    assert splits.test.labels.bincount().tolist() == [2, 2, 2]
    assert splits.split("test")[0][0].shape == (3, 16, 16)


def test_imagefolder_with_val_and_its_errors(tmp_path: Path):
    write_imagefolder_dataset(tmp_path, ["a", "b"], [4, 3], test_per_class=1, val_per_class=2, fmt="jpg")
    config = load_config(None, ["data.name=imagefolder", f"data.root={tmp_path}"])
    splits = create_dataset(config.data)
    assert splits.train_counts == [4, 3] and len(splits.val) == 4
    (tmp_path / "val" / "c").mkdir()
    with pytest.raises(DataError, match=r"val/c: class folder not in .*train"):
        create_dataset(config.data)
    with pytest.raises(DataError, match=r"nothere/train: folder not found"):
        create_dataset(load_config(None, ["data.name=imagefolder", f"data.root={tmp_path / 'nothere'}"]).data)


# --- CIFAR ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, "cifar10", train_per_class=60, test_per_class=5)
    write_cifar(root, "cifar100", train_per_class=12, test_per_class=2)
    return root


def test_cifar10_lt_from_pickles(cifar_root: Path):
    overrides = ["data.name=cifar10_lt", f"data.root={cifar_root}", "data.n_max=50", "data.imbalance_factor=10"]
    splits = create_dataset(load_config(None, [*overrides, "data.val_per_class=5"]).data)
    assert isinstance(splits.train, TensorImageDataset) and splits.train.image_shape == (3, 32, 32)
    assert splits.train_counts == longtail_counts(10, 50, 10)
    assert splits.val.labels.bincount().tolist() == [5] * 10 and len(splits.test) == 50
    assert splits.class_names[3] == "class3" and splits.info["subset_images"] == sum(longtail_counts(10, 50, 10))
    again = create_dataset(load_config(None, [*overrides, "data.val_per_class=5"]).data)
    assert torch.equal(again.train.images, splits.train.images)
    reseeded = create_dataset(load_config(None, [*overrides, "data.val_per_class=5", "data.seed=1"]).data)
    assert not torch.equal(reseeded.train.images, splits.train.images)


def test_cifar_rows_are_read_as_rgb_planes(cifar_root: Path):
    with open(cifar_root / "cifar-10-batches-py" / "test_batch", "rb") as handle:
        batch = pickle.load(handle, encoding="bytes")
    config = load_config(None, ["data.name=cifar10_lt", f"data.root={cifar_root}", "data.n_max=50"])
    test = create_dataset(config.data).test
    row = batch[b"data"][0]
    assert torch.equal(test.images[0], torch.from_numpy(row.reshape(3, 32, 32)))
    assert test.labels[0] == batch[b"labels"][0]


def test_cifar100_lt_whole_largest_class_gives_val_from_its_own_images(cifar_root: Path):
    config = load_config(
        None,
        [
            "data.name=cifar100_lt",
            f"data.root={cifar_root / 'cifar-100-python'}",
            "data.n_max=12",
            "data.val_per_class=1",
        ],
    )
    splits = create_dataset(config.data)
    counts = longtail_counts(100, 12, 100)
    # Class 0 uses all 12 of its images, so its validation image comes out of them; the others have spares.
    assert splits.train_counts == [counts[0] - 1, *counts[1:]]
    assert splits.val.labels.bincount(minlength=100).tolist() == [1] * 100
    assert "1 from the training set itself" in splits.info["val_source"]
    assert splits.class_names[:2] == ["fine0", "fine1"]


def test_cifar_errors(cifar_root: Path, tmp_path: Path):
    with pytest.raises(DataError, match=r"data\.n_max=5000: cifar10 has only 60 .*uses data\.n_max=5000"):
        create_dataset(load_config(None, ["data.name=cifar10_lt", f"data.root={cifar_root}", "data.n_max=5000"]).data)
    with pytest.raises(DataError, match=r"cifar-10-batches-py: CIFAR folder not found .*cifar-10-python\.tar\.gz"):
        create_dataset(load_config(None, ["data.name=cifar10_lt", f"data.root={tmp_path}"]).data)
    with pytest.raises(ConfigError, match=r"data\.augment='imagenet': .*file-based reader"):
        create_dataset(
            load_config(
                None, ["data.name=cifar10_lt", f"data.root={cifar_root}", "data.augment=imagenet", "data.n_max=50"]
            ).data
        )


def test_cifar_pickles_cannot_run_code(tmp_path: Path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": Exploit()}, handle, protocol=2)
    with pytest.raises(DataError, match=r"data_batch_1: file not found"):
        create_dataset(load_config(None, ["data.name=cifar10_lt", f"data.root={tmp_path}"]).data)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes((folder / "test_batch").read_bytes())
    with pytest.raises(DataError, match=r"data_batch_1: not a CIFAR python pickle \(refusing to load \w+\.print\)"):
        create_dataset(load_config(None, ["data.name=cifar10_lt", f"data.root={tmp_path}"]).data)


@pytest.mark.slow
def test_cifar_lt_benchmark_sizes(tmp_path: Path):
    write_cifar(tmp_path, "cifar10", train_per_class=5000, test_per_class=1)
    write_cifar(tmp_path, "cifar100", train_per_class=500, test_per_class=1)
    for name, n_max, images in (("cifar10_lt", 5000, 12406), ("cifar100_lt", 500, 10847)):
        config = load_config(None, [f"data.name={name}", f"data.root={tmp_path}", f"data.n_max={n_max}"])
        splits = create_dataset(config.data)
        assert splits.info["subset_images"] == images
        # The largest class is used whole, so its 20 validation images come out of training.
        assert sum(splits.train_counts) == images - 20
        assert splits.train_counts[-1] == n_max // 100


# --- npz -----------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_npz_shapes_and_holdout(tmp_path: Path, channels: int | None):
    path = write_npz(tmp_path / "d.npz", [20, 10, 5], test_per_class=3, size=8, channels=channels)
    splits = create_dataset(load_config(None, ["data.name=npz", f"data.path={path}"]).data)
    assert splits.train.image_shape == (channels or 1, 8, 8)
    assert splits.val.labels.bincount().tolist() == [4, 2, 1] and splits.train_counts == [16, 8, 4]
    assert len(splits.mean) == (channels or 1) and splits.class_names == ["0", "1", "2"]


def test_npz_with_its_own_val(tmp_path: Path):
    path = write_npz(tmp_path / "d.npz", [6, 3], test_per_class=2, val_per_class=2)
    splits = create_dataset(load_config(None, ["data.name=npz", f"data.path={path}"]).data)
    assert splits.train_counts == [6, 3] and len(splits.val) == 4


def test_npz_errors(tmp_path: Path):
    with pytest.raises(DataError, match=r"data\.path is not set"):
        create_dataset(load_config(None, ["data.name=npz"]).data)
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((2, 4, 4), np.float32), y_train=np.zeros(2, int), x_test=np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match=r"bad\.npz: no array 'y_test'"):
        create_dataset(load_config(None, ["data.name=npz", f"data.path={bad}"]).data)
    np.savez(
        bad,
        x_train=np.zeros((2, 4, 4), np.float32),
        y_train=np.zeros(2, int),
        x_test=np.zeros((1, 4, 4)),
        y_test=np.zeros(1, int),
    )
    with pytest.raises(DataError, match=r"bad\.npz: x_train is float32 of shape \(2, 4, 4\), expected uint8"):
        create_dataset(load_config(None, ["data.name=npz", f"data.path={bad}"]).data)
    np.savez(
        bad,
        x_train=np.zeros((2, 4, 4), np.uint8),
        y_train=np.zeros(2, int),
        x_test=np.zeros((1, 4, 4), np.uint8),
        y_test=np.array([3]),
    )
    with pytest.raises(DataError, match=r"y_test holds label 3, but y_train has labels 0 to 0"):
        create_dataset(load_config(None, ["data.name=npz", f"data.path={bad}"]).data)
    with pytest.raises(DataError, match=r"missing\.npz: \.npz file not found"):
        create_dataset(load_config(None, ["data.name=npz", f"data.path={tmp_path / 'missing.npz'}"]).data)


# --- end to end ----------------------------------------------------------------------------


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
def test_tiny_imbalanced_filelist_trains_and_decouples_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture):
    # Three images in the rarest class: no validation image for it, and everything still runs.
    lists = write_filelist_dataset(tmp_path / "data", [40, 16, 8, 3], test_per_class=4, size=16)
    overrides = filelist_overrides(
        tmp_path / "data",
        lists,
        "data.augment=cifar",
        "train.epochs=2",
        "train.batch_size=16",
        "decouple.crt.epochs=2",
        "decouple.lws.epochs=2",
        "eval.many=20",
        "eval.few=5",
        "data.val_per_class=4",
    )
    assert main(["train", *overrides, "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert main(["decouple", str(tmp_path / "run"), "--method", "all"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["train_counts"] == [36, 13, 7, 3]
    assert {"joint", "crt", "tau_norm", "lws", "ncm"} <= set(results["methods"])
    assert results["dataset"] == "filelist:train"
    assert "ncm" in capsys.readouterr().out.lower()


@pytest.mark.slow
def test_decoupled_methods_beat_joint_on_generated_long_tailed_images(tmp_path: Path):
    counts = longtail_counts(10, 200, 50)  # 190 ... 4 training images per class
    lists = write_filelist_dataset(tmp_path / "data", counts, test_per_class=30, size=16, noise=120)
    overrides = filelist_overrides(
        tmp_path / "data", lists, "data.resize=16", "data.augment=cifar", "data.val_per_class=10",
        "train.epochs=5", "train.batch_size=32", "train.lr=0.05", "decouple.crt.batch_size=32",
        "decouple.lws.batch_size=32", "eval.batch_size=256",
    )  # fmt: skip
    longtail.train(load_config(None, overrides), tmp_path / "run", progress=False)
    methods = longtail.decouple(tmp_path / "run", ["crt", "tau_norm", "lws", "ncm"])["methods"]
    joint = methods["joint"]["macro"]
    for method in ("crt", "tau_norm", "lws", "ncm"):
        assert methods[method]["macro"] > joint, (method, methods[method]["macro"], joint)
