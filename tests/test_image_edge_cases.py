"""Image files of unusual modes, sizes and links, through the pipeline's reader and `longtail predict`'s."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hostile import one_error_line, png_header
from longtail.cli import main
from longtail.data.image_check import image_problem
from longtail.data.image_transforms import CenterCrop, to_rgb
from longtail.export.predict import read_image

CROP = {"channels": 3, "height": 8, "width": 8, "geometry": "resize_shorter_center_crop", "resize_shorter": 8}
RESIZE = {"channels": 3, "height": 8, "width": 8, "geometry": "resize", "resize_shorter": None}


def test_a_16_bit_grey_png_is_read_by_its_high_byte_not_clipped_to_white(tmp_path: Path):
    # Pillow's convert("RGB") clipped every 16-bit value at 255: a 16-bit greyscale photograph became white.
    values = np.linspace(0, 65535, 64).astype(np.uint16).reshape(8, 8)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    expected = torch.from_numpy((values >> 8).astype(np.float32) / 255.0).expand(3, 8, 8)
    with Image.open(tmp_path / "grey16.png") as image:
        assert image.mode == "I;16"
        rgb = np.asarray(CenterCrop(8, 8)(image))
    assert np.array_equal(rgb, np.repeat((values >> 8).astype(np.uint8)[..., None], 3, axis=2))
    for spec in (CROP, RESIZE):
        assert torch.equal(read_image(tmp_path / "grey16.png", spec), expected)


def test_a_palette_png_with_transparency_is_read_without_a_warning(tmp_path: Path):
    # Pillow's convert("RGB") of such an image printed "Palette images with Transparency expressed in bytes
    # should be converted to RGBA images" during `longtail train` and `longtail predict`.
    palette_image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).convert("P")
    palette_image.save(tmp_path / "palette.png", transparency=bytes(range(256)))
    with Image.open(tmp_path / "palette.png") as image:
        assert image.mode == "P" and isinstance(image.info["transparency"], bytes)
        expected = np.asarray(image.convert("RGBA"))[..., :3]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with Image.open(tmp_path / "palette.png") as image:
            assert np.array_equal(np.asarray(CenterCrop(8, 8)(image)), expected)
        with Image.open(tmp_path / "palette.png") as image:
            assert np.array_equal(np.asarray(to_rgb(image)), expected)
        for spec in (CROP, RESIZE):
            tensor = read_image(tmp_path / "palette.png", spec)
            assert torch.equal(tensor, torch.from_numpy(expected.transpose(2, 0, 1).astype(np.float32) / 255.0))


def image_folder(root: Path, per_class: int = 5) -> Path:
    """``root/train/<a, b>/`` and ``root/test/<a, b>/`` of small RGB PNGs."""
    for split, count in (("train", per_class), ("test", 1)):
        for shade, name in enumerate("ab"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (200 * shade, 40 * i, 90)).save(root / split / name / f"{i}.png")
    return root


def test_an_image_between_pillows_limit_and_twice_it_prints_no_library_warning(tmp_path: Path, capsys):
    # 10,000 x 10,000 pixels: above Image.MAX_IMAGE_PIXELS, which Pillow only warns of (its error is at twice
    # that); the warning printed "DecompressionBombWarning: Image size ..." before longtail's own line.
    root = image_folder(tmp_path / "data")
    (root / "train" / "a" / "big.png").write_bytes(png_header(10_000, 10_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        one_error_line(["data", "stats", "data.name=imagefolder", f"data.root={root}"], capsys, "big.png: corrupt")
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_a_symlink_loop_among_the_class_folders_is_one_line(tmp_path: Path, capsys):
    # os.DirEntry.is_dir() raises for a loop (it answers False for a dangling link): an OSError traceback before.
    root = image_folder(tmp_path / "data")
    (root / "train" / "loop1").symlink_to("loop2")
    (root / "train" / "loop2").symlink_to("loop1")
    (root / "train" / "dangling").symlink_to("nowhere")  # not a folder: no class, as before
    (root / "train" / ".hidden").symlink_to(".hidden")  # hidden entries are skipped before they are followed
    one_error_line(
        ["data", "stats", "data.name=imagefolder", f"data.root={root}"], capsys, "train/loop", "expected a class folder"
    )
    for name in ("loop1", "loop2"):
        (root / "train" / name).unlink()
    assert main(["data", "stats", "data.name=imagefolder", f"data.root={root}", "--json"]) == 0
    assert '"classes": 2' in capsys.readouterr().out


def test_a_symlinked_sub_folder_of_a_class_is_read_and_a_looping_one_is_one_line(tmp_path: Path, capsys):
    # A symlinked class folder was followed, a symlinked sub-folder inside one silently skipped (os.walk).
    root = image_folder(tmp_path / "data")
    elsewhere = tmp_path / "more_a"
    elsewhere.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (0, 40 * i, 90)).save(elsewhere / f"{i}.png")
    (root / "train" / "a" / "more").symlink_to(elsewhere)
    assert main(["data", "stats", "data.name=imagefolder", f"data.root={root}", "--json"]) == 0
    assert '"counts": [7, 4]' in capsys.readouterr().out  # 8 and 5, less one validation image each (5 and 5 before)
    looping = {  # endless; class b's images in class a too; class b twice, as b and b2
        "train/b/loop": ("..", f"train/b/loop/a: the folder {root / 'train/a'} again"),
        "train/a/more/back": (root / "train/b", f"train/b: the folder {root / 'train/a/more/back'} again"),
        "train/b2": (root / "train/b", f"train/b2: the folder {root / 'train/b'} again"),
    }
    for link, (target, shown) in looping.items():
        (root / link).symlink_to(target)
        one_error_line(
            ["data", "stats", "data.name=imagefolder", f"data.root={root}"],
            capsys,
            shown,
            "(a symbolic link loops or repeats it); expected each folder of images once",
        )
        (root / link).unlink()


def test_a_dangling_or_looping_image_link_is_named_as_a_link_not_as_missing(tmp_path: Path, capsys):
    root = image_folder(tmp_path / "data")
    (root / "train" / "a" / "dangling.png").symlink_to("nowhere.png")
    (root / "train" / "a" / "loop.png").symlink_to("loop.png")
    (root / "train" / "a" / "good.png").symlink_to("0.png")
    assert image_problem(root / "train" / "a" / "good.png") is None
    for name in ("dangling.png", "loop.png"):
        assert image_problem(root / "train" / "a" / name).startswith("a symbolic link to nothing")
    assert image_problem(root / "train" / "a" / "absent.png") == "not found"
    one_error_line(
        ["data", "stats", "data.name=imagefolder", f"data.root={root}"], capsys, "dangling.png: a symbolic link to"
    )


def test_an_empty_class_folder_is_named(tmp_path: Path, capsys):
    root = image_folder(tmp_path / "data")
    (root / "train" / "c").mkdir()
    (root / "train" / "c" / ".hidden.png").write_bytes(b"")  # hidden files are no images
    one_error_line(["data", "stats", "data.name=imagefolder", f"data.root={root}"], capsys, "class 2 ('c') has no")
