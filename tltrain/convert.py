"""A folder of labelled images -> TFRecord shards + dataset.json, in the one schema of tltrain.records.

Layouts: `src/<class>/**/<image>` (split here: stratified, by seed) or `src/{train,validation,test}/<class>/**`
(the given split is kept). Every file under `src` ends up written or skipped with a reason.

One pass over the files, one read of each. Worker processes read, hash and check each file; JPEG bytes that
TensorFlow decodes as they are (8-bit baseline/progressive, gray/YCbCr/RGB, upright, complete) are kept byte
for byte, everything else is decoded by Pillow, made upright RGB (alpha composited on white) and re-encoded
once. A worker frames its records and keeps them; the main process decides, in seeded order, each record's
split, shard and byte offset (round-robin over the shards, so the output does not depend on the number of
workers), and the worker that holds the record writes it there. Shards are temporary files renamed only
when all are complete, so a killed run never leaves a shard that looks whole. TensorFlow is imported lazily:
the workers import this module and must start in a fraction of a second.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gzip
import hashlib
import io
import itertools
import json
import math
import multiprocessing
import os
import posixpath
import random
import re
import shutil
import signal
import stat as stat_module
import struct
import sys
import tempfile
import types
import warnings

import google_crc32c
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from tltrain import records
from tltrain.records import SPLITS

SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"}
# JPEG frame types libjpeg (inside TF) decodes: baseline, extended sequential, progressive (Huffman coded).
TF_JPEG_FRAMES = {0xC0, 0xC1, 0xC2}
_OUR_FILES = re.compile(
    r"^(train|validation|test)-\d{5}(-of-\d{5})?\.tfrecord(\.incomplete)?$|^dataset\.json(\.incomplete)?$"
)


class ConvertError(ValueError):
    """A one-line, user-facing reason why the conversion cannot run."""


# ----------------------------------------------------------------------------------------------- options


@dataclasses.dataclass(frozen=True)
class Options:
    """How images are split, stored and sharded; checked before any file is touched."""

    validation_fraction: float = 0.1
    test_fraction: float = 0.0
    seed: int = 0
    max_per_class: int | None = None  # cap on *training* images per class; validation/test are not capped
    jpeg_quality: int = 95
    store_png_as: str = "jpeg"  # format for converted non-JPEG sources: jpeg | png (lossless)
    max_side: int = 0  # 0: keep the size; else downsize so the longer side is at most this
    num_shards: int = 0  # per split; 0: from shard_size_mb
    shard_size_mb: float = 128.0
    compression: str = ""  # "" or "gzip"

    def __post_init__(self):
        def check(ok: bool, flag: str, rule: str):
            if not ok:
                raise ConvertError(f"--{flag}={getattr(self, flag)}: {rule}")

        check(0 <= self.validation_fraction < 1, "validation_fraction", "must be in [0, 1)")
        check(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        check(self.validation_fraction + self.test_fraction < 1, "test_fraction", "validation + test must be < 1")
        check(self.max_per_class is None or self.max_per_class >= 1, "max_per_class", "must be >= 1")
        check(1 <= self.jpeg_quality <= 100, "jpeg_quality", "must be in [1, 100]")
        check(self.store_png_as in ("jpeg", "png"), "store_png_as", "must be jpeg or png")
        check(self.max_side >= 0, "max_side", "must be >= 0 (0: keep the size)")
        check(self.num_shards >= 0, "num_shards", "must be >= 0 (0: from --shard_size_mb)")
        check(self.shard_size_mb > 0, "shard_size_mb", "must be > 0")
        check(self.compression.lower() in ("", "none", "gzip"), "compression", "must be gzip or none")


# ----------------------------------------------------------------------------------------------- scanning


@dataclasses.dataclass
class Source:
    """One candidate image: a non-hidden file inside a class folder."""

    rel: str  # "/"-separated path relative to src
    path: str
    folder: str  # its class folder, relative to src ("cat" or "train/cat")
    class_name: str
    split: str | None  # the given split in the pre-split layout
    size: int


@dataclasses.dataclass
class Scan:
    layout: str  # "folders" | "presplit"
    class_names: list[str]
    folders: list[str]
    sources: list[Source]
    skipped: list[dict]


def _hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def _walk(root: str):
    """Every file under root as (rel parts, absolute path, stat or OSError), sorted, symlinks followed once."""
    seen_dirs = set()
    problems = []

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=problems.append):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a second link to the same folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        parts = () if rel_dir == "." else tuple(rel_dir.split(os.sep))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                yield parts + (name,), path, os.stat(path)
            except OSError as error:
                yield parts + (name,), path, error
    for error in problems:  # folders os.walk could not list
        rel = os.path.relpath(error.filename, root).split(os.sep)
        yield tuple(rel), error.filename, error


def scan(src: str) -> Scan:
    """Finds the layout, classes and candidate images; one-line errors for sources that cannot work."""
    if not os.path.isdir(src):
        raise ConvertError(f"--src {src}: {'not a folder' if os.path.exists(src) else 'no such folder'}")
    top_dirs = sorted(
        name for name in os.listdir(src) if not _hidden(name) and os.path.isdir(os.path.join(src, name))
    )
    presplit = bool(top_dirs) and set(top_dirs) <= set(SPLITS)
    if not presplit and set(top_dirs) & set(SPLITS):
        raise ConvertError(
            f"--src {src} mixes split folders ({', '.join(sorted(set(top_dirs) & set(SPLITS)))}) with class folders "
            f"({', '.join(sorted(set(top_dirs) - set(SPLITS)))}): use either src/<class>/ or src/<split>/<class>/"
        )
    depth = 2 if presplit else 1  # path parts before the class folder's contents
    folders = {}
    for split in top_dirs if presplit else [None]:
        parent = os.path.join(src, split) if split else src
        for name in sorted(os.listdir(parent)):
            if not _hidden(name) and os.path.isdir(os.path.join(parent, name)):
                folders[posixpath.join(split, name) if split else name] = 0

    sources, skipped = [], []
    for parts, path, stat in _walk(src):
        rel = "/".join(parts)
        folder = "/".join(parts[:depth])
        if any(_hidden(part) for part in parts):
            skipped.append({"file": rel, "reason": "hidden"})
        elif len(parts) <= depth or folder not in folders:
            skipped.append({"file": rel, "reason": "outside class folders"})
        elif isinstance(stat, OSError):
            skipped.append({"file": rel, "reason": "unreadable", "detail": stat.strerror or type(stat).__name__})
        elif not stat_module.S_ISREG(stat.st_mode):
            skipped.append({"file": rel, "reason": "unreadable", "detail": "not a regular file"})
        elif stat.st_size == 0:
            skipped.append({"file": rel, "reason": "zero bytes"})
        else:
            folders[folder] += 1
            split = parts[0] if presplit else None
            sources.append(Source(rel, path, folder, parts[depth - 1], split, stat.st_size))
    if not folders:
        what = "is empty" if not skipped else f"has no class folders ({len(skipped)} loose files)"
        raise ConvertError(f"--src {src} {what}: expected {src.rstrip('/')}/<class>/<images>")
    empty = [folder for folder, count in folders.items() if count == 0]
    if empty:
        raise ConvertError(f"class folder {posixpath.join(src, empty[0])} has no images ({len(empty)} such folders)")
    class_names = sorted({posixpath.basename(folder) for folder in folders})
    return Scan("presplit" if presplit else "folders", class_names, list(folders), sources, skipped)


# ------------------------------------------------------------------------------- per-file work (workers)


@dataclasses.dataclass
class Loaded:
    """What a worker made of one file: the bytes to store, or why not."""

    sha256: str = ""  # of the source file
    encoded: bytes = b""  # emptied when the worker keeps the record (record_size says how long it is)
    image_format: str = ""  # jpeg | png
    height: int = 0
    width: int = 0
    channels: int = 0
    encoded_sha256: str = ""
    reason: str = ""  # set when skipped
    detail: str = ""
    record_size: int = 0  # bytes of its framed TFRecord record


class _Unsupported(Exception):
    pass


def _exif_orientation(app1: bytes) -> int:
    exif = Image.Exif()
    try:
        exif.load(app1)
        return int(exif.get(0x0112, 1))
    except Exception:  # unreadable EXIF: let Pillow decide below
        return 0


_SEGMENT = struct.Struct(">BBH")  # 0xFF, marker, segment length


def jpeg_header(data: bytes) -> dict | None:
    """Frame type, size, components, EXIF orientation and completeness from the marker segments.

    None when the segments before the first scan are malformed or cut short. `complete` is whether an EOI
    marker follows the first scan: inside entropy-coded data 0xFF is always stuffed, so a file cut anywhere
    after the scan header has none.
    """
    i, frame, orientation = 2, None, 1
    while i + 4 <= len(data):
        prefix, marker, length = _SEGMENT.unpack_from(data, i)
        if prefix != 0xFF:
            return None
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        if marker == 0xD9:
            return None
        end = i + 2 + length
        if marker == 0xDA:
            if frame is None:
                return None
            return dict(frame, orientation=orientation, complete=data.rfind(b"\xff\xd9", end) != -1)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if end - i < 10 or end > len(data):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, i + 4)
            frame = {"frame": marker, "precision": precision, "height": height, "width": width, "components": components}
        elif marker == 0xE1 and data.startswith(b"Exif\x00\x00", i + 4):
            orientation = _exif_orientation(data[i + 4 : end])
        i = end
    return None


def _tf_decodes_as_is(header: dict | None, max_side: int) -> bool:
    return (
        header is not None
        and header["frame"] in TF_JPEG_FRAMES
        and header["precision"] == 8
        and header["components"] in (1, 3)  # CMYK/YCCK: converted once, readers get 1- or 3-channel JPEGs
        and header["orientation"] == 1
        and header["complete"]
        and header["height"] > 0
        and (not max_side or max(header["height"], header["width"]) <= max_side)
    )


def _scale_16bit(image: Image.Image) -> Image.Image:
    """16-bit gray -> 8-bit (Pillow's own convert clips at 255, turning most pixels white)."""
    import numpy as np

    pixels = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    return Image.fromarray(((pixels * 255 + 32767) // 65535).astype(np.uint8), "L")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, transparent pixels composited on white."""
    if image.mode.startswith("I"):
        image = _scale_16bit(image)
    if image.mode == "F":
        raise _Unsupported("32-bit float pixels")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError as error:
        raise _Unsupported(f"{image.mode} pixels") from error


def _reencode(data: bytes, options: Options) -> tuple[bytes, str, int, int]:
    with Image.open(io.BytesIO(data)) as image:
        lossy_source = image.format in ("JPEG", "MPO")
        if options.max_side and max(image.size) > options.max_side:
            scale = options.max_side / max(image.size)
            image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))  # DCT scaling
        image.load()
        image = to_rgb(ImageOps.exif_transpose(image))
    if options.max_side and max(image.size) > options.max_side:
        scale = options.max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if lossy_source or options.store_png_as == "jpeg":
        image.save(buffer, "JPEG", quality=options.jpeg_quality)
        image_format = "jpeg"
    else:
        image.save(buffer, "PNG")
        image_format = "png"
    return buffer.getvalue(), image_format, image.height, image.width


def _looks_like_image(data: bytes) -> bool:
    """Signature of a format Pillow reads: such a file that fails to open is corrupt, not a stray non-image."""
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")) or (
        data.startswith(b"RIFF") and data[8:12] == b"WEBP"
    )


