"""Records sized for training: --resize_for keeps the crops training takes, tiny images go in as raw pixels,
and the trainer says when records are far larger than their training size needs."""

import numpy as np
import tensorflow as tf
from PIL import Image

from tltrain import convert, data, records
from tltrain.config import DataConfig
from tltrain.dataset_metadata import DatasetMetadata

SIZE = 32  # training size of these tests


def stored(out) -> dict[str, dict]:
    """filename -> the record's parsed fields (numpy values)."""
    files = DatasetMetadata.read(str(out)).shard_paths("train")
    return {fields["image/filename"].decode(): fields
            for fields in (records.parse_example(r) for r in tf.data.TFRecordDataset(files))
            for fields in [{key: value.numpy() for key, value in fields.items()}]}


def test_resized_records_decode_to_the_same_crops(tmp_path):
    y, x = np.mgrid[0:300, 0:450].astype(np.float32)
    picture = np.stack([x * 0.5, 128 + 80 * np.sin(x / 40 + y / 50), y * 0.8], axis=-1).astype(np.uint8)
    (tmp_path / "src/a").mkdir(parents=True)
    Image.fromarray(picture).save(tmp_path / "src/a/photo.png")
    common = dict(validation_fraction=0.0, store_png_as="png", progress=False, workers=1)
    convert.convert(str(tmp_path / "src"), str(tmp_path / "full"), **common)
    convert.convert(str(tmp_path / "src"), str(tmp_path / "resized"), resize_for=SIZE, **common)
    full, resized = stored(tmp_path / "full")["a/photo.png"], stored(tmp_path / "resized")["a/photo.png"]
    short_side = records.short_side_for(SIZE)
    assert (resized["image/height"], resized["image/width"]) == (short_side, round(450 * short_side / 300))
    assert DatasetMetadata.read(str(tmp_path / "resized")).resize_for == SIZE
    # Centre crops of 27% to 100% of the shorter side, spanning the Inception crop areas (0.08 to 1), whose
    # windows fall on whole pixels of the resized image (others differ by where their edges round to).
    for fraction in (12 / short_side, 22 / short_side, 30 / short_side, 1.0):
        crops = [data.decode_for_eval(tf.constant(r["image/encoded"]), SIZE, fraction).numpy().astype(float)
                 for r in (full, resized)]
        assert np.abs(crops[0] - crops[1]).mean() < 2.0, fraction
    # The trainer's one-line warning: for the full-size records only.
    assert "--resize_for=32" in data.warn_if_records_oversized(DataConfig(records_dir=str(tmp_path / "full")), SIZE)
    assert data.warn_if_records_oversized(DataConfig(records_dir=str(tmp_path / "resized")), SIZE) is None


def test_tiny_images_are_stored_as_raw_pixels_that_read_back_exactly(tmp_path):
    rng = np.random.default_rng(0)
    pictures = {"a/gray.png": rng.integers(0, 256, (28, 28), np.uint8),  # one class each: label 0, 1, 2
                "b/rgb.png": rng.integers(0, 256, (24, 24, 3), np.uint8),
                "c/big.png": rng.integers(0, 256, (40, 48, 3), np.uint8)}  # 5,760 bytes: over the 4,096 default
    for name, pixels in pictures.items():
        (tmp_path / "src" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "src" / name)
    convert.convert(str(tmp_path / "src"), str(tmp_path / "out"), validation_fraction=0.0, store_png_as="png",
                    progress=False, workers=1)
    fields = stored(tmp_path / "out")
    assert {name: (f["image/format"].decode(), int(f["image/channels"])) for name, f in fields.items()} == {
        "a/gray.png": ("raw", 1), "b/rgb.png": ("raw", 3), "c/big.png": ("png", 3)}
    assert fields["a/gray.png"]["image/encoded"] == pictures["a/gray.png"].tobytes()
    cfg = DataConfig(records_dir=str(tmp_path / "out"), batch_size=1, eval_crop_fraction=1.0)
    for label, (name, size) in enumerate((("a/gray.png", 28), ("b/rgb.png", 24))):
        image = next(x[0].numpy() for x, y in data.make_eval_dataset(cfg, size, "train") if int(y[0]) == label)
        pixels = pictures[name] if pictures[name].ndim == 3 else np.repeat(pictures[name][..., None], 3, axis=-1)
        np.testing.assert_array_equal(image, pixels)
