"""The folder scan: the layout (class folders, or split folders of class folders), the classes, and every
file under --src as a candidate image or a skipped entry with its reason."""

from __future__ import annotations

import dataclasses
import os
import posixpath
import stat as stat_module

from tltrain.convert.options import ConvertError
from tltrain.records import SPLITS

SYSTEM_FILES = {"thumbs.db", "ehthumbs.db", "desktop.ini", "__macosx"}


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


def hidden(name: str) -> bool:
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
        name for name in os.listdir(src) if not hidden(name) and os.path.isdir(os.path.join(src, name))
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
            if not hidden(name) and os.path.isdir(os.path.join(parent, name)):
                folders[posixpath.join(split, name) if split else name] = 0

    sources, skipped = [], []
    for parts, path, stat in _walk(src):
        rel = "/".join(parts)
        folder = "/".join(parts[:depth])
        if any(hidden(part) for part in parts):
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