def read_file(path: str) -> bytes:
    """The whole file, in one read() of its size: open().read() makes ~2x the system calls (lseek, isatty)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        data = os.read(fd, size + 1)  # a regular file returns all that is asked for, up to its end
        if len(data) == size:
            return data
        chunks = [data]  # the file changed size, or is over read()'s 2 GiB: read to the end
        while chunk := os.read(fd, 1 << 24):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load(path: str, options: Options) -> Loaded:
    """Reads, hashes and checks one file; converts it when TF could not decode its bytes correctly."""
    try:
        data = read_file(path)
    except OSError as error:
        return Loaded(reason="unreadable", detail=error.strerror or type(error).__name__)
    if not data:
        return Loaded(reason="zero bytes")
    sha256 = hashlib.sha256(data).hexdigest()
    header = jpeg_header(data) if data.startswith(b"\xff\xd8\xff") else None
    if _tf_decodes_as_is(header, options.max_side):
        size = (header["height"], header["width"], header["components"])
        return Loaded(sha256, data, "jpeg", *size, sha256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/metadata it then handles
            encoded, image_format, height, width = _reencode(data, options)
    except Image.DecompressionBombError as error:
        return Loaded(sha256, reason="unsupported", detail=str(error).split(" could ")[0])
    except _Unsupported as error:
        return Loaded(sha256, reason="unsupported", detail=str(error))
    except UnidentifiedImageError:
        return Loaded(sha256, reason="corrupt" if _looks_like_image(data) else "not an image")
    except Exception as error:  # Pillow decoders raise many types on bad data; every one means a bad file
        cut = "truncat" in str(error).lower() or (header is not None and not header["complete"])
        return Loaded(sha256, reason="truncated" if cut else "corrupt", detail=f"{type(error).__name__}: {error}")
    return Loaded(sha256, encoded, image_format, height, width, 3, hashlib.sha256(encoded).hexdigest())


def record_fields(job: dict, loaded: Loaded) -> dict:
    """The record's fields but the image bytes: the job's (label, class_name, filename) and the loaded image's."""
    return {
        "image_format": loaded.image_format,
        "label": job["label"],
        "class_name": job["class_name"],
        "height": loaded.height,
        "width": loaded.width,
        "channels": loaded.channels,
        "filename": job["filename"],
        "source_id": loaded.sha256,
    }


