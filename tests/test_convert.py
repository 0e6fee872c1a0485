"""tltrain.convert / tools/make_tfrecords.py: what becomes of every file, the stored pixels, the split,
determinism, and recovery from a killed run."""

import hashlib
import io
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tltrain import convert, records
from tltrain.dataset_metadata import DatasetMetadata

REPO = pathlib.Path(__file__).resolve().parent.parent
TOOL = [sys.executable, str(REPO / "tools" / "make_tfrecords.py")]


def run_convert(src, out, **kwargs):
    """The images of these tests are tiny: stored encoded, as larger ones would be, unless a test asks for raw."""
    kwargs.setdefault("raw_max_bytes", 0)
    return convert.convert(str(src), str(out), progress=False, **kwargs)


def stored_records(out) -> dict[str, dict]:
    """filename -> the record's fields (numpy values), its split, and its decoded RGB pixels."""
    metadata = DatasetMetadata.read(str(out))
    stored = {}
    for split in metadata.splits:
        for path in metadata.shard_paths(split):
            for raw in tf.data.TFRecordDataset(path, compression_type=metadata.compression):
                fields = {key: value.numpy() for key, value in records.parse_example(raw).items()}
                fields["split"] = split
                fields["pixels"] = decoded_pixels(fields)
                stored[fields["image/filename"].decode()] = fields
    return stored


def decoded_pixels(fields: dict) -> np.ndarray:
    """A record's RGB pixels: raw ones as stored (gray repeated), others decoded."""
    if fields["image/format"] == records.RAW_FORMAT.encode():
        shape = [int(fields[f"image/{key}"]) for key in ("height", "width", "channels")]
        pixels = np.frombuffer(fields["image/encoded"], np.uint8).reshape(shape)
        return np.repeat(pixels, 3 // shape[2], axis=-1)
    return tf.io.decode_image(fields["image/encoded"], channels=3).numpy()


def save(path: pathlib.Path, image: Image.Image, fmt: str | None = None, **kwargs) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, fmt, **kwargs)
    return path.read_bytes()


