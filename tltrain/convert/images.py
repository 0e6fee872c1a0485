"""One source file -> the bytes to store, or the reason it cannot be stored.

JPEG bytes that TensorFlow decodes as they are (8-bit baseline/progressive, gray/YCbCr/RGB, upright, complete,
small enough for --max_side and --resize_for, too big for raw pixels) are kept byte for byte; everything else is
decoded by Pillow, made upright RGB (alpha composited on white), shrunk if asked, and re-encoded once, or kept
as raw pixels when tiny. Runs in the worker processes: no TensorFlow here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import stat
import struct
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from tltrain import records
from tltrain.convert.options import Options

# JPEG frame types libjpeg (inside TF) decodes: baseline, extended sequential, progressive (Huffman coded).
TF_JPEG_FRAMES = {0xC0, 0xC1, 0xC2}


@dataclasses.dataclass
class Loaded:
    """What a worker made of one file: the bytes to store, or why not."""

    sha256: str = ""  # of the source file
    encoded: bytes = b""  # emptied when the worker keeps the record (record_size says how long it is)
    image_format: str = ""  # jpeg | png | raw (records.RAW_FORMAT)
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
    """Frame type, size, components, EXIF orientation, completeness and data size from the marker segments.

    None when the segments before the first scan are malformed or cut short. `complete` is whether an EOI
    marker follows the first scan: inside entropy-coded data 0xFF is always stuffed, so a file cut anywhere
    after the scan header has none. `blocks`: the 8x8 blocks the frame's size needs (for the least of the
    interleaved and non-interleaved layouts); `scan_bytes`: the bytes from the first scan to the last EOI.
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
            eoi = data.rfind(b"\xff\xd9", end)
            return dict(frame, orientation=orientation, complete=eoi != -1, scan_bytes=max(eoi - end, 0))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if end - i < 10 or end > len(data):
                return None
            precision, height, width, components = struct.unpack_from(">BHHB", data, i + 4)
            if end - i < 10 + 3 * components:
                return None
            sampling = [(data[i + 11 + 3 * c] >> 4, data[i + 11 + 3 * c] & 15) for c in range(components)]
            frame = {"frame": marker, "precision": precision, "height": height, "width": width, "components": components,
                     "blocks": _blocks(height, width, sampling)}
        elif marker == 0xE1 and data.startswith(b"Exif\x00\x00", i + 4):
            orientation = _exif_orientation(data[i + 4 : end])
        i = end
    return None


def _blocks(height: int, width: int, sampling: list[tuple[int, int]]) -> int:
    """8x8 blocks of every component at least (the non-interleaved count; interleaved scans pad to MCUs)."""
    if not sampling or min(min(h, v) for h, v in sampling) < 1:
        return 0
    h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
    return sum(math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(math.ceil(height * v / v_max) / 8)
               for h, v in sampling)


def inconsistent(header: dict) -> str:
    """Why a JPEG's data cannot fill the frame its header declares ("" when it can). Every 8x8 block costs at
    least one bit in any JPEG coding (its DC difference has a Huffman code of one bit or more), so fewer data
    bits than blocks means a header that lies about the size: decoders then fill the rest with gray."""
    if header["complete"] and header["scan_bytes"] * 8 < header["blocks"]:
        return (f"header says {header['width']}x{header['height']} ({header['blocks']} blocks), "
                f"but its data holds at most {header['scan_bytes'] * 8} blocks")
    return ""


def _tf_decodes_as_is(header: dict | None, options: Options) -> bool:
    return (
        header is not None
        and header["frame"] in TF_JPEG_FRAMES
        and header["precision"] == 8
        and header["components"] in (1, 3)  # CMYK/YCCK: converted once, readers get 1- or 3-channel JPEGs
        and header["orientation"] == 1
        and header["complete"]
        and header["height"] > 0
        and _scale(header["width"], header["height"], options) == 1
        and header["height"] * header["width"] * header["components"] > options.raw_max_bytes
    )


