"""Photo-like test data for the input benchmarks: generated 500x375 JPEGs that cost what photos cost to decode,
and their records (full size, or resized for a training size), kept in a work directory between runs."""

from __future__ import annotations

import os

from shared import write_photo_folder


def photo_images(work_dir: str, num_images: int, num_classes: int, log=print) -> str:
    """work_dir/images_N_C/class_XX/*.jpg, generated once (all cores) and reused."""
    images_dir = os.path.join(work_dir, f"images_{num_images}_{num_classes}")
    done = os.path.join(images_dir, ".complete")
    if not os.path.exists(done):
        log(f"generating {num_images} photo-like 500x375 JPEGs in {images_dir} ...")
        write_photo_folder(images_dir, num_images, num_classes)
        open(done, "w").close()
    return images_dir


def photo_records(images_dir: str, work_dir: str, num_shards: int, resize_for: int = 0, log=print) -> str:
    """Records of every image of images_dir (one train split) by the project's converter, at full size or
    with --resize_for; reused while dataset.json says they were made that way from that folder."""
    from tltrain import convert
    from tltrain.dataset_metadata import DatasetMetadata

    name = "records_" + os.path.basename(os.path.normpath(images_dir)) + (f"_resize{resize_for}" if resize_for else "")
    records_dir = os.path.join(work_dir, name)
    try:
        metadata = DatasetMetadata.read(records_dir)
        fresh = (metadata.provenance.get("source") == images_dir and "validation" not in metadata.splits
                 and len(metadata.shard_paths("train")) == num_shards and metadata.resize_for == resize_for)
    except (FileNotFoundError, ValueError):
        fresh = False
    if not fresh:
        log(f"converting {images_dir} -> {records_dir} ...")
        convert.convert(images_dir, records_dir, overwrite=True, progress=False, validation_fraction=0.0,
                        num_shards=num_shards, resize_for=resize_for)
    return records_dir


def train_split_files(records_dir: str) -> tuple[list[str], str]:
    """(shard paths of the train split, compression) from dataset.json."""
    from tltrain.dataset_metadata import DatasetMetadata

    metadata = DatasetMetadata.read(records_dir)
    return metadata.shard_paths("train"), metadata.compression