def _masked_crc32c(pieces) -> bytes:
    crc = 0
    for piece in pieces:
        crc = google_crc32c.extend(crc, piece)
    return struct.pack("<I", ((crc >> 15 | crc << 17) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(pieces: tuple[bytes, ...]) -> list[bytes]:
    """TFRecord framing of the record made of `pieces`: length, its masked crc32c, data, the data's masked crc32c."""
    length = struct.pack("<Q", sum(map(len, pieces)))
    return [length + _masked_crc32c([length]), *pieces, _masked_crc32c(pieces)]


class RecordMaker:
    """A worker's state: loads files into framed records, holds them until told where they go, writes them there.

    Each record is written once, by the process that read its file, with one pwritev at the offset the main
    process chose: no image bytes cross a pipe and none are copied on the way to the shard.
    """

    def __init__(self, options: Options):
        self.options = options
        self.held = {}  # job key -> framed record pieces
        self.shards = {}  # temporary shard path -> file descriptor

    def step(self, places: list[tuple], jobs: list[tuple]) -> list[Loaded]:
        """Writes held records to their places [(key, shard path or None to drop, offset)], then loads jobs
        [(key, path, job fields)] and returns what became of each (records kept here, not returned)."""
        for key, path, offset in places:
            pieces = self.held.pop(key)
            if path is not None:
                self._write(path, pieces, offset)
        results = []
        for key, path, job in jobs:
            loaded = load(path, self.options)
            if not loaded.reason:
                pieces = tfrecord(records.example_pieces(encoded=loaded.encoded, **record_fields(job, loaded)))
                self.held[key] = pieces
                loaded.encoded, loaded.record_size = b"", sum(map(len, pieces))
            results.append(loaded)
        return results

    def _write(self, path: str, pieces: list[bytes], offset: int):
        try:
            if path not in self.shards:
                self.shards[path] = os.open(path, os.O_WRONLY)  # created by the main process
            written = os.pwritev(self.shards[path], pieces, offset)
            rest = b"".join(pieces)[written:]
            while rest:  # a short write (rare: signals, huge records)
                offset, written = offset + written, os.pwrite(self.shards[path], rest, offset + written)
                rest = rest[written:]
        except OSError as error:
            raise ConvertError(f"{path}: cannot write: {error.strerror or error}") from None

    def close(self):
        for fd in self.shards.values():
            os.close(fd)
        self.shards.clear()


def _handle(maker: RecordMaker, message: tuple) -> list[Loaded] | Exception:
    try:
        return maker.step(*message)
    except Exception as error:  # a write failed (disk full...): the main process raises it
        return error


def _serve(connection, options: Options):
    """Worker loop: (places, jobs) in, list of Loaded out, until None or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    maker = RecordMaker(options)
    try:
        while (message := connection.recv()) is not None:
            connection.send(_handle(maker, message))
    except (EOFError, BrokenPipeError):
        pass
    finally:
        maker.close()


class _InProcess:
    """A RecordMaker in this process behind a pipe's send/recv (workers=1): one code path for both."""

    def __init__(self, options: Options):
        self.maker, self.replies = RecordMaker(options), collections.deque()

    def send(self, message):
        if message is not None:
            self.replies.append(_handle(self.maker, message))

    def recv(self):
        return self.replies.popleft()

    def close(self):
        self.maker.close()


@contextlib.contextmanager
def _without_caller_main():
    """Starts worker processes with only this package in mind.

    Hides the caller's __main__ (multiprocessing would re-run the caller's script in every worker: importing
    TF there, or failing without an `if __name__ == "__main__"` guard) and puts the package root on
    PYTHONPATH (Python 3.11's forkserver ignores the sys.path it is handed, so its preload would fail).
    """
    main, pythonpath = sys.modules["__main__"], os.environ.get("PYTHONPATH")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.modules["__main__"] = types.ModuleType("__main__")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, pythonpath]))
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        if pythonpath is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = pythonpath


