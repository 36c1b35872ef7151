"""Per-image transforms on Pillow images, for datasets decoded from files item by item.

The paper's pipeline, written on Pillow + torch because torchvision does not
import everywhere (it does not with this project's CPU build of torch):

- training (``imagenet`` style): RandomResizedCrop (area scale in [0.08, 1],
  aspect ratio in [3/4, 4/3]), horizontal flip, ColorJitter (brightness,
  contrast, saturation 0.4 each, applied in a random order);
- training (``cifar`` style, for small images): the test-time geometry, then a
  random crop after zero-padding and a horizontal flip;
- test: resize the shorter side to ``resize`` (256), centre crop ``size`` (224).

Crop and resize are one Pillow ``resize(..., box=...)`` call on the source
region (antialiased bilinear), and JPEGs are decoded at 1/2, 1/4 or 1/8 scale
by libjpeg when the region is still at least ``size`` pixels on each side at
that scale ("draft" mode): the output is the same region at the same size,
with a large saving on big photographs (iNaturalist's are ~800 px).

Every random choice comes from the ``numpy.random.Generator`` passed in, which
the dataset derives from (seed, epoch, batch, position): an item's
augmentation is reproducible and does not depend on the number of workers.
Transforms return RGB Pillow images of ``size`` x ``size``; :func:`to_array`
makes them (3, H, W) uint8 arrays. Normalisation happens per batch on the
training device (:class:`~longtail.data.transforms.BatchTransform`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageEnhance

Box = tuple[float, float, float, float]  # left, top, width, height in source pixels


def random_resized_crop_box(
    width: int,
    height: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> Box:
    """A random region covering ``scale`` of the area with aspect ratio (w / h) in ``ratio``.

    Up to ten tries of a uniformly drawn area fraction and a log-uniformly drawn
    aspect ratio; a region that does not fit the image is redrawn. After ten
    misses (very elongated images) the largest centred region whose aspect
    ratio is within ``ratio`` is used.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return float(left), float(top), float(w), float(h)
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    return (width - w) / 2, (height - h) / 2, float(w), float(h)


def center_crop_box(width: int, height: int, resize: int, size: int) -> Box:
    """The source region kept by "resize the shorter side to ``resize``, then centre-crop ``size``"."""
    side = size * min(width, height) / resize  # ``size`` output pixels in source pixels
    crop_w, crop_h = min(side, width), min(side, height)
    return (width - crop_w) / 2, (height - crop_h) / 2, crop_w, crop_h


def _draft_factor(box: Box, size: int) -> int:
    """The largest JPEG reduction (1, 2, 4, 8) that keeps the region at least ``size`` px on each side."""
    for factor in (8, 4, 2):
        if box[2] / factor >= size and box[3] / factor >= size:
            return factor
    return 1


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` as an RGB image, for any mode Pillow opens.

    Two modes Pillow's own ``convert("RGB")`` gets wrong: 16-bit grey (``I;16``,
    a 16-bit greyscale PNG) is clipped at 255, so a photograph becomes white;
    it keeps the high byte instead, as Pillow does for 16-bit colour PNGs. A
    palette image whose transparency is a table of bytes (a palette PNG with a
    ``tRNS`` chunk) makes ``convert`` print a UserWarning; it goes through RGBA,
    which gives the same colours silently.
    """
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):  # I;16, I;16L, I;16B, I;16N
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8), mode="L")
    elif image.mode == "P" and isinstance(image.info.get("transparency"), bytes):
        image = image.convert("RGBA")
    return image.convert("RGB")


def crop_resize(image: Image.Image, box: Box, size: int) -> Image.Image:
    """The ``box`` region of a just-opened ``image`` as an RGB ``size`` x ``size`` image.

    ``image`` should not be loaded yet, so that a JPEG can be decoded at reduced
    scale; anything else is decoded in full.
    """
    width, height = image.size
    factor = _draft_factor(box, size)
    if factor > 1 and image.format == "JPEG":
        image.draft("RGB", (max(1, width // factor), max(1, height // factor)))
    image = to_rgb(image)
    sx, sy = image.size[0] / width, image.size[1] / height
    left, top, w, h = box
    source = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
    return image.resize((size, size), Image.Resampling.BILINEAR, box=source)


def hflip(image: Image.Image) -> Image.Image:
    """Mirror left to right."""
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def color_jitter(image: Image.Image, rng: np.random.Generator, strength: float) -> Image.Image:
    """Brightness, contrast and saturation each scaled by a factor in [1 - s, 1 + s], in a random order.

    Brightness blends with black, contrast with the image's mean grey level,
    saturation with its greyscale version (torchvision's ColorJitter with hue 0).
    """
    if strength <= 0:
        return image
    low, high = max(0.0, 1.0 - strength), 1.0 + strength
    factors = rng.uniform(low, high, size=3)
    enhancers = (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color)
    for which in rng.permutation(3):
        image = enhancers[which](image).enhance(float(factors[which]))
    return image


def to_array(image: Image.Image) -> np.ndarray:
    """RGB Pillow image -> (3, H, W) uint8 array.

    NumPy, not torch: a torch copy this small may be split over OpenMP threads,
    which costs more than the copy (five times the decoding time on a busy machine).
    """
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


@dataclass(frozen=True)
class CenterCrop:
    """Test-time transform: shorter side to ``resize``, centre crop ``size`` x ``size``."""

    size: int = 224
    resize: int = 256
    random = False

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> Image.Image:
        return crop_resize(image, center_crop_box(*image.size, self.resize, self.size), self.size)


@dataclass(frozen=True)
class RandomResizedCrop:
    """The paper's training transform: random resized crop, flip, colour jitter.

    Args:
        size: output side in pixels.
        scale: range of the crop's share of the image area.
        ratio: range of the crop's aspect ratio (width / height).
        flip: flip horizontally with probability 1/2.
        jitter: ColorJitter strength for brightness, contrast and saturation (0: off).
    """

    size: int = 224
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.4
    random = True

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        box = random_resized_crop_box(*image.size, rng, self.scale, self.ratio)
        out = crop_resize(image, box, self.size)
        if self.flip and rng.random() < 0.5:
            out = hflip(out)
        return color_jitter(out, rng, self.jitter)


@dataclass(frozen=True)
class PadCrop:
    """CIFAR-style training transform for small images: test geometry, then pad + random crop, flip.

    Args:
        size, resize: the test-time geometry (see :class:`CenterCrop`).
        padding: zero pixels added on each side before a random ``size`` crop (0: no crop).
        flip: flip horizontally with probability 1/2.
    """

    size: int = 32
    resize: int = 32
    padding: int = 4
    flip: bool = True
    random = True

    def __call__(self, image: Image.Image, rng: np.random.Generator) -> Image.Image:
        out = crop_resize(image, center_crop_box(*image.size, self.resize, self.size), self.size)
        if self.padding > 0:
            dx, dy = (int(v) for v in rng.integers(0, 2 * self.padding + 1, size=2))
            canvas = Image.new("RGB", (self.size, self.size))
            # Pasting at (padding - dx, padding - dy) is cropping the padded image at (dx, dy).
            canvas.paste(out, (self.padding - dx, self.padding - dy))
            out = canvas
        if self.flip and rng.random() < 0.5:
            out = hflip(out)
        return out


ImageTransform = CenterCrop | RandomResizedCrop | PadCrop
