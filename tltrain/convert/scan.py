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
    real: str  # its real path: links resolved


@dataclasses.dataclass
class Scan:
    layout: str  # "folders" | "presplit"
    class_names: list[str]
    folders: list[str]
    sources: list[Source]
    skipped: list[dict]
    links_outside: list[dict]  # files read through links that leave --src: {file, target}


def hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in SYSTEM_FILES


def display_name(path: str) -> str:
    """A path as valid UTF-8 text: bytes that are not UTF-8 (os.listdir's surrogate escapes) become \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _walk(root: str):
    """Every file under root as (rel parts, path, stat or OSError, real path), sorted, links followed. A
    folder reached twice (two links to it) is walked twice, so scan() sees every name of every file; only a
    link back to a folder it is inside of (a loop) is not followed."""
    problems = []
    chains = {root: (os.path.realpath(root),)}  # folder -> real paths of it and the folders above it
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=problems.append):
        chain = chains.pop(dirpath)
        kept = []
        for name in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in chain:
                chains[os.path.join(dirpath, name)] = chain + (real,)
                kept.append(name)
        dirnames[:] = kept
        rel_dir = os.path.relpath(dirpath, root)
        parts = () if rel_dir == "." else tuple(rel_dir.split(os.sep))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                info = os.lstat(path)  # a file that is no link: its real path is its folder's, without a syscall
                if stat_module.S_ISLNK(info.st_mode):
                    yield parts + (name,), path, os.stat(path), os.path.realpath(path)
                else:
                    yield parts + (name,), path, info, os.path.join(chain[-1], name)
            except OSError as error:
                yield parts + (name,), path, error, path
    for error in problems:  # folders os.walk could not list
        rel = os.path.relpath(error.filename, root).split(os.sep)
        yield tuple(rel), error.filename, error, error.filename


def _check_class_name(name: str, folder: str):
    """labels.txt and exports keep one class name per line, as UTF-8."""
    if name.splitlines() != [name] or name.strip() != name:
        raise ConvertError(f"class folder {display_name(folder)!a}: a class name cannot hold line breaks "
                           "(or start or end with spaces): rename the folder")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ConvertError(f"class folder {display_name(folder)}: its name is not valid UTF-8: rename the folder") from None


def _resolve_links(sources: list[Source], real_src: str) -> tuple[list[Source], list[dict], list[dict]]:
    """One Source per real file. A file reached by two names of one class is read once (the others are
    duplicates); reached under two classes, no name's label can be trusted (a label conflict). Returns the
    sources kept, the skipped entries, and the links to files outside --src (read, and reported)."""
    by_real = {}
    for source in sources:
        by_real.setdefault(source.real, []).append(source)
    kept, skipped, outside = [], [], []
    for real, names in by_real.items():
        if not real.startswith(real_src + os.sep):
            outside.append({"file": names[0].rel, "target": display_name(real)})
        classes = {source.class_name for source in names}
        if len(classes) > 1:
            detail = "the same file reached as " + ", ".join(sorted(source.rel for source in names))
            skipped += [{"file": source.rel, "reason": "label conflict", "detail": detail} for source in names]
            continue
        kept.append(names[0])
        skipped += [{"file": source.rel, "reason": "duplicate", "detail": f"the same file as {names[0].rel}"}
                    for source in names[1:]]
    order = {id(source): index for index, source in enumerate(sources)}
    return sorted(kept, key=lambda source: order[id(source)]), skipped, outside


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
                _check_class_name(name, os.path.join(parent, name))
                folders[posixpath.join(split, name) if split else name] = 0

    sources, skipped = [], []
    for parts, path, stat, real in _walk(src):
        rel = display_name("/".join(parts))
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
            split = parts[0] if presplit else None
            sources.append(Source(rel, path, folder, parts[depth - 1], split, stat.st_size, real))
    sources, links_skipped, outside = _resolve_links(sources, os.path.realpath(src))
    skipped += links_skipped
    if not folders:
        what = "is empty" if not skipped else f"has no class folders ({len(skipped)} loose files)"
        raise ConvertError(f"--src {src} {what}: expected {src.rstrip('/')}/<class>/<images>")
    for source in sources:
        folders[source.folder] += 1
    empty = [folder for folder, count in folders.items() if count == 0]
    if empty:
        raise ConvertError(f"class folder {posixpath.join(src, empty[0])} has no images ({len(empty)} such folders)")
    class_names = sorted({posixpath.basename(folder) for folder in folders})
    return Scan("presplit" if presplit else "folders", class_names, list(folders), sources, skipped, outside)