class Workers:
    """RecordMakers in worker processes (or one in this process), fed over pipes by the calling thread.

    Forked from a forkserver that has imported only this module (forking this process itself, with
    TensorFlow's threads running, is unsafe; spawning fresh interpreters costs ~0.3 s each): the server
    starts once per process, workers in milliseconds. Plain pipes read by the main thread, not
    multiprocessing.Pool: a worker must keep its records until the main process has placed them.
    """

    def __init__(self, count: int, options: Options, chunk: int = 16, depth: int = 2):
        self.chunk, self.depth, self.processes = chunk, depth, []
        if count == 1:
            self.pipes = [_InProcess(options)]
        else:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload([__name__])
            self.pipes = []
            with _without_caller_main():
                for _ in range(count):
                    parent, child = context.Pipe()
                    process = context.Process(target=_serve, args=(child, options), daemon=True)
                    process.start()
                    child.close()
                    self.pipes.append(parent)
                    self.processes.append(process)
        self.places = [[] for _ in self.pipes]  # per worker: placements to send with its next message

    def _worker(self, key: int) -> int:
        return key // self.chunk % len(self.pipes)  # chunk k of the jobs goes to worker k % count

    def place(self, key: int, path: str | None, offset: int = 0):
        """Where the record of job `key` goes (None: nowhere); sent to its worker with the next message."""
        self.places[self._worker(key)].append((key, path, offset))

    def _send(self, worker: int, jobs: list[tuple]):
        self.pipes[worker].send((self.places[worker], jobs))
        self.places[worker] = []

    def _recv(self, worker: int, what: str) -> list[Loaded]:
        try:
            reply = self.pipes[worker].recv()
        except EOFError:
            raise RuntimeError(f"a worker process died while {what}") from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def map(self, jobs: list[tuple]):
        """Yields (job, Loaded) for every job (key, path, fields), in order; the caller place()s each loaded
        record before asking for the next chunk. Returns once every placed record is written."""
        chunks = [jobs[i : i + self.chunk] for i in range(0, len(jobs), self.chunk)]
        ahead = self.depth * len(self.pipes)
        for k in range(min(ahead, len(chunks))):
            self._send(k % len(self.pipes), chunks[k])
        for k, part in enumerate(chunks):
            yield from zip(part, self._recv(k % len(self.pipes), f"reading {part[0][1]} ... {part[-1][1]}"))
            if k + ahead < len(chunks):
                self._send((k + ahead) % len(self.pipes), chunks[k + ahead])
        for worker in range(len(self.pipes)):  # the last placements; the replies say they are written
            self._send(worker, [])
            self._recv(worker, "writing records")

    def close(self):
        """Stops the workers (again: nothing)."""
        pipes, processes, self.pipes, self.processes = self.pipes, self.processes, [], []
        for pipe, process in itertools.zip_longest(pipes, processes):
            try:
                pipe.send(None)
            except OSError:
                pass
            pipe.close()
            if process is not None:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()


