"""Photo-like test data for the input benchmarks: generated 500x375 JPEGs that cost what photos cost to decode,
and their records (full size, or resized for a training size), kept in a work directory between runs."""

from __future__ import annotations

import io
import multiprocessing
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def photo_like(index: int, width: int = 500, height: int = 375) -> bytes:
    """A JPEG that costs what a photo costs to decode: smooth colour fields, a few hard-edged shapes,
    mid-frequency texture and sensor-like noise (about 55 KB at quality 90)."""
    import numpy as np
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


def photo_images(work_dir: str, num_images: int, num_classes: int, log=print) -> str:
    """work_dir/images_N_C/class_XX/*.jpg, generated once (all cores) and reused."""
    images_dir = os.path.join(work_dir, f"images_{num_images}_{num_classes}")
    done = os.path.join(images_dir, ".complete")
    if not os.path.exists(done):
        log(f"generating {num_images} photo-like 500x375 JPEGs in {images_dir} ...")
        jobs = []
        for index in range(num_images):
            folder = os.path.join(images_dir, f"class_{index % num_classes:02d}")
            os.makedirs(folder, exist_ok=True)
            jobs.append((index, os.path.join(folder, f"{index:06d}.jpg")))
        with multiprocessing.get_context("spawn").Pool() as pool:
            pool.map(_write_photo, jobs, chunksize=32)
        open(done, "w").close()
    return images_dir


def photo_records(images_dir: str, work_dir: str, num_shards: int, resize_for: int = 0, log=print) -> str:
    """Records of every image of images_dir (one train split) by the project's converter, at full size or
    with --resize_for; reused while dataset.json says they were made that way from that folder."""
    from tltrain import convert, records

    name = "records_" + os.path.basename(os.path.normpath(images_dir)) + (f"_resize{resize_for}" if resize_for else "")
    records_dir = os.path.join(work_dir, name)
    try:
        metadata = records.read_metadata(records_dir)
        fresh = (metadata["source"] == images_dir and len(metadata["splits"]["train"]["shards"]) == num_shards
                 and "validation" not in metadata["splits"] and metadata.get("resize_for", 0) == resize_for)
    except (FileNotFoundError, KeyError):
        fresh = False
    if not fresh:
        log(f"converting {images_dir} -> {records_dir} ...")
        convert.convert(images_dir, records_dir, overwrite=True, progress=False, validation_fraction=0.0,
                        num_shards=num_shards, resize_for=resize_for)
    return records_dir


def train_split_files(records_dir: str) -> tuple[list[str], str]:
    """(shard paths of the train split, compression) from dataset.json."""
    from tltrain import records

    metadata = records.read_metadata(records_dir)
    return ([os.path.join(records_dir, s["file"]) for s in metadata["splits"]["train"]["shards"]],
            metadata.get("compression", "") or "")
