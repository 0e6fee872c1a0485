"""The converter and the records under faults and hostile input: nothing lost, nothing hung, one clear line."""

import io
import os
import signal
import struct
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_convert import TOOL, make_classes, noise, run_convert, save, stored_records

from tltrain import convert, records
from tltrain.config import DataConfig
from tltrain.convert import options as options_lib
from tltrain.convert import pipeline, workers
from tltrain.dataset_metadata import DatasetMetadata


def skipped_of(summary) -> dict[str, tuple[str, str]]:
    return {entry["file"]: (entry["reason"], entry.get("detail", "")) for entry in summary.skipped}


def files_of(folder) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def one_line_error(src, out, **kwargs) -> str:
    with pytest.raises(convert.ConvertError) as raised:
        run_convert(src, out, **kwargs)
    assert "\n" not in str(raised.value)
    return str(raised.value)


def test_overwrite_replaces_old_records_only_once_the_new_ones_are_complete(tmp_path):
    make_classes(tmp_path / "good", {"a": 6, "b": 6})
    run_convert(tmp_path / "good", tmp_path / "out", num_shards=2, workers=1)
    before = files_of(tmp_path / "out")
    (tmp_path / "bad" / "a").mkdir(parents=True)
    (tmp_path / "bad" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    make_classes(tmp_path / "bad", {"b": 3})
    assert "class folder" in one_line_error(tmp_path / "bad", tmp_path / "out", overwrite=True, workers=1)
    assert files_of(tmp_path / "out") == before  # untouched: the failed run replaced nothing
    summary = run_convert(tmp_path / "good", tmp_path / "out", num_shards=1, overwrite=True, workers=1)
    assert sorted(files_of(tmp_path / "out")) == ["dataset.json", "train-00000-of-00001.tfrecord",
                                                  "validation-00000-of-00001.tfrecord"]
    assert summary.written == 12 and len(stored_records(tmp_path / "out")) == 12


def test_links_resolve_to_real_files_and_a_file_under_two_classes_is_a_label_conflict(tmp_path):
    src, outside = tmp_path / "src", tmp_path / "elsewhere"
    for name, seed in [("blue/a.png", 1), ("blue/b.png", 2), ("green/own.png", 3), ("green/sub/c.png", 4),
                       ("green/sub/d.png", 5)]:
        save(src / name, Image.fromarray(noise(seed, 8, 8)))
    save(outside / "e.png", Image.fromarray(noise(6, 8, 8)))
    (src / "blue" / "zz").symlink_to("../green/sub")  # green's images reached as blue ones
    (src / "green" / "ext").symlink_to(outside)  # leaves --src: read, and reported
    (src / "green" / "loop").symlink_to("..")  # a loop: not followed
    (src / "blue" / "same.png").symlink_to("a.png")  # one file, two names in one class
    summary = run_convert(src, tmp_path / "out", validation_fraction=0.0, workers=1)
    written = {name: record["image/class/text"].decode() for name, record in stored_records(tmp_path / "out").items()}
    assert written == {"blue/a.png": "blue", "blue/b.png": "blue", "green/own.png": "green", "green/ext/e.png": "green"}
    conflict = "the same file reached as blue/zz/c.png, green/sub/c.png"
    skipped = skipped_of(summary)
    assert skipped["blue/zz/c.png"] == skipped["green/sub/c.png"] == ("label conflict", conflict)
    assert skipped["green/sub/d.png"][0] == skipped["blue/zz/d.png"][0] == "label conflict"
    assert skipped["blue/same.png"] == ("duplicate", "the same file as blue/a.png")
    assert set(written) | set(skipped) == {"blue/a.png", "blue/b.png", "blue/same.png", "blue/zz/c.png",
                                           "blue/zz/d.png", "green/own.png", "green/sub/c.png", "green/sub/d.png",
                                           "green/ext/e.png"}  # every name of every file: none unaccounted for
    assert summary.links_outside == [{"file": "green/ext/e.png", "target": str((outside / "e.png").resolve())}]


def test_a_source_that_becomes_a_fifo_after_the_scan_is_skipped_without_hanging(tmp_path, monkeypatch):
    make_classes(tmp_path / "src", {"a": 40})
    fifo = tmp_path / "src" / "a" / "007.png"

    real_scan = pipeline.scan

    def scan_then_swap(src):
        found = real_scan(src)
        fifo.unlink()
        os.mkfifo(fifo)
        return found

    monkeypatch.setattr(pipeline, "scan", scan_then_swap)
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=run_convert(
        tmp_path / "src", tmp_path / "out", validation_fraction=0.0, workers=2)), daemon=True)
    thread.start()
    thread.join(timeout=120)
    if thread.is_alive():  # unblock the reader, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the converter blocked on a FIFO")
    assert skipped_of(result["summary"]) == {"a/007.png": ("unreadable", "not a regular file when opened (a FIFO)")}
    assert result["summary"].written == 39
    assert not [name for name in os.listdir(tmp_path / "out") if name.endswith(".incomplete")]