# --------------------------------------------------------------------------------- writing (main process)


def _fingerprint(fields: dict, encoded_sha256: str) -> bytes:
    """What the dataset digest covers for one record: every field, and the image bytes by their sha256."""
    return hashlib.sha256(repr((encoded_sha256, fields)).encode()).digest()  # fields: one fixed key order


class SplitWriter:
    """One split's shards: places records round-robin at byte offsets in temporary files (workers write
    them there); finish() removes dropped records, compresses if asked, and renames/uploads the non-empty ones.

    The temporary shards are local files (in --out, or a local temporary folder for gs:// outputs), since
    workers write at offsets.
    """

    def __init__(self, out: str, staging: str, split: str, num_shards: int, compression: str):
        self.out, self.staging, self.split, self.compression = out, staging, split, compression
        self.ends = [None] * num_shards  # bytes placed per shard; None: file not created yet
        self.records = [[] for _ in range(num_shards)]  # per shard, (offset, size, fingerprint) per record
        self.dropped = collections.defaultdict(set)  # shard -> positions removed at the end (label conflicts)
        self.total = 0

    def temp_path(self, shard: int) -> str:
        return os.path.join(self.staging, f"{self.split}-{shard:05d}.tfrecord.incomplete")

    def place(self, fields: dict, loaded: Loaded) -> tuple[int, int, str, int]:
        """Appends one record; returns (shard, position) for drop(), and (path, offset) for the worker."""
        shard = self.total % len(self.ends)
        if self.ends[shard] is None:
            with open(self.temp_path(shard), "wb"):
                self.ends[shard] = 0
        offset = self.ends[shard]
        self.ends[shard] += loaded.record_size
        self.records[shard].append((offset, loaded.record_size, _fingerprint(fields, loaded.encoded_sha256)))
        self.total += 1
        return shard, len(self.records[shard]) - 1, self.temp_path(shard), offset

    def drop(self, shard: int, position: int):
        self.dropped[shard].add(position)

    def _rewrite_without(self, shard: int, positions: set[int]):
        path = self.temp_path(shard)
        with open(path, "rb") as f:
            data = f.read()
        kept = [record for position, record in enumerate(self.records[shard]) if position not in positions]
        with open(path, "wb") as f:
            f.write(b"".join(data[offset : offset + size] for offset, size, _ in kept))
        self.records[shard] = kept

    def _publish(self, temp: str, final: str):
        import tensorflow as tf

        local = "://" not in final
        if self.compression:  # gzip as TF writes it (one member), reproducible: no name, no time
            part = final + ".incomplete" if local else final  # a gs:// object appears only once complete
            with open(temp, "rb") as source, tf.io.gfile.GFile(part, "wb") as raw:
                with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as target:
                    shutil.copyfileobj(source, target, 1 << 22)
            os.remove(temp)
            if local:
                os.replace(part, final)
        elif local:
            os.replace(temp, final)
        else:
            tf.io.gfile.copy(temp, final, overwrite=True)
            os.remove(temp)

    def finish(self) -> list[dict]:
        """Removes dropped records, publishes the non-empty shards; returns [{file, count, sha256}]."""
        for shard, positions in sorted(self.dropped.items()):
            self._rewrite_without(shard, positions)
        nonempty = [shard for shard, placed in enumerate(self.records) if placed]
        shards = []
        for index, shard in enumerate(nonempty):
            name = records.shard_name(self.split, index, len(nonempty))
            self._publish(self.temp_path(shard), posixpath.join(self.out, name))
            prints = [fingerprint for _, _, fingerprint in self.records[shard]]
            shards.append({"file": name, "count": len(prints), "sha256": hashlib.sha256(b"".join(prints)).hexdigest()})
        for shard, end in enumerate(self.ends):
            if end is not None and not self.records[shard]:
                os.remove(self.temp_path(shard))
        return shards

    def abort(self):
        """Deletes the temporary shards (a failed run leaves no half-written files behind)."""
        for shard, end in enumerate(self.ends):
            if end is not None and os.path.exists(self.temp_path(shard)):
                os.remove(self.temp_path(shard))


