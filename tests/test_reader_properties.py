"""Property-based tests of the readers: random split files and ``.npz`` files either load correctly or raise
:class:`~longtail.errors.LongtailError`, never anything else.

Hypothesis draws the files; ``derandomize=True`` makes every run (and CI) try the same examples.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from datagen import class_images
from longtail.config import load_config
from longtail.data import create_dataset, read_split_lines
from longtail.errors import DataError, LongtailError

PROPERTY = settings(
    max_examples=80, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)

# --- split files ---------------------------------------------------------------------------

# Python's whitespace (what str.split and str.strip use), which may surround fields.
WHITESPACE = [c for c in map(chr, range(0x3000 + 1)) if c.isspace() and c not in "\n\r"]
# A path: anything but a line break (or a byte-order mark, which would vanish at the start of a file);
# spaces and digits inside it are fine, it just cannot start or end with whitespace.
paths = (
    st.text(st.characters(blacklist_characters="\n\r\ufeff", blacklist_categories=("Cs",)), min_size=1, max_size=16)
    .map(str.strip)
    .filter(bool)
)
separators = st.text(st.sampled_from([" ", "\t", *WHITESPACE[:8]]), min_size=1, max_size=3)
margins = st.text(st.sampled_from([" ", "\t"]), max_size=2)
tokens = st.text(st.characters(blacklist_categories=("Cs",)).filter(lambda c: not c.isspace()), min_size=1, max_size=8)


@st.composite
def valid_lines(draw: st.DrawFn) -> tuple[str, str, tuple[str, int]]:
    path, label = draw(paths), draw(st.integers(0, 40))
    digits = str(label).zfill(draw(st.integers(1, 3)))  # leading zeros are still the number
    return "valid", f"{draw(margins)}{path}{draw(separators)}{digits}{draw(margins)}", (path, label)


@st.composite
def invalid_lines(draw: st.DrawFn) -> tuple[str, str, None]:
    kind = draw(st.sampled_from(["no label", "not an integer", "negative", "too large", "extra field"]))
    path, sep = draw(paths), draw(separators)
    if kind == "no label":
        line = draw(tokens)
    elif kind in ("not an integer", "extra field"):
        # A character that no ASCII integer holds makes sure the word is not one (int() would take "٣").
        word = draw(tokens) + draw(st.sampled_from(["x", ".", "_", "٣", "é", "+"]))
        line = f"{path}{sep}{word}" if kind == "not an integer" else f"{path}{sep}{draw(st.integers(0, 9))}{sep}{word}"
    elif kind == "negative":
        line = f"{path}{sep}-{draw(st.integers(1, 10**6))}"
    else:
        line = f"{path}{sep}{draw(st.integers(2**31, 10**30))}"
    return kind, line, None


blank_lines = st.sampled_from(["", " ", "\t", " \t "]).map(lambda text: ("blank", text, None))


@st.composite
def split_files(draw: st.DrawFn, malformed: bool = True) -> tuple[str, list[tuple[str, str, tuple[str, int] | None]]]:
    """The text of a split file and, per line, (kind, text, (path, label) when valid); ``malformed`` lines or not."""
    kinds = [valid_lines(), valid_lines(), valid_lines(), blank_lines] + ([invalid_lines()] if malformed else [])
    weights = st.sampled_from(kinds)
    lines = draw(st.lists(weights.flatmap(lambda strategy: strategy), max_size=12))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(text for _, text, _ in lines) + draw(st.sampled_from(["", newline]))
    return ("\ufeff" if draw(st.booleans()) else "") + text, lines


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


@PROPERTY
@given(split_files())
def test_split_files_load_exactly_or_name_the_first_bad_line(scratch: Path, drawn: tuple) -> None:
    text, lines = drawn
    path = scratch / "split.txt"
    path.write_text(text, encoding="utf-8")
    first_bad = next((number for number, (kind, _, _) in enumerate(lines, 1) if kind not in ("valid", "blank")), None)
    expected = [entry for kind, _, entry in lines if kind == "valid"]
    event("a bad line" if first_bad else "no entries" if not expected else "loaded")
    if first_bad is not None:
        with pytest.raises(DataError, match=f"^{re.escape(str(path))}:{first_bad}: "):
            read_split_lines(path)
    elif not expected:
        with pytest.raises(DataError, match="split file has no entries"):
            read_split_lines(path)
    else:
        read_paths, labels = read_split_lines(path)
        assert labels.dtype == np.int64
        assert list(zip(read_paths, labels.tolist(), strict=True)) == expected


@st.composite
def damaged_bytes(draw: st.DrawFn) -> bytes:
    """A split file's UTF-8 bytes with a few bytes overwritten, inserted or deleted; or plain random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=200))
    data = bytearray(draw(split_files(malformed=False))[0].encode("utf-8"))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.integers(0, len(data)))
        byte = draw(st.integers(0, 255))
        how = draw(st.sampled_from(["set", "insert", "delete"]))
        if how == "insert" or not data:
            data.insert(where, byte)
        elif how == "set":
            data[min(where, len(data) - 1)] = byte
        else:
            del data[min(where, len(data) - 1)]
    return bytes(data)


