"""TensorFlow's start-up settings and quiet start-up, for every tltrain entry point; stdlib only, installed by
tltrain/__init__.py before anything imports TensorFlow.

`TF_CPP_MIN_LOG_LEVEL` (default 2 here: errors only) filters TensorFlow's C++ log once its logging is set up,
but the lines written while its libraries load come before that: absl's "All log messages before
absl::InitializeLog() is called are written to STDERR" banner, then INFO lines (the oneDNN notice, "Could not
find cuda drivers"), once per library that carries its own absl (two per process). On a machine without a CUDA
driver the GPU platform then logs "failed call to cuInit" at ERROR level. So the first `import tensorflow`, and
its first look for GPUs, run with the C++ stderr captured, and what they wrote goes back to stderr without the
lines TF_CPP_MIN_LOG_LEVEL would have hidden, nor the cuInit failure of a machine that has no CUDA driver.
Everything else, errors included, comes through; TF_CPP_MIN_LOG_LEVEL=0 shows everything.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# Before TensorFlow loads. oneDNN is off by default on some CPUs and was measured 10-48% faster there.
DEFAULTS = {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_ENABLE_ONEDNN_OPTS": "1"}
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
# absl's prefix: severity letter, MMDD, time, thread id, file:line]
_LOG_LINE = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ [\w.-]+:\d+\] ")
_SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
_NO_CUDA_DRIVER = "Could not find cuda drivers on your machine"
_CUINIT_FAILED = "failed call to cuInit"


def install() -> None:
    """Sets DEFAULTS where the environment has no value, and quiets the first `import tensorflow`."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def min_log_level() -> int:
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def filter_startup_lines(text: str, level: int) -> str:
    """`text` without the lines `level` (TF_CPP_MIN_LOG_LEVEL) hides, absl's banner when it hides INFO, and the
    cuInit failure when no CUDA driver was found; any other line is kept."""
    if level <= 0:
        return text
    no_driver = _NO_CUDA_DRIVER in text
    kept = []
    for line in text.splitlines(keepends=True):
        match = _LOG_LINE.match(line)
        if line.rstrip("\r\n") == BANNER:
            continue
        if match and _SEVERITY[match.group(1)] < level:
            continue
        if match and no_driver and _CUINIT_FAILED in line:
            continue
        kept.append(line)
    return "".join(kept)


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Captures file descriptor 2 (C++ and Python writes alike) and writes it back filtered, also on errors."""
    level = min_log_level()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        sys.stderr.flush()
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            text = filter_startup_lines(captured.read().decode(errors="replace"), level)
            if text:
                os.write(2, text.encode())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds the top-level `tensorflow` package with the other finders and hands its loader a quiet wrapper:
    the import, and its first GPU lookup (where cuInit runs; a physical-device listing leaves every device
    setting open), run filtered. A spec only looked up (importlib.util.find_spec) changes nothing."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *_: None)(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _QuietLoader(spec.loader, self)
                return spec
        return None


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, finder: _QuietImport):
        self.loader, self.finder = loader, finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)  # one import to quiet
        module.__loader__ = module.__spec__.loader = self.loader
        with _filtered_stderr():
            self.loader.exec_module(module)
            module.config.list_physical_devices("GPU")