def test_a_killed_worker_stops_the_run_in_one_line_and_a_rerun_gives_everything(tmp_path, monkeypatch):
    make_classes(tmp_path / "src", {"a": 60, "b": 60})

    class KilledMidway(workers.Workers):
        def map(self, jobs):
            for k, item in enumerate(super().map(jobs)):
                if k == 20:
                    os.kill(self.processes[0].pid, signal.SIGKILL)
                yield item

    monkeypatch.setattr(pipeline, "Workers", KilledMidway)
    message = one_line_error(tmp_path / "src", tmp_path / "out", workers=2)
    assert " died (killed by signal 9) while reading " in message and message.endswith("run the same command again")
    assert os.listdir(tmp_path / "out") == []  # the temporary shards are gone too
    monkeypatch.undo()
    rerun = run_convert(tmp_path / "src", tmp_path / "out", workers=2)
    assert rerun.written == 120 and rerun.metadata == run_convert(tmp_path / "src", tmp_path / "fresh", workers=1).metadata


def test_a_jpeg_whose_header_lies_about_its_size_is_reported(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(noise(0, 64, 64)).save(buffer, "JPEG", quality=90)
    data = bytearray(buffer.getvalue())
    frame = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, 20000, 20000)
    (tmp_path / "src" / "a").mkdir(parents=True)
    (tmp_path / "src" / "a" / "liar.jpg").write_bytes(bytes(data))
    save(tmp_path / "src" / "a" / "fine.jpg", Image.fromarray(noise(1, 64, 64)), quality=90)
    summary = run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.0, workers=1)
    reason, detail = skipped_of(summary)["a/liar.jpg"]
    assert reason == "corrupt" and detail.startswith("header says 20000x20000") and summary.written == 1


@pytest.mark.parametrize("name", ["two\nlines", "para\u2028graph", b"latin1-\xe9"])
def test_class_names_labels_txt_cannot_keep_are_refused(tmp_path, name):
    make_classes(tmp_path / "src", {"fine": 2})
    folder = os.path.join(os.fsencode(tmp_path / "src") if isinstance(name, bytes) else tmp_path / "src", name)
    os.mkdir(folder)
    save(pathlib_of(folder) / "x.png", Image.fromarray(noise(9, 8, 8)))
    message = one_line_error(tmp_path / "src", tmp_path / "out", workers=1)
    assert message.startswith("class folder ") and "rename the folder" in message


def pathlib_of(folder):
    import pathlib

    return pathlib.Path(os.fsdecode(folder))


def test_file_names_that_are_not_utf8_are_written_with_escapes(tmp_path):
    make_classes(tmp_path / "src", {"cat": 2})
    save(pathlib_of(os.path.join(os.fsencode(tmp_path / "src" / "cat"), b"caf\xe9.png")), Image.fromarray(noise(5, 8, 8)))
    (pathlib_of(os.path.join(os.fsencode(tmp_path / "src" / "cat"), b"notes-\xff.txt"))).write_text("x")
    summary = run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.0, workers=2)
    assert "cat/caf\\xe9.png" in stored_records(tmp_path / "out")
    assert skipped_of(summary) == {"cat/notes-\\xff.txt": ("not an image", "")}
    assert DatasetMetadata.read(str(tmp_path / "out")).skipped == tuple(summary.skipped)


def test_an_unusable_out_is_one_line(tmp_path):
    make_classes(tmp_path / "src", {"a": 2})
    (tmp_path / "file").write_text("x")
    assert one_line_error(tmp_path / "src", tmp_path / "file", workers=1) == f"--out {tmp_path / 'file'}: is a file, not a folder"
    assert "cannot write there" in one_line_error(tmp_path / "src", tmp_path / "file" / "records", workers=1)