@PROPERTY
@given(damaged_bytes())
def test_damaged_bytes_as_a_split_file(scratch: Path, data: bytes) -> None:
    path = scratch / "bytes.txt"
    path.write_bytes(data)
    try:
        read_paths, labels = read_split_lines(path)
    except LongtailError:
        event("refused")
        return
    event("loaded")
    assert len(read_paths) == len(labels) > 0 and all(read_paths) and (labels >= 0).all()


# --- the filelist reader over real image files ----------------------------------------------------


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, int]]]:
    """Six 8x8 PNGs of each of three classes, a test list of one per class, and the (path, label) pairs."""
    root = tmp_path_factory.mktemp("images")
    pairs = []
    labels = np.repeat(np.arange(3), 7)
    for i, (label, array) in enumerate(zip(labels, class_images(labels, 8, seed=0), strict=True)):
        rel = f"c{label}/ü {i}.png"  # a space and a non-ASCII letter in every path
        (root / rel).parent.mkdir(exist_ok=True)
        Image.fromarray(array).save(root / rel)
        pairs.append((rel, int(label)))
    test = [pairs[6], pairs[13], pairs[20]]  # one per class, not used for training below
    (root / "test.txt").write_text("".join(f"{rel} {label}\n" for rel, label in test))
    return root, [p for p in pairs if p not in test]


@st.composite
def listings(draw: st.DrawFn) -> list[int | tuple[str, int]]:
    """Indices of existing images (repeats allowed), with zero to three missing images (of class 0-2) among them."""
    chosen: list[int | tuple[str, int]] = draw(st.lists(st.integers(0, 17), min_size=6, max_size=24))
    for _ in range(draw(st.sampled_from([0, 0, 1, 3]))):
        chosen.insert(draw(st.integers(0, len(chosen))), ("missing", draw(st.integers(0, 2))))
    return chosen


@pytest.mark.slow  # seconds of subprocesses or training; `make test` runs it (the fast suite keeps under 3 minutes)
@PROPERTY
@given(chosen=listings(), skip_bad=st.booleans())
def test_filelist_keeps_exactly_the_readable_listed_images(image_root, scratch: Path, chosen, skip_bad: bool) -> None:
    root, pairs = image_root
    listed = [pairs[c] if isinstance(c, int) else (f"gone/{c[1]}.png", c[1]) for c in chosen]
    train = scratch / "train.txt"
    train.write_text("".join(f"{rel} {label}\n" for rel, label in listed))
    overrides = [
        f"data.root={root}",
        f"data.filelist.train_list={train}",
        f"data.filelist.test_list={root / 'test.txt'}",
    ]
    sizes = ["data.image_size=8", "data.resize=8", "data.val_per_class=1", "data.decode_threads=1"]
    config = load_config(None, ["data.name=filelist", *overrides, *sizes, f"data.skip_bad={skip_bad}"])
    readable = [(rel, label) for rel, label in listed if not rel.startswith("gone/")]
    counts = Counter(label for _, label in readable)
    must_load = (skip_bad or len(readable) == len(listed)) and set(counts) == {0, 1, 2} and max(counts.values()) >= 5
    try:
        splits = create_dataset(config.data)
    except LongtailError as error:
        assert not must_load, f"refused a loadable list: {error}"
        event("refused")
        # Labels that cover the classes pass the list checks, so the first missing image is what is named.
        if not skip_bad and len(readable) < len(listed) and {label for _, label in listed} == {0, 1, 2}:
            first_missing = next(rel for rel, _ in listed if rel.startswith("gone/"))
            assert str(error).startswith(f"{root / first_missing}: not found")
        return
    event("loaded, images skipped" if len(readable) < len(listed) else "loaded")
    kept = Counter(
        (part.paths[i], int(part.labels[i])) for part in (splits.train, splits.val) for i in range(len(part))
    )
    assert kept == Counter(readable)
    assert splits.num_classes == 3 and len(splits.test) == 3
    skipped = [(item["path"], item["problem"]) for item in splits.info.get("skipped_images", [])]
    assert skipped == [(rel, "not found") for rel, _ in listed if rel.startswith("gone/")]


# --- .npz files ----------------------------------------------------------------------------


