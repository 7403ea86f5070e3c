"""A real dataset small enough for CI: scikit-learn's handwritten digits
(1,797 8x8 grey images, shipped with the package, no download), upsampled.

Used by the training tests of both backends: classes 0-4 to train a model
from scratch, 5-9 for transfer learning onto a frozen backbone.
"""

from __future__ import annotations

import numpy as np

SIZE = 32  # 8x8 digits, upsampled 4x (nearest): ResNet's maps end at 1x1


def digits(classes: range, size: int = SIZE):
    """(x_train, y_train, x_test, y_test) of the digits in `classes`: NHWC
    float32 images with values in 0-1 (3 channels), labels from 0, a fixed
    stratified 3:1 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    keep = np.isin(data.target, list(classes))
    images = data.images[keep].astype("float32") / 16.0
    labels = (data.target[keep] - classes.start).astype("int64")
    images = images.repeat(size // 8, axis=1).repeat(size // 8, axis=2)
    images = np.repeat(images[..., None], 3, axis=-1)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return x_train, y_train, x_test, y_test