def _prepare_out(out: str, src: str, overwrite: bool):
    """Creates --out, or empties it of our files; refuses finished records or foreign files unless --overwrite.

    Only an interrupted run's leftovers (temporary shards, renamed shards, no dataset.json) are replaced
    without --overwrite: that is what makes re-running a killed conversion just work.
    """
    import tensorflow as tf

    if "://" not in out and "://" not in src:
        real_out, real_src = os.path.realpath(out), os.path.realpath(src)
        if real_out == real_src or real_out.startswith(real_src + os.sep):
            raise ConvertError(f"--out {out} is inside --src {src}: its records would be read as images")
    if not tf.io.gfile.exists(out):
        tf.io.gfile.makedirs(out)
        return
    names = [name.rstrip("/") for name in tf.io.gfile.listdir(out)]
    foreign = [name for name in names if not _OUR_FILES.match(name)]
    if not overwrite and "dataset.json" in names:
        raise ConvertError(f"--out {out} already holds records (dataset.json): pass --overwrite to replace them")
    if not overwrite and foreign:
        raise ConvertError(f"--out {out} is not empty ({len(foreign)} other files, e.g. {foreign[0]}): use an empty folder")
    for name in sorted(set(names) - set(foreign), key=lambda name: name != "dataset.json"):  # dataset.json first
        tf.io.gfile.remove(posixpath.join(out, name))


# ------------------------------------------------------------------------------------------------ convert


def _quotas(count: int, options: Options) -> tuple[int, int]:
    """(validation, test) images of a class of `count`, rounded half up, leaving at least one for training."""
    validation = int(count * options.validation_fraction + 0.5)
    test = int(count * options.test_fraction + 0.5)
    while count and validation + test >= count and validation + test > 0:
        if test:
            test -= 1
        else:
            validation -= 1
    return validation, test


def _plan_shards(found: Scan, options: Options) -> dict[str, int]:
    """Shards per split from the expected bytes (source sizes) or --num_shards, never more than images."""
    expected_bytes, expected_count = collections.Counter(), collections.Counter()
    if found.layout == "presplit":
        for source in found.sources:
            expected_bytes[source.split] += source.size
            expected_count[source.split] += 1
    else:
        by_class = collections.defaultdict(list)
        for source in found.sources:
            by_class[source.class_name].append(source.size)
        for sizes in by_class.values():
            validation, test = _quotas(len(sizes), options)
            mean = sum(sizes) / len(sizes)
            for split, count in zip(SPLITS, (len(sizes) - validation - test, validation, test)):
                expected_bytes[split] += count * mean
                expected_count[split] += count
    shards = {}
    for split, count in expected_count.items():
        if count:
            wanted = options.num_shards or math.ceil(expected_bytes[split] / (options.shard_size_mb * 2**20))
            shards[split] = max(1, min(wanted, count))
    return shards


