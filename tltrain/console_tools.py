"""Console tools installed with tltrain's dependencies (saved_model_cli, tensorboard, shellcheck), found where
this interpreter's packages put them, so they work from an unactivated virtual environment (`./run test`)."""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig


def find(name: str) -> str | None:
    """The path of console tool `name`: from this interpreter's scripts directory (or the one holding the
    interpreter), else from PATH; None when neither has it."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        found = shutil.which(name, path=directory)
        if found:
            return found
    return shutil.which(name)


def command(name: str) -> str:
    """How to type `name` in a shell: the bare name when PATH finds the same tool, else the full path."""
    found = find(name)
    if found is None or shutil.which(name) == found:
        return name
    return found
