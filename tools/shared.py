"""What several tools share: the repository root, Fashion-MNIST read from the Debian package's idx files,
and generated JPEGs that cost what photos cost to decode. (Tools import tltrain as installed, and each other
from this folder, which Python puts first on the path of a script it runs.)"""

from __future__ import annotations

import gzip
import io
import os
import pathlib
import struct

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # where Debian's dataset-fashion-mnist puts its files
FASHION_MNIST_CLASSES = ["t_shirt_top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                         "ankle_boot"]  # in label order


def read_idx(path: str) -> np.ndarray:
    """A gzipped idx file (the MNIST format: magic with the rank, big-endian dimensions, uint8 data)."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, rank = struct.unpack_from(">HBB", data)
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an idx file of unsigned bytes")
    shape = struct.unpack_from(f">{rank}I", data, 4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape)


def fashion_mnist_files(directory: str, split: str) -> tuple[str, str]:
    """The (images, labels) idx files of Fashion-MNIST's "train" or "test" set."""
    prefix = {"train": "train", "test": "t10k"}[split]
    return (os.path.join(directory, f"{prefix}-images-idx3-ubyte.gz"),
            os.path.join(directory, f"{prefix}-labels-idx1-ubyte.gz"))


def read_fashion_mnist(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [n, 28, 28] and labels [n] of Fashion-MNIST's "train" or "test" set."""
    images, labels = fashion_mnist_files(directory, split)
    return read_idx(images), read_idx(labels)


def photo_like(index: int, width: int = 500, height: int = 375) -> bytes:
    """A JPEG that costs what a photo costs to decode: smooth colour fields, a few hard-edged shapes,
    mid-frequency texture and sensor-like noise (about 55 KB at quality 90). The same for the same index."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(index)
    base = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    texture = Image.fromarray(rng.integers(0, 256, (height // 12, width // 12, 3), dtype=np.uint8))
    picture = Image.blend(base, texture.resize((width, height), Image.BILINEAR), 0.35)
    draw = ImageDraw.Draw(picture)
    for _ in range(6):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x, y, x + int(rng.integers(20, 200)), y + int(rng.integers(20, 200))]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    noisy = np.asarray(picture, np.int16) + rng.normal(0, 7, (height, width, 3)).astype(np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _write_photo(job: tuple[int, str]) -> None:
    index, path = job
    with open(path, "wb") as f:
        f.write(photo_like(index))


def write_photo_folder(root: str, num_images: int, num_classes: int, workers: int | None = None) -> None:
    """root/class_NN/NNNNNN.jpg: num_images photo_like JPEGs dealt round-robin into num_classes folders,
    written by `workers` processes (None: one per core)."""
    import multiprocessing

    jobs = []
    for index in range(num_images):
        folder = os.path.join(root, f"class_{index % num_classes:02d}")
        os.makedirs(folder, exist_ok=True)
        jobs.append((index, os.path.join(folder, f"{index:06d}.jpg")))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pool.map(_write_photo, jobs, chunksize=32)