@st.composite
def valid_npz(draw: st.DrawFn) -> dict[str, np.ndarray]:
    """A loadable dataset: 2 or 3 classes (one class is refused), each with 5 to 7 training images (so validation
    can be held out)."""
    num_classes = draw(st.integers(2, 3))
    size = draw(st.integers(1, 5))
    channels = draw(st.sampled_from([None, 1, 3, 4]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def split(per_class: list[int]) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(num_classes), per_class))
        shape = (len(labels), size, size) + (() if channels is None else (channels,))
        return rng.integers(0, 256, shape, dtype=np.uint8), labels

    counts = [draw(st.integers(5, 7)) for _ in range(num_classes)]
    arrays = dict(zip(("x_train", "y_train"), split(counts), strict=True))
    arrays.update(zip(("x_test", "y_test"), split([draw(st.integers(1, 2))] * num_classes), strict=True))
    if draw(st.booleans()):
        arrays.update(zip(("x_val", "y_val"), split([1] * num_classes), strict=True))
    if draw(st.booleans()):
        arrays["class_names"] = np.array([f"class {c}" for c in range(num_classes)])
    return arrays


def _mutate(draw: st.DrawFn, arrays: dict[str, np.ndarray]) -> str:
    """Damage one array in place; returns what was done (for the failure report)."""
    if not arrays:
        return "nothing left"
    key = draw(st.sampled_from(sorted(arrays)))
    value = arrays[key]
    how = draw(
        st.sampled_from(
            ["drop", "dtype", "rank up", "rank down", "shorter", "empty", "label", "object", "scalar", "strings"]
        )
    )
    if value.ndim == 0:  # an earlier "scalar": nothing to cut or index
        how = "drop"
    if how == "drop":
        del arrays[key]
    elif how == "dtype":
        dtype = draw(st.sampled_from([np.float32, np.float64, np.int8, np.int16, np.uint64, np.bool_]))
        try:
            arrays[key] = value.astype(dtype)
        except (TypeError, ValueError):  # strings do not become numbers
            del arrays[key]
    elif how == "rank up":
        arrays[key] = value[..., None, None]
    elif how == "rank down":
        rows = value.reshape(len(value), int(np.prod(value.shape[1:])))  # also for zero-sized shapes
        arrays[key] = rows[:, 0] if rows.shape[1] else np.zeros(len(value), value.dtype)
    elif how == "shorter":
        arrays[key] = value[:-1]
    elif how == "empty":
        arrays[key] = value[:0]
    elif how == "label" and value.dtype.kind in "iu" and value.ndim == 1 and len(value):
        changed = value.astype(np.int64)
        changed[draw(st.integers(0, len(value) - 1))] = draw(
            st.sampled_from([-1, -(2**40), int(value.max()) + 1, 2**40])
        )
        arrays[key] = changed
    elif how == "object":
        arrays[key] = value.astype(object)
    elif how == "scalar":
        arrays[key] = np.array(draw(st.integers(-3, 3)))
    elif how == "strings":
        arrays[key] = np.array(["a"] * max(len(value), 1))
    return f"{how} {key}"


@st.composite
def npz_files(draw: st.DrawFn) -> tuple[dict[str, np.ndarray], list[str]]:
    arrays = draw(valid_npz())
    done = [_mutate(draw, arrays) for _ in range(draw(st.integers(0, 2)))]
    return arrays, done


def _rows(images, labels) -> Counter:
    """A multiset of (image bytes, label) pairs."""
    return Counter((np.asarray(image).tobytes(), int(label)) for image, label in zip(images, labels, strict=True))


def _as_nchw(images: np.ndarray) -> np.ndarray:
    return images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)


@PROPERTY
@given(npz_files())
def test_npz_loads_what_was_written_or_raises_our_error(scratch: Path, drawn: tuple) -> None:
    arrays, mutations = drawn
    path = scratch / "data.npz"
    np.savez(path, **arrays)
    config = load_config(None, ["data.name=npz", f"data.path={path}", "data.val_per_class=1"])
    try:
        splits = create_dataset(config.data)
    except LongtailError as error:
        assert mutations, f"a valid file was refused: {error}"
        event("refused")
        return
    event("loaded after damage" if mutations else "loaded")
    y_train = arrays["y_train"]
    assert splits.num_classes == int(y_train.max()) + 1
    assert splits.test.images.numpy().tobytes() == _as_nchw(arrays["x_test"]).tobytes()
    assert splits.test.labels.tolist() == arrays["y_test"].tolist()
    if "x_val" in arrays:
        assert _rows(splits.val.images.numpy(), splits.val.labels) == _rows(_as_nchw(arrays["x_val"]), arrays["y_val"])
        assert _rows(splits.train.images.numpy(), splits.train.labels) == _rows(_as_nchw(arrays["x_train"]), y_train)
    else:  # the validation images are held out of the training images
        pooled = _rows(splits.train.images.numpy(), splits.train.labels) + _rows(
            splits.val.images.numpy(), splits.val.labels
        )
        assert pooled == _rows(_as_nchw(arrays["x_train"]), y_train)
    if "class_names" in arrays:
        assert splits.class_names == [str(n) for n in arrays["class_names"]]