def noise(seed: int, height: int = 24, width: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def smooth(height: int = 48, width: int = 64) -> np.ndarray:
    """A gradient picture: JPEG keeps it within a few levels, so decoded pixels can be compared."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8)


# ------------------------------------------------------------------------------ every unusual input, once


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A source folder with every kind of unusual and bad input, converted once (2 worker processes)."""
    root = tmp_path_factory.mktemp("zoo")
    src, cat, dog = root / "src", root / "src" / "cat", root / "src" / "dog"
    rgb = smooth()
    expect = {}  # rel path -> ("written", format) or ("skipped", reason)

    def add(rel, outcome, image=None, fmt=None, data=None, **kwargs):
        path = src / rel
        if image is not None:
            save(path, image, fmt, **kwargs)
        elif data is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        expect[rel] = outcome

    add("cat/plain.jpg", ("written", "jpeg"), Image.fromarray(rgb), quality=95)
    add("cat/progressive.jpg", ("written", "jpeg"), Image.fromarray(rgb[::-1]), quality=90, progressive=True)
    add("cat/gray.jpg", ("written", "jpeg"), Image.fromarray(rgb[..., 0]))
    add("cat/cmyk.jpg", ("written", "jpeg"), Image.fromarray(rgb[:, ::-1]).convert("CMYK"), quality=95)
    rotated = np.zeros((40, 60, 3), np.uint8)
    rotated[:10] = (255, 0, 0)  # red top rows; the rest blue
    rotated[10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    add("cat/rotated.jpg", ("written", "jpeg"), Image.fromarray(rotated), quality=95, exif=exif)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)  # opaque red left half, transparent right half
    rgba[:16, 16:] = (0, 0, 0, 128)  # top right: half-transparent black
    add("cat/alpha.png", ("written", "jpeg"), Image.fromarray(rgba))
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8).repeat(16, 0).repeat(16, 1), "P")
    palette.putpalette([0, 200, 0, 0, 0, 0] + [0] * 762)
    add("cat/palette.gif", ("written", "jpeg"), palette, transparency=1)
    la = np.zeros((20, 20, 2), np.uint8)
    la[:, :10] = (60, 255)  # gray 60 opaque; right half transparent
    add("cat/gray_alpha.png", ("written", "jpeg"), Image.fromarray(la, "LA"))
    gray16 = np.zeros((16, 48), np.uint16)  # bands aligned with JPEG's 8x8 blocks: no ringing inside them
    gray16[:, 16:32], gray16[:, 32:] = 32896, 65535
    add("cat/gray16.png", ("written", "jpeg"), Image.fromarray(gray16))
    rgb16 = np.zeros((16, 16, 3), np.uint16)
    rgb16[..., 0] = 65535
    add("cat/rgb16.png", ("written", "jpeg"), data=tf.io.encode_png(rgb16).numpy())
    add("cat/image.bmp", ("written", "jpeg"), Image.fromarray(rgb[:24]))
    add("cat/lossy.webp", ("written", "jpeg"), Image.fromarray(rgb[:, :40]), quality=90)
    add("cat/lossless.webp", ("written", "jpeg"), Image.fromarray(rgb[:, 8:]), lossless=True)
    add("cat/lzw.tiff", ("written", "jpeg"), Image.fromarray(rgb[8:]), compression="tiff_lzw")
    frames = [Image.fromarray(np.full((12, 12, 3), value, np.uint8)) for value in (30, 220)]
    add("cat/animated.gif", ("written", "jpeg"), frames[0], save_all=True, append_images=frames[1:])
    add("cat/nested/deeper/inner.png", ("written", "jpeg"), Image.fromarray(noise(1)))
    add("cat/float.tiff", ("skipped", "unsupported"), Image.fromarray(np.ones((8, 8), np.float32)))
    add("cat/empty.jpg", ("skipped", "zero bytes"), data=b"")
    cut = save(root / "whole.jpg", Image.fromarray(noise(2)), quality=95)
    add("cat/truncated.jpg", ("skipped", "truncated"), data=cut[: len(cut) // 2])
    cut = save(root / "whole.png", Image.fromarray(noise(3)))
    add("cat/truncated.png", ("skipped", "truncated"), data=cut[: len(cut) // 2])
    add("cat/garbage.jpg", ("skipped", "corrupt"), data=b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    add("cat/notes.txt", ("skipped", "not an image"), data=b"label: cat\n")
    add("cat/.DS_Store", ("skipped", "hidden"), data=b"\0\0\0\1Bud1")
    add("cat/Thumbs.db", ("skipped", "hidden"), data=b"\xd0\xcf\x11\xe0")
    add(".git/config", ("skipped", "hidden"), data=b"[core]\n")
    add("cat/.hidden/x.jpg", ("skipped", "hidden"), Image.fromarray(noise(4)))
    add("README.md", ("skipped", "outside class folders"), data=b"# my images\n")
    (cat / "broken_link.jpg").symlink_to(root / "does_not_exist.jpg")
    expect["cat/broken_link.jpg"] = ("skipped", "unreadable")
    os.mkfifo(cat / "pipe.jpg")  # reading it would block forever
    expect["cat/pipe.jpg"] = ("skipped", "unreadable")
    shutil.copy(src / "cat/plain.jpg", cat / "copy_of_plain.jpg")  # which copy is kept: the first in seeded order
    expect["cat/copy_of_plain.jpg"] = "one of the pair"
    expect["cat/plain.jpg"] = "one of the pair"
    for i in range(6):
        add(f"dog/{i}.jpg", ("written", "jpeg"), Image.fromarray(noise(10 + i)), quality=90)
    add("cat/shared.jpg", ("skipped", "label conflict"), Image.fromarray(noise(5)))
    shutil.copy(cat / "shared.jpg", dog / "shared_too.jpg")
    expect["dog/shared_too.jpg"] = ("skipped", "label conflict")

    summary = run_convert(src, root / "out", validation_fraction=0.0, workers=2)
    return {"src": src, "out": root / "out", "expect": expect, "summary": summary, "stored": stored_records(root / "out")}


def test_every_file_is_written_or_skipped_with_its_reason(zoo):
    skipped = {entry["file"]: entry["reason"] for entry in zoo["summary"].skipped}
    outcome = {name: ("written", record["image/format"].decode()) for name, record in zoo["stored"].items()}
    outcome.update({name: ("skipped", reason) for name, reason in skipped.items()})
    pair = {outcome.pop("cat/plain.jpg"), outcome.pop("cat/copy_of_plain.jpg")}
    assert pair == {("written", "jpeg"), ("skipped", "duplicate")}
    assert outcome == {name: value for name, value in zoo["expect"].items() if value != "one of the pair"}
    on_disk = {
        os.path.relpath(os.path.join(d, name), zoo["src"]) for d, dirs, names in os.walk(zoo["src"]) for name in names
    }
    assert on_disk == set(zoo["expect"])  # nothing under --src unaccounted for
    assert str(zoo["summary"]).startswith(f"written {len(zoo['stored'])}, skipped {len(skipped)}: 4 hidden, ")
    metadata = DatasetMetadata.read(str(zoo["out"]))
    assert metadata == zoo["summary"].metadata
    assert metadata.class_names == ("cat", "dog")
    assert metadata.splits["train"].per_class == (16, 6)
    assert sorted(entry["file"] for entry in metadata.skipped) == sorted(skipped)


def test_jpegs_tf_decodes_are_kept_byte_for_byte(zoo):
    plain = "cat/plain.jpg" if "cat/plain.jpg" in zoo["stored"] else "cat/copy_of_plain.jpg"
    for name in [plain, "cat/progressive.jpg", "cat/gray.jpg", "dog/0.jpg"]:
        source = (zoo["src"] / name).read_bytes()
        record = zoo["stored"][name]
        assert record["image/encoded"] == source, name
        assert record["image/source_id"].decode() == hashlib.sha256(source).hexdigest()
    assert zoo["stored"]["cat/gray.jpg"]["image/channels"] == 1
    for name in ["cat/cmyk.jpg", "cat/rotated.jpg"]:  # TF would decode these wrongly (colours, orientation)
        assert zoo["stored"][name]["image/encoded"] != (zoo["src"] / name).read_bytes()


def test_stored_pixels_are_upright_rgb_with_alpha_on_white(zoo):
    stored = zoo["stored"]
    for name, record in stored.items():
        assert record["pixels"].shape == (record["image/height"], record["image/width"], 3), name
    rgb = smooth().astype(int)

    def close(name, expected, tolerance=6):
        return np.abs(stored[name]["pixels"].astype(int) - expected).mean() < tolerance

    assert close("cat/progressive.jpg", rgb[::-1]) and close("cat/cmyk.jpg", rgb[:, ::-1]) and close("cat/image.bmp", rgb[:24])
    assert close("cat/lossy.webp", rgb[:, :40]) and close("cat/lossless.webp", rgb[:, 8:]) and close("cat/lzw.tiff", rgb[8:])
    gray = stored["cat/gray.jpg"]["pixels"].astype(int)
    assert close("cat/gray.jpg", rgb[..., :1]) and (gray[..., 0] == gray[..., 2]).all()

    upright = stored["cat/rotated.jpg"]["pixels"]  # 40x60 with red top rows, turned clockwise: red at the right
    assert upright.shape == (60, 40, 3)
    assert (upright[:, -4:, 0] > 200).all() and (upright[:, -4:, 2] < 60).all()
    assert (upright[:, :20, 2] > 200).all() and (upright[:, :20, 0] < 60).all()

    alpha = stored["cat/alpha.png"]["pixels"].astype(int)
    assert np.abs(alpha[:, :12] - (255, 0, 0)).max() < 40  # opaque red
    assert np.abs(alpha[20:, 20:] - 255).max() < 8  # transparent -> white
    assert np.abs(alpha[:12, 20:] - 127).max() < 8  # half-transparent black on white
    palette = stored["cat/palette.gif"]["pixels"].astype(int)
    assert np.abs(palette[:12, :12] - (0, 200, 0)).max() < 40 and np.abs(palette[:12, 20:] - 255).max() < 8
    gray_alpha = stored["cat/gray_alpha.png"]["pixels"].astype(int)
    assert np.abs(gray_alpha[:, :8] - 60).max() < 8 and np.abs(gray_alpha[:, 12:] - 255).max() < 8

    gray16 = stored["cat/gray16.png"]["pixels"].astype(int)  # 0 / 32896 / 65535 -> 0 / 128 / 255, not clipped
    assert [int(np.median(gray16[:, c])) for c in (4, 24, 40)] == pytest.approx([0, 128, 255], abs=3)
    assert np.abs(stored["cat/rgb16.png"]["pixels"].astype(int) - (255, 0, 0)).max() < 40
    assert np.abs(stored["cat/animated.gif"]["pixels"].astype(int) - 30).max() < 6  # the first frame


def test_duplicates_and_label_conflicts_are_reported(zoo):
    detail = {entry["file"]: entry.get("detail", "") for entry in zoo["summary"].skipped}
    copy, kept = ("cat/copy_of_plain.jpg", "cat/plain.jpg")[:: 1 if "cat/plain.jpg" in zoo["stored"] else -1]
    assert detail[copy] == f"same bytes as {kept}"
    assert detail["dog/shared_too.jpg"] == detail["cat/shared.jpg"] == "same bytes in cat/shared.jpg, dog/shared_too.jpg"
    ids = [record["image/source_id"] for record in zoo["stored"].values()]
    assert len(ids) == len(set(ids))


def test_max_side_and_lossless_storage(tmp_path):
    big = Image.fromarray(smooth(100, 200))
    save(tmp_path / "src/a/big.jpg", big, quality=95)
    small = save(tmp_path / "src/a/small.jpg", Image.fromarray(smooth(20, 30)), quality=95)
    save(tmp_path / "src/a/noise.png", Image.fromarray(noise(0)))
    run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.0, max_side=50, store_png_as="png", workers=1)
    stored = stored_records(tmp_path / "out")
    assert stored["a/big.jpg"]["pixels"].shape == (25, 50, 3) and stored["a/big.jpg"]["image/format"] == b"jpeg"
    assert stored["a/small.jpg"]["image/encoded"] == small
    assert stored["a/noise.png"]["image/format"] == b"png"
    np.testing.assert_array_equal(stored["a/noise.png"]["pixels"], noise(0))  # lossless


# ----------------------------------------------------------------------------------------------- splits


def make_classes(src: pathlib.Path, sizes: dict[str, int], duplicates: int = 0) -> None:
    """Tiny unique PNGs per class; `duplicates` extra byte-identical copies of the first class's images."""
    seed = 0
    for name, size in sizes.items():
        for i in range(size):
            seed += 1
            save(src / name / f"{i:03d}.png", Image.fromarray(noise(seed, 8, 8)))
    first = next(iter(sizes))
    for i in range(duplicates):
        shutil.copy(src / first / f"{i:03d}.png", src / first / f"copy_{i}.png")


def test_split_is_stratified_by_seed_and_disjoint_by_content(tmp_path):
    sizes = {"a": 40, "b": 20, "c": 10}
    make_classes(tmp_path / "src", sizes, duplicates=5)
    summaries = {
        seed: run_convert(tmp_path / "src", tmp_path / f"out{seed}", validation_fraction=0.2, test_fraction=0.1, seed=seed)
        for seed in (0, 1)
    }
    splits = summaries[0].metadata.splits
    candidates = {"a": 45, "b": 20, "c": 10}  # quotas count every candidate file of the class
    validation = [int(n * 0.2 + 0.5) for n in candidates.values()]
    test = [int(n * 0.1 + 0.5) for n in candidates.values()]
    assert list(splits["validation"].per_class) == validation == [9, 4, 2]
    assert list(splits["test"].per_class) == test == [5, 2, 1]
    assert list(splits["train"].per_class) == [n - v - t for n, v, t in zip(sizes.values(), validation, test)]
    assert summaries[0].reasons() == {"duplicate": 5}

    by_split = {}
    for record in stored_records(tmp_path / "out0").values():
        by_split.setdefault(record["split"], set()).add(record["image/source_id"])
    assert not by_split["train"] & by_split["validation"] and not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    other = {r["image/filename"] for r in stored_records(tmp_path / "out1").values() if r["split"] == "validation"}
    mine = {r["image/filename"] for r in stored_records(tmp_path / "out0").values() if r["split"] == "validation"}
    assert mine != other  # the seed chooses


def test_presplit_layout_keeps_splits_and_drops_leaked_copies(tmp_path):
    make_classes(tmp_path / "src" / "train", {"cat": 6, "dog": 5})
    make_classes(tmp_path / "src" / "validation", {"cat": 2})  # same seeds: byte-identical to train/cat/000..001
    save(tmp_path / "src/validation/dog/unique.png", Image.fromarray(noise(99, 8, 8)))
    summary = run_convert(tmp_path / "src", tmp_path / "out", workers=1)
    splits = summary.metadata.splits
    assert summary.metadata.provenance["layout"] == "presplit" and summary.metadata.class_names == ("cat", "dog")
    assert summary.reasons() == {"duplicate": 2}  # the copies in train/ and validation/: one of each pair kept
    assert splits["train"].per_class[0] + splits["validation"].per_class[0] == 6
    assert splits["train"].per_class[1] == 5 and splits["validation"].per_class[1] == 1
    stored = stored_records(tmp_path / "out").values()
    assert all(record["image/filename"].decode().startswith(record["split"] + "/") for record in stored)
    ids = [record["image/source_id"] for record in stored]
    assert len(ids) == len(set(ids)) == 12


def test_max_per_class_caps_training_only(tmp_path):
    make_classes(tmp_path / "src", {"a": 30, "b": 12})
    full = run_convert(tmp_path / "src", tmp_path / "full", workers=1)
    capped = run_convert(tmp_path / "src", tmp_path / "capped", max_per_class=5, workers=1)
    assert list(capped.metadata.splits["train"].per_class) == [5, 5]
    assert capped.metadata.splits["validation"].per_class == full.metadata.splits["validation"].per_class
    assert capped.reasons() == {"over max_per_class": sum(full.metadata.splits["train"].per_class) - 10}
    train = {r["image/filename"] for r in stored_records(tmp_path / "capped").values() if r["split"] == "train"}
    full_train = {r["image/filename"] for r in stored_records(tmp_path / "full").values() if r["split"] == "train"}
    assert train < full_train


# ------------------------------------------------------------------------------- shards and determinism


def test_same_input_and_seed_give_identical_bytes(tmp_path):
    make_classes(tmp_path / "src", {"a": 25, "b": 25})
    save(tmp_path / "src/b/photo.jpg", Image.fromarray(smooth()), quality=90)
    options = dict(num_shards=3, compression="gzip", test_fraction=0.2)
    first = run_convert(tmp_path / "src", tmp_path / "one", workers=1, **options)
    run_convert(tmp_path / "src", tmp_path / "two", workers=2, **options)
    names = sorted(os.listdir(tmp_path / "one"))
    assert names == sorted(os.listdir(tmp_path / "two"))
    assert names == ["dataset.json"] + [records.shard_name(s, i, 3) for s in ("test", "train", "validation") for i in range(3)]
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    shards = first.metadata.splits["train"].shards
    assert [shard.count for shard in shards] == [12, 12, 11]  # round-robin: balanced
    other_seed = run_convert(tmp_path / "src", tmp_path / "three", workers=1, seed=7, **options)
    assert other_seed.metadata.digest != first.metadata.digest


def test_shard_count_follows_shard_size(tmp_path):
    make_classes(tmp_path / "src", {"a": 20})  # 20 PNGs of ~250 bytes
    total = sum(path.stat().st_size for path in (tmp_path / "src" / "a").iterdir())
    summary = run_convert(tmp_path / "src", tmp_path / "out", shard_size_mb=1000 / 2**20, validation_fraction=0.0)
    shards = summary.metadata.splits["train"].shards
    assert len(shards) == -(-total // 1000) > 1 and sum(shard.count for shard in shards) == 20


# ------------------------------------------------------------------------------------------ bad requests


def test_one_line_errors(tmp_path):
    def error(**kwargs) -> str:
        options = {"src": tmp_path / "src", "out": tmp_path / "out", **kwargs}
        with pytest.raises(convert.ConvertError) as raised:
            run_convert(options.pop("src"), options.pop("out"), **options)
        assert "\n" not in str(raised.value)
        return str(raised.value)

    assert "no such folder" in error(src=tmp_path / "missing")
    (tmp_path / "src").mkdir()
    assert "is empty" in error()
    (tmp_path / "src" / "cat").mkdir()
    (tmp_path / "src" / "cat" / ".DS_Store").write_bytes(b"x")
    assert error().startswith(f"class folder {tmp_path / 'src' / 'cat'} has no images")
    (tmp_path / "src" / "cat" / "a.txt").write_bytes(b"not an image")
    assert error().endswith("cat has no images (2 files skipped)")
    save(tmp_path / "src/cat/b.png", Image.fromarray(noise(0)))
    assert error(validation_fraction=1.5) == "--validation_fraction=1.5: must be in [0, 1)"
    assert "--jpeg_quality=0" in error(jpeg_quality=0)
    assert "inside --src" in error(out=tmp_path / "src" / "records")
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert "is not empty" in error()
    (tmp_path / "out" / "notes.txt").unlink()
    run_convert(tmp_path / "src", tmp_path / "out", workers=1)
    assert "already holds records" in error()
    assert run_convert(tmp_path / "src", tmp_path / "out", overwrite=True, workers=1).written == 1
    (tmp_path / "src" / "train").mkdir()
    assert "mixes split folders" in error(out=tmp_path / "other")


@pytest.mark.slow
def test_cli_flagfile_summary_and_exit_status(tmp_path):
    make_classes(tmp_path / "src", {"a": 4, "b": 4})
    (tmp_path / "src" / "a" / "notes.txt").write_text("not an image")
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(f"--src={tmp_path / 'src'}\n--out={tmp_path / 'out'}\n--num_shards=2\n--strict\n")
    done = subprocess.run(TOOL + [f"--flagfile={flagfile}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr  # --strict and a skipped file
    assert done.stdout.strip().splitlines()[-1] == "written 8, skipped 1: 1 not an image"
    assert "skipped a/notes.txt: not an image" in done.stderr and "--strict" in done.stderr
    missing = subprocess.run(TOOL + ["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"make_tfrecords: error: --src {tmp_path / 'nope'}: no such folder"


@pytest.mark.slow
def test_rerun_after_kill_gives_the_full_output(tmp_path):
    src = tmp_path / "src"
    rng = np.random.default_rng(0)
    for i in range(600):  # PNGs: every one is converted, so the write loop lasts long enough to kill it
        save(src / f"class_{i % 3}" / f"{i:03d}.png", Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)))
    command = TOOL + [f"--src={src}", f"--out={tmp_path / 'out'}", "--num_shards=4", "--workers=1", "--raw_max_bytes=0"]
    killed = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((tmp_path / "out").glob("*.incomplete")):  # writing has begun
        assert killed.poll() is None and time.time() < deadline, "the run ended before it could be killed"
        time.sleep(0.005)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    left = os.listdir(tmp_path / "out")
    assert "dataset.json" not in left and not any(name.endswith(".tfrecord") for name in left)

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)  # same command, no --overwrite
    assert rerun.returncode == 0, rerun.stderr
    run_convert(src, tmp_path / "uninterrupted", num_shards=4)
    names = sorted(os.listdir(tmp_path / "out"))
    assert names == sorted(os.listdir(tmp_path / "uninterrupted")) and len(names) == 9
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "uninterrupted" / name).read_bytes(), name


@pytest.mark.parametrize("label, size", [(0, 0), (3, 1), (200, 300), (2**40, 70_000)])
def test_encoded_example_is_the_deterministic_proto(label, size):
    encoded = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    text = {"image/format": "jpeg", "image/class/text": "ünï" * 50, "image/filename": f"cat/{size}.jpg"}
    numbers = {"image/class/label": label, "image/height": 375, "image/width": size, "image/channels": 3}
    example = tf.train.Example()
    for key, value in [("image/encoded", encoded), ("image/source_id", b"ab" * 32)] + [
        (key, value.encode()) for key, value in text.items()
    ]:
        example.features.feature[key].bytes_list.value.append(value)
    for key, value in numbers.items():
        example.features.feature[key].int64_list.value.append(value)
    raw = records.encode_example(
        encoded=encoded, image_format="jpeg", label=label, class_name=text["image/class/text"], height=375,
        width=size, channels=3, filename=text["image/filename"], source_id="ab" * 32,
    )
    assert raw == example.SerializeToString(deterministic=True)
    parsed = records.parse_example(tf.constant(raw))
    assert parsed["image/encoded"].numpy() == encoded and parsed["image/class/label"].numpy() == label