class Assembler:
    """Decides, file by file in seeded order, what becomes of each loaded image, and writes the records.

    Folder layout: the first round(n * fraction) valid, unique images of a class (n = its candidate files)
    go to validation, then test, the rest to train, so the split is stratified and random by seed. The first
    copy of identical bytes is the only one stored; the same bytes under two classes drop every copy.
    """

    def __init__(self, found: Scan, options: Options, writers: dict[str, SplitWriter], workers: Workers):
        self.found, self.options, self.writers, self.workers = found, options, writers, workers
        self.label = {name: index for index, name in enumerate(found.class_names)}
        sizes = collections.Counter(source.class_name for source in found.sources)
        self.quotas = {name: _quotas(sizes[name], options) for name in found.class_names}
        self.taken = collections.Counter()  # valid, unique images per class so far
        self.per_class = {split: [0] * len(found.class_names) for split in SPLITS}
        self.valid_in_folder = collections.Counter()
        self.first_copy = {}  # source sha256 -> (Source, (split, shard, position) or None)
        self.conflicts = set()
        self.skipped = list(found.skipped)
        self.skipped_by_sha = collections.defaultdict(list)

    def _skip(self, source: Source, sha256: str, reason: str, detail: str = ""):
        entry = {"file": source.rel, "reason": reason}
        if detail:
            entry["detail"] = detail
        self.skipped.append(entry)
        if sha256:
            self.skipped_by_sha[sha256].append(entry)

    def _split(self, source: Source) -> str:
        if source.split:
            return source.split
        validation, test = self.quotas[source.class_name]
        k = self.taken[source.class_name]
        self.taken[source.class_name] += 1
        return "validation" if k < validation else "test" if k < validation + test else "train"

    def job(self, key: int, source: Source) -> tuple:
        """What a worker needs to make the record of `source`: (key, path, fields known before reading)."""
        fields = {"label": self.label[source.class_name], "class_name": source.class_name, "filename": source.rel}
        return key, source.path, fields

    def add(self, source: Source, job: tuple, loaded: Loaded):
        if loaded.reason:
            self._skip(source, loaded.sha256, loaded.reason, loaded.detail)
        else:  # the worker holding the record writes it, or frees it (path None)
            self.workers.place(job[0], *self._place(source, job, loaded))

    def _place(self, source: Source, job: tuple, loaded: Loaded) -> tuple[str | None, int]:
        self.valid_in_folder[source.folder] += 1
        if loaded.sha256 in self.first_copy:
            first = self.first_copy[loaded.sha256][0]
            if first.class_name != source.class_name:
                self.conflicts.add(loaded.sha256)
            self._skip(source, loaded.sha256, "duplicate", f"same bytes as {first.rel}")
            return None, 0
        split, index = self._split(source), self.label[source.class_name]
        cap = self.options.max_per_class
        if split == "train" and cap and self.per_class[split][index] >= cap:
            self.first_copy[loaded.sha256] = (source, None)
            self._skip(source, loaded.sha256, "over max_per_class")
            return None, 0
        shard, position, path, offset = self.writers[split].place(record_fields(job[2], loaded), loaded)
        self.first_copy[loaded.sha256] = (source, (split, shard, position))
        self.per_class[split][index] += 1
        return path, offset

    def resolve_conflicts(self):
        """The same bytes under two classes: no copy's label can be trusted, so none is kept."""
        for sha in sorted(self.conflicts):
            source, location = self.first_copy[sha]
            copies = sorted({source.rel} | {entry["file"] for entry in self.skipped_by_sha[sha]})
            detail = "same bytes in " + ", ".join(copies)
            for entry in self.skipped_by_sha[sha]:
                entry.update(reason="label conflict", detail=detail)
            if location is not None:
                split, shard, position = location
                self.writers[split].drop(shard, position)
                self.per_class[split][self.label[source.class_name]] -= 1
                self.skipped.append({"file": source.rel, "reason": "label conflict", "detail": detail})

    def check(self, src: str):
        for folder in self.found.folders:
            if not self.valid_in_folder[folder]:
                bad = sum(entry["file"].startswith(folder + "/") for entry in self.skipped)
                raise ConvertError(f"class folder {posixpath.join(src, folder)} has no images ({bad} files skipped)")
        if not any(sum(counts) for counts in self.per_class.values()):
            raise ConvertError(f"--src {src}: nothing could be written ({len(self.skipped)} files skipped)")


def _metadata(src: str, found: Scan, options: Options, assembler: Assembler, shards: dict, compression: str):
    """dataset.json (layout in the project contracts); digest = sha256 over shard names and record hashes."""
    digest = hashlib.sha256(compression.encode())
    splits = {}
    for split in SPLITS:
        if shards.get(split):
            for shard in shards[split]:
                digest.update(f"{shard['file']}\0{shard.pop('sha256')}\n".encode())
            counts = assembler.per_class[split]
            splits[split] = {"count": sum(counts), "per_class": counts, "shards": shards[split]}
    presplit = found.layout == "presplit"
    return {
        "version": 1,
        "class_names": found.class_names,
        "num_classes": len(found.class_names),
        "compression": compression,
        "splits": splits,
        "seed": options.seed,
        "validation_fraction": None if presplit else options.validation_fraction,
        "test_fraction": None if presplit else options.test_fraction,
        "max_per_class": options.max_per_class,
        "source": src,
        "layout": found.layout,
        "jpeg_quality": options.jpeg_quality,
        "store_png_as": options.store_png_as,
        "max_side": options.max_side,
        "skipped": sorted(assembler.skipped, key=lambda entry: entry["file"]),
        "digest": digest.hexdigest(),
    }


@dataclasses.dataclass
class Summary:
    written: int
    skipped: list[dict]
    metadata: dict

    def reasons(self) -> collections.Counter:
        return collections.Counter(entry["reason"] for entry in self.skipped)

    def __str__(self) -> str:
        counts = sorted(self.reasons().items(), key=lambda item: (-item[1], item[0]))
        details = ", ".join(f"{count} {reason}" for reason, count in counts)
        return f"written {self.written}, skipped {len(self.skipped)}" + (f": {details}" if details else "")


