"""The Pillow + torch image pipeline, on real JPEG and PNG files written by Pillow."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from datagen import labels_for, write_images
from longtail.data import CenterCrop, ImageFileDataset, PadCrop, PathTable, RandomResizedCrop, keep_batch
from longtail.data.image_transforms import center_crop_box, color_jitter, crop_resize, random_resized_crop_box
from longtail.engine.loops import make_loader
from longtail.errors import DataError
from longtail.samplers import make_sampler


def gradient_image(width: int, height: int) -> Image.Image:
    """Red encodes the column, green the row: a picture whose geometry can be read back."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], axis=2).round().astype(np.uint8))


def test_random_resized_crop_box_stays_in_its_ranges():
    rng = np.random.default_rng(0)
    for _ in range(500):
        left, top, w, h = random_resized_crop_box(500, 375, rng)
        assert 0 <= left and left + w <= 500 and 0 <= top and top + h <= 375
        # Rounding w and h to pixels moves area and ratio slightly past the drawn values.
        assert 0.08 * 0.97 <= w * h / (500 * 375) <= 1.0
        assert 0.75 * 0.97 <= w / h <= 4 / 3 * 1.03


def test_random_resized_crop_falls_back_to_a_centred_crop_on_elongated_images():
    left, top, w, h = random_resized_crop_box(1000, 10, np.random.default_rng(0), scale=(0.9, 1.0))
    assert (w, h) == (13, 10) and top == 0 and left == pytest.approx((1000 - 13) / 2)


def test_center_crop_box_is_resize_then_crop():
    left, top, w, h = center_crop_box(500, 375, resize=256, size=224)
    side = 224 * 375 / 256  # 224 output pixels in source pixels
    assert (w, h) == pytest.approx((side, side))
    assert (left, top) == pytest.approx(((500 - side) / 2, (375 - side) / 2))


def test_test_transform_reads_the_right_region_of_a_png(tmp_path: Path):
    gradient_image(400, 300).save(tmp_path / "g.png")
    with Image.open(tmp_path / "g.png") as image:
        out = np.asarray(CenterCrop(size=32, resize=40)(image)).astype(float)
    left, top, w, h = center_crop_box(400, 300, resize=40, size=32)
    for j in (0, 15, 31):  # output column j samples source column left + (j + 0.5) * w / 32
        source = left + (j + 0.5) * w / 32
        assert out[16, j, 0] == pytest.approx(source * 255 / 399, abs=3)
    assert out[0, 16, 1] == pytest.approx((top + 0.5 * h / 32) * 255 / 299, abs=3)


def test_reduced_jpeg_decoding_matches_full_decoding(tmp_path: Path):
    gradient_image(1600, 1200).save(tmp_path / "big.jpg", quality=95)
    box = center_crop_box(1600, 1200, 256, 224)
    with Image.open(tmp_path / "big.jpg") as image:
        drafted = np.asarray(crop_resize(image, box, 224)).astype(float)  # decoded at 1/4 scale
        assert image.size == (400, 300)
    with Image.open(tmp_path / "big.jpg") as image:
        image.load()  # decoded in full first: no reduction possible
        full = np.asarray(crop_resize(image, box, 224)).astype(float)
    assert np.abs(drafted - full).mean() < 2.0


def test_color_jitter_factors_stay_in_range():
    grey = Image.new("RGB", (8, 8), (100, 100, 100))  # contrast and saturation leave a flat grey unchanged
    rng = np.random.default_rng(0)
    values = [np.asarray(color_jitter(grey, rng, 0.4))[0, 0, 0] for _ in range(300)]
    assert 60 - 1 <= min(values) < 70 and 130 < max(values) <= 140 + 1
    assert color_jitter(grey, rng, 0.0) is grey


def test_pad_crop_shifts_within_the_padding_and_flips_half(tmp_path: Path):
    gradient_image(16, 16).save(tmp_path / "g.png")
    reference = np.asarray(Image.open(tmp_path / "g.png")).astype(int)
    transform = PadCrop(size=16, resize=16, padding=2, flip=True)
    rng = np.random.default_rng(0)
    flips = 0
    for _ in range(200):
        with Image.open(tmp_path / "g.png") as image:
            out = np.asarray(transform(image, rng)).astype(int)
        flipped = out[8, 10, 0] < out[8, 5, 0]
        flips += flipped
        if flipped:
            out = out[:, ::-1]
        shifts = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(out[2:-2, 2:-2], reference[2 + dy : 14 + dy, 2 + dx : 14 + dx])
        ]
        assert shifts, "the output is the image shifted by at most the padding"
    assert 70 < flips < 130


