"""Labelled images for the tools that train or calibrate: a folder in
torchvision's ImageFolder layout (root/CLASS/IMAGE), or scikit-learn's digits
(1,797 handwritten 8x8 digits, upsampled: a real dataset that needs no
download). Both come as uint8 NHWC RGB arrays at one size, with labels.

`flag` names the option the data came from, so that a mistake reads as one of
that command's options (`--data`, `--calibration`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SpecError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".webp", ".gif"}


@dataclass
class Images:
    pixels: Any  # uint8 (N, size, size, 3)
    labels: Any  # int64 (N,)
    classes: list[str]
    source: str  # "digits" or the folder


def load(source: str, size: int, flag: str) -> Images:
    """`digits` or an ImageFolder directory, every image resized to `size`."""
    if source == "digits":
        pixels, labels = digits(size, flag)
        return Images(pixels, labels, [str(d) for d in range(10)], "digits")
    return image_folder(Path(source), size, flag)


def resize(image: Any, size: int) -> Any:
    """A PIL image -> (size, size, 3) uint8, bilinear."""
    import numpy as np
    from PIL import Image

    return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))


def digits(size: int, flag: str = "--calibration") -> tuple[Any, Any]:
    """scikit-learn's 1,797 handwritten digits as (uint8 NHWC images resized to
    `size`, labels)."""
    import numpy as np
    from PIL import Image

    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SpecError(
            f"{flag} digits needs scikit-learn: pip install 'archspec[export]'"
        ) from None
    data = load_digits()  # 8x8, values 0-16
    images = [Image.fromarray((d * 255 / 16).astype(np.uint8)) for d in data.images]
    return np.stack([resize(i, size) for i in images]), data.target.astype(np.int64)


def image_folder(root: Path, size: int, flag: str = "--calibration") -> Images:
    """Every image of root/CLASS/IMAGE, classes in sorted order (as ImageFolder)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    if not root.is_dir():
        raise SpecError(
            f"{flag} {root}: expected a folder of class folders "
            "(torchvision's ImageFolder layout) or `digits`; found no such folder"
        )
    try:
        classes = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError as exc:
        raise SpecError(f"{flag} {root}: cannot read the folder: {exc}") from None
    if len(classes) < 2:
        raise SpecError(
            f"{flag} {root}: expected at least two class folders, found {len(classes)}"
        )
    files: list[tuple[Path, int]] = []
    for label, folder in enumerate(classes):
        found = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
        )
        if not found:
            raise SpecError(
                f"{flag} {root}: class folder {folder.name!r} has no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        files += [(path, label) for path in found]
    images = []
    for path, _ in files:
        try:
            with Image.open(path) as image:
                images.append(resize(image, size))
        except (OSError, UnidentifiedImageError) as exc:
            raise SpecError(f"{path}: not a readable image: {exc}") from None
    return Images(
        np.stack(images),
        np.array([label for _, label in files], dtype=np.int64),
        [c.name for c in classes],
        str(root),
    )
