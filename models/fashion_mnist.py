"""Fashion-MNIST (Zalando article images) read from Debian's ``dataset-fashion-mnist``.

The demo catalog and the evaluation set. ``apt-get install dataset-fashion-mnist`` puts the
original gzip IDX files in ``/usr/share/datasets/fashion-mnist``; ``VR_FASHION_MNIST_DIR``
points elsewhere.
"""
import gzip
import os
from pathlib import Path
from typing import Literal

import numpy as np

CATEGORIES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
              "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FOOTWEAR = frozenset({"Sandal", "Sneaker", "Ankle boot"})
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")


def data_dir() -> Path:
    return Path(os.environ.get("VR_FASHION_MNIST_DIR", DEFAULT_DIR))


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * axis: 8 + 4 * axis], "big") for axis in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(split: Literal["train", "test"]) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split."""
    prefix = "train" if split == "train" else "t10k"
    folder = data_dir()
    images, labels = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.is_file():
        raise FileNotFoundError(f"{images} is missing: run `apt-get install dataset-fashion-mnist` "
                                "or set VR_FASHION_MNIST_DIR")
    return _read_idx(images), _read_idx(labels)