def convert(
    src: str,
    out: str,
    *,
    overwrite: bool = False,
    workers: int = 0,
    progress: bool = True,
    **options,
) -> Summary:
    """Converts src into shards + dataset.json under out; returns what was written and skipped.

    `options` are the fields of Options. `workers`: processes reading and converting images (0: one per
    core, 1: in this process). Raises ConvertError with a one-line message for unusable flags, sources or
    outputs; a failed run leaves no shards, only an interrupted one leaves temporary files (replaced by the
    next run).
    """
    options = Options(**options)
    found = scan(src)  # before TF is imported: a bad --src fails in milliseconds
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    pool = Workers(workers, options)  # worker processes start while TF imports
    writers, staging = {}, out
    try:
        import tensorflow as tf

        _prepare_out(out, src, overwrite)
        compression = "GZIP" if options.compression.lower() == "gzip" else ""
        if "://" in out:  # workers write at offsets: shards are assembled locally, then uploaded
            staging = tempfile.mkdtemp(prefix="tltrain-records-")
        for split, count in _plan_shards(found, options).items():
            writers[split] = SplitWriter(out, staging, split, count, compression)
        assembler = Assembler(found, options, writers, pool)
        order = list(found.sources)  # walk order: sorted folders, sorted names
        random.Random(options.seed).shuffle(order)
        jobs = [assembler.job(key, source) for key, source in enumerate(order)]
        bar = tqdm(pool.map(jobs), total=len(jobs), unit="img", disable=None if progress else True)  # None: a tty
        for job, result in bar:
            assembler.add(order[job[0]], job, result)
        pool.close()  # every record is written
        assembler.resolve_conflicts()
        assembler.check(src)
        shards = {split: writer.finish() for split, writer in writers.items()}
    except BaseException:
        pool.close()  # before the files its workers write into are removed
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        if staging != out:
            shutil.rmtree(staging, ignore_errors=True)
    metadata = _metadata(src, found, options, assembler, shards, compression)
    path = posixpath.join(out, "dataset.json")
    with tf.io.gfile.GFile(path + ".incomplete", "w") as f:
        f.write(json.dumps(metadata, indent=2) + "\n")
    tf.io.gfile.rename(path + ".incomplete", path, overwrite=True)
    return Summary(sum(split["count"] for split in metadata["splits"].values()), metadata["skipped"], metadata)


# ---------------------------------------------------------------------------------------------------- CLI


def _define_flags():
    """The converter's flags, listed by --help of whichever program runs run() (absl shows its key flags)."""
    from absl import flags

    main = {"module_name": sys.argv[0]}
    flags.DEFINE_string("src", None, "Images: src/<class>/**/<image>, or src/{train,validation,test}/<class>/**.", **main)
    flags.DEFINE_string("out", None, "Output folder for the shards and dataset.json (local or gs://).", **main)
    flags.DEFINE_float("validation_fraction", 0.1, "Fraction of each class held out for validation.", **main)
    flags.DEFINE_float("test_fraction", 0.0, "Fraction of each class held out for test.", **main)
    flags.DEFINE_integer("seed", 0, "Seed of the split, the record order and --max_per_class.", **main)
    flags.DEFINE_integer(
        "max_per_class", None, "Keep at most N training images per class, chosen by seed (validation/test kept).", **main
    )
    flags.DEFINE_integer("jpeg_quality", 95, "JPEG quality for the images that are re-encoded.", **main)
    flags.DEFINE_enum(
        "store_png_as", "jpeg", ["jpeg", "png"], "Format of converted non-JPEG sources (PNG, GIF, BMP, WebP...).", **main
    )
    flags.DEFINE_integer("max_side", 0, "Downsize images whose longer side exceeds this (0: keep sizes).", **main)
    flags.DEFINE_integer("num_shards", 0, "Shards per split (0: from --shard_size_mb).", **main)
    flags.DEFINE_float("shard_size_mb", 128, "Approximate shard size when --num_shards is 0.", **main)
    flags.DEFINE_enum("compression", "none", ["none", "gzip"], "TFRecord compression (JPEGs barely compress).", **main)
    flags.DEFINE_bool("overwrite", False, "Replace the records already in --out.", **main)
    flags.DEFINE_bool("strict", False, "Exit with status 1 if any file but hidden/system files was skipped.", **main)
    flags.DEFINE_integer("workers", 0, "Processes reading and converting images (0: one per core).", **main)
    flags.mark_flags_as_required(["src", "out"])


def _main(argv: list[str]) -> int:
    from absl import app, flags

    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    FLAGS = flags.FLAGS
    names = [field.name for field in dataclasses.fields(Options)]
    try:
        summary = convert(
            FLAGS.src,
            FLAGS.out,
            overwrite=FLAGS.overwrite,
            workers=FLAGS.workers,
            **{name: FLAGS[name].value for name in names if name != "compression"},
            compression="" if FLAGS.compression == "none" else FLAGS.compression,
        )
    except ConvertError as error:
        print(f"make_tfrecords: error: {error}", file=sys.stderr)
        return 1
    notable = [entry for entry in summary.skipped if entry["reason"] != "hidden"]
    for entry in notable[:20]:
        detail = f" ({entry['detail']})" if "detail" in entry else ""
        print(f"  skipped {entry['file']}: {entry['reason']}{detail}", file=sys.stderr)
    if len(notable) > 20:
        print(f"  ... {len(notable) - 20} more in {posixpath.join(FLAGS.out, 'dataset.json')}", file=sys.stderr)
    print(summary)
    if FLAGS.strict and notable:
        print(f"make_tfrecords: error: --strict: {len(notable)} files skipped", file=sys.stderr)
        return 1
    return 0


def run(argv: list[str] | None = None):
    """Console entry point (tltrain-make-tfrecords, tools/make_tfrecords.py); --flagfile works."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import app

    _define_flags()
    app.run(_main, argv)