def _scale(width: int, height: int, options: Options) -> float:
    """The factor (<= 1) that brings the longer side to --max_side and the shorter one to what --resize_for needs."""
    scale = 1.0
    if options.max_side:
        scale = min(scale, options.max_side / max(width, height))
    if options.resize_for:
        scale = min(scale, records.short_side_for(options.resize_for) / min(width, height))
    return scale


def _raw_pixels(image: Image.Image) -> tuple[bytes, int]:
    """(height x width x channels uint8 bytes, channels) of an RGB image: one channel when it is gray."""
    import numpy as np

    pixels = np.asarray(image)
    if (pixels[..., :1] == pixels).all():
        pixels = pixels[..., :1]
    return np.ascontiguousarray(pixels).tobytes(), pixels.shape[-1]


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


def _reencode(data: bytes, options: Options) -> tuple[bytes, str, int, int, int]:
    """(bytes, format, height, width, channels) to store for an image TF cannot take as it is."""
    with Image.open(io.BytesIO(data)) as image:
        lossy_source = image.format in ("JPEG", "MPO")
        scale = _scale(image.width, image.height, options)
        if scale < 1:
            image.draft(image.mode, (math.ceil(image.width * scale), math.ceil(image.height * scale)))  # DCT scaling
        image.load()
        image = to_rgb(ImageOps.exif_transpose(image))
    scale = _scale(image.width, image.height, options)  # again: the draft may have shrunk it already
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    if image.height * image.width <= options.raw_max_bytes:  # raw pixels may fit: one byte each when gray
        pixels, channels = _raw_pixels(image)
        if len(pixels) <= options.raw_max_bytes:
            return pixels, records.RAW_FORMAT, image.height, image.width, channels
    buffer = io.BytesIO()
    if lossy_source or options.store_png_as == "jpeg":
        image.save(buffer, "JPEG", quality=options.jpeg_quality)
        image_format = "jpeg"
    else:
        image.save(buffer, "PNG")
        image_format = "png"
    return buffer.getvalue(), image_format, image.height, image.width, 3


def _looks_like_image(data: bytes) -> bool:
    """Signature of a format Pillow reads: such a file that fails to open is corrupt, not a stray non-image."""
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"II*\x00", b"MM\x00*")) or (
        data.startswith(b"RIFF") and data[8:12] == b"WEBP"
    )


_NOT_REGULAR = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device",
                stat.S_IFDIR: "a folder"}


def read_file(path: str) -> bytes:
    """The whole file, in one read() of its size: open().read() makes ~2x the system calls (lseek, isatty).

    Opened without blocking, and only a regular file is read: a file replaced by a FIFO or a device after the
    scan would otherwise block the worker forever, or never end."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = _NOT_REGULAR.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise OSError(0, f"not a regular file when opened ({what})")
        size = info.st_size
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
    if header is not None and (why := inconsistent(header)):
        return Loaded(sha256, reason="corrupt", detail=why)
    if _tf_decodes_as_is(header, options):
        size = (header["height"], header["width"], header["components"])
        return Loaded(sha256, data, "jpeg", *size, sha256)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about odd EXIF/metadata it then handles
            encoded, image_format, height, width, channels = _reencode(data, options)
    except Image.DecompressionBombError as error:
        return Loaded(sha256, reason="unsupported", detail=str(error).split(" could ")[0])
    except _Unsupported as error:
        return Loaded(sha256, reason="unsupported", detail=str(error))
    except UnidentifiedImageError:
        return Loaded(sha256, reason="corrupt" if _looks_like_image(data) else "not an image")
    except Exception as error:  # Pillow decoders raise many types on bad data; every one means a bad file
        cut = "truncat" in str(error).lower() or (header is not None and not header["complete"])
        return Loaded(sha256, reason="truncated" if cut else "corrupt", detail=f"{type(error).__name__}: {error}")
    return Loaded(sha256, encoded, image_format, height, width, channels, hashlib.sha256(encoded).hexdigest())