@pytest.mark.parametrize("flag, value", [
    ("workers", -1), ("workers", 10**6), ("seed", -1), ("max_per_class", 0), ("jpeg_quality", 101), ("max_side", -1),
    ("num_shards", -1), ("num_shards", 100000), ("shard_size_mb", 0.0), ("shard_size_mb", float("nan")),
    ("validation_fraction", -0.1), ("test_fraction", 1.0), ("workers", 1.5), ("store_png_as", "gif"),
])
def test_every_numeric_option_is_range_checked(flag, value):
    with pytest.raises(convert.ConvertError) as raised:
        options_lib.Options(**{flag: value})
    assert str(raised.value).startswith(f"--{flag}={value}: must be ") and "\n" not in str(raised.value)


def cut(path, keep_bytes: int):
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])


def record_ends(path) -> list[int]:
    """Byte offsets where each record of an uncompressed TFRecord file ends."""
    ends, offset = [], 0
    with open(path, "rb") as f:
        for data in records.read_records(f, str(path)):
            offset += 16 + len(data)
            ends.append(offset)
    return ends


def test_a_shard_cut_at_a_record_boundary_is_found_and_named(tmp_path):
    make_classes(tmp_path / "src", {"a": 12, "b": 12})
    run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.0, num_shards=2, workers=1)
    shard = tmp_path / "out" / records.shard_name("train", 1, 2)
    cut(shard, record_ends(shard)[5])  # 6 of its 12 records
    metadata = DatasetMetadata.read(str(tmp_path / "out"))
    assert metadata.verify() == [f"{shard}: holds 6 records, dataset.json says 12"]
    from tltrain import data

    batches = data.make_train_dataset(DataConfig(records_dir=str(tmp_path / "out"), batch_size=4, shuffle_buffer=1), 16)
    with pytest.raises(tf.errors.FailedPreconditionError) as raised:
        for _ in batches.take(20):  # more than the 18 examples there are: the shard ends early
            pass
    assert metadata.read_failure(raised.value).startswith(f"{shard}: holds 6 records, dataset.json says 12; ")


def test_verify_checks_framing_checksums_and_counts(tmp_path):
    make_classes(tmp_path / "src", {"a": 8, "b": 8})
    run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.25, workers=1)
    assert DatasetMetadata.read(str(tmp_path / "out")).verify() == []
    train, validation = (tmp_path / "out" / records.shard_name(s, 0, 1) for s in ("train", "validation"))
    train_ends, validation_ends = record_ends(train), record_ends(validation)
    damaged = bytearray(train.read_bytes())
    damaged[train_ends[2] + 40] ^= 1  # a bit inside record 3's data
    train.write_bytes(bytes(damaged))
    cut(validation, validation_ends[1] + 30)  # inside record 2
    done = subprocess.run(TOOL + [f"--verify={tmp_path / 'out'}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("make_tfrecords")] == [
        f"make_tfrecords: damaged: {train}: record 3 (byte {train_ends[2]}): corrupted data (checksum mismatch)",
        f"make_tfrecords: damaged: {validation}: cut short inside record 2 (byte {validation_ends[1]})",
    ]
    assert done.stdout.strip() == f"{tmp_path / 'out'}: 2 shards, 16 records in dataset.json: 2 of 2 shards damaged"
    bad_flag = subprocess.run(TOOL + [f"--src={tmp_path / 'src'}", f"--out={tmp_path / 'o'}", "--workers=-1"],
                              capture_output=True, text=True, timeout=300)
    assert bad_flag.returncode == 1 and bad_flag.stderr == "make_tfrecords: error: --workers=-1: must be in [0, 1024]\n"


def test_training_on_a_shard_cut_mid_record_stops_in_one_line_naming_it(tmp_path):
    from tltrain import main as main_lib

    make_classes(tmp_path / "src", {"a": 8, "b": 8})
    run_convert(tmp_path / "src", tmp_path / "out", validation_fraction=0.25, workers=1)
    shard = tmp_path / "out" / records.shard_name("train", 0, 1)
    ends = record_ends(shard)
    cut(shard, ends[4] + 20)
    main_lib.FLAGS.unparse_flags()
    argv = main_lib._parse_flags(["tltrain", f"--records_dir={tmp_path / 'out'}", f"--model_dir={tmp_path / 'run'}",
                                  "--model=simple_cnn", "--weights=none", "--image_size=16", "--batch_size=4", "--epochs=1"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            main_lib.main(argv)
    finally:
        main_lib.FLAGS.unparse_flags()
    assert str(exit_info.value.code) == (
        f"tltrain: {shard}: cut short inside record 5 (byte {ends[4]}); rebuild the records "
        f"(tools/make_tfrecords.py --verify {tmp_path / 'out'} checks them)")