def _file_dataset(tmp_path: Path, transform, **kwargs) -> ImageFileDataset:
    pairs = write_images(tmp_path, "train", labels_for([6, 4, 2]), size=40, fmt="jpg")
    return ImageFileDataset(
        tmp_path,
        PathTable([p for p, _ in pairs]),
        np.array([label for _, label in pairs]),
        transform,
        eval_transform=CenterCrop(24, 28),
        **kwargs,
    )


def test_items_are_uint8_and_the_eval_view_is_fixed(tmp_path: Path):
    data = _file_dataset(tmp_path, RandomResizedCrop(24), seed=3)
    images, labels = data.__getitems__([0, 1, 2])
    assert images.shape == (3, 3, 24, 24) and images.dtype == torch.uint8 and labels.dtype == torch.int64
    assert data.image_shape == (3, 24, 24) and data.per_item_augmentation
    view = data.eval_view()
    assert not view.per_item_augmentation and torch.equal(view[4][0], view[4][0])
    assert torch.equal(data.labels, view.labels)


def test_augmentation_depends_on_seed_epoch_and_draw_only(tmp_path: Path):
    data = _file_dataset(tmp_path, RandomResizedCrop(24), seed=1)
    batch = [3, 3, 7]
    first = data.__getitems__(batch)[0]
    assert torch.equal(first, data.__getitems__(batch)[0])
    assert not torch.equal(first[0], first[1]), "an image drawn twice gets two augmentations"
    data.set_epoch(1)
    assert not torch.equal(first, data.__getitems__(batch)[0])
    data.set_epoch(0, seed=7)  # the run's seed
    assert not torch.equal(first, data.__getitems__(batch)[0])
    data.set_epoch(0)
    data.threads = 4  # decoding threads give the same images
    assert torch.equal(first, data.__getitems__(batch)[0])


def test_batches_do_not_depend_on_the_number_of_workers(tmp_path: Path):
    data = _file_dataset(tmp_path, RandomResizedCrop(16), seed=5)
    sampler = make_sampler(data.labels, "class", seed=0)

    def epoch(workers: int) -> torch.Tensor:
        sampler.set_epoch(2)
        data.set_epoch(2)
        loader = DataLoader(data, batch_size=4, sampler=sampler, num_workers=workers, collate_fn=keep_batch)
        return torch.cat([images for images, _ in loader])

    assert torch.equal(epoch(0), epoch(2))


def test_persistent_workers_follow_set_epoch(tmp_path: Path):
    """Workers that live across epochs must still draw each epoch's augmentation."""
    data = _file_dataset(tmp_path, RandomResizedCrop(16), seed=5)
    loader = make_loader(data, 4, num_workers=2)
    assert loader.persistent_workers
    epochs = {}
    for epoch in (0, 1, 0):
        data.set_epoch(epoch)
        epochs.setdefault(epoch, []).append(torch.cat([images for images, _ in loader]))
    data.set_epoch(1)
    in_process = torch.cat([images for images, _ in make_loader(data, 4, num_workers=0)])
    assert torch.equal(epochs[0][0], epochs[0][1]) and torch.equal(epochs[1][0], in_process)
    assert not torch.equal(epochs[0][0], epochs[1][0])


def test_a_broken_or_missing_image_names_the_file(tmp_path: Path):
    data = _file_dataset(tmp_path, CenterCrop(16, 16))
    (tmp_path / data.paths[0]).write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"img_00000\.jpg: cannot decode image"):
        data[0]
    (tmp_path / data.paths[1]).unlink()
    with pytest.raises(DataError, match=r"img_00001\.jpg: image not found"):
        data[1]


def test_grey_and_cmyk_images_become_rgb(tmp_path: Path):
    Image.new("L", (30, 20), 90).save(tmp_path / "grey.png")
    Image.new("CMYK", (30, 20), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    for name in ("grey.png", "cmyk.jpg"):
        with Image.open(tmp_path / name) as image:
            assert CenterCrop(16, 16)(image).mode == "RGB"


def test_path_table_round_trips_unicode():
    paths = ["a/b.jpg", "ünï/ç ödé.png", "x"]
    table = PathTable(paths)
    assert len(table) == 3 and [table[i] for i in range(3)] == paths
    assert [table.take([2, 0])[i] for i in range(2)] == ["x", "a/b.jpg"]
