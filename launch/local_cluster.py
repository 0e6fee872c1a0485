"""Run a MultiWorkerMirroredStrategy job on this machine: N workers of `python -m tltrain.main` on 127.0.0.1.

Needs: tltrain importable by the python running this (installed, or run from the repository root).

Usage:
  python launch/local_cluster.py --num_workers=2 -- --records_dir=records --model_dir=runs/1 --batch_size=64

Each worker gets its own TF_CONFIG (free ports picked here, addresses on 127.0.0.1) and
`--strategy=multi_worker` before the flags after `--`. Their output streams here with a `[worker i]`
prefix. When one worker fails the others are stopped, and the exit status is that worker's (so a
supervisor can restart the job; the trainer resumes from its checkpoint). `--dry_run` prints each
worker's TF_CONFIG and command instead. Used by the tests, and for trying multi-worker runs on one box.
Note that TensorFlow's gRPC servers listen on every interface even for 127.0.0.1 addresses (see
launch/README.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TextIO

from absl import app, flags

FLAGS = flags.FLAGS

DEFAULT_MODULE = "tltrain.main"
STOP_GRACE_S = 10.0  # after SIGTERM, how long a worker gets before SIGKILL
# Printed at start: what the README's "Security" section says, for the ports this job opens.
OPEN_PORTS_WARNING = ("listen on every network interface, without authentication: "
                      "run this only on a private network (README.md, Security)")


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on every interface (where TensorFlow's servers bind) right now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind(("", 0))
        return [sock.getsockname()[1] for sock in sockets]


def tf_configs(ports: list[int], host: str = "127.0.0.1") -> list[dict]:
    """One TF_CONFIG per worker: the same cluster, each its own task index (worker 0 is the chief)."""
    cluster = {"worker": [f"{host}:{port}" for port in ports]}
    return [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(len(ports))]


def exit_status(returncode: int) -> int:
    """A process's status the way a shell reports it: 128 + N for a process killed by signal N."""
    return 128 - returncode if returncode < 0 else returncode


class LocalCluster:
    """N worker processes sharing one cluster spec; start(), then wait() for the job's exit status."""

    def __init__(
        self,
        args: list[str],
        num_workers: int = 2,
        module: str = DEFAULT_MODULE,
        env: dict[str, str] | None = None,
        out: TextIO = sys.stdout,
    ):
        if num_workers < 1:
            raise ValueError(f"--num_workers must be at least 1, got {num_workers}")
        self.tf_configs = tf_configs(free_ports(num_workers))
        self.command = [sys.executable, "-m", module, "--strategy=multi_worker", *args]
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
        self.out = out
        self.processes: list[subprocess.Popen] = []
        self._readers: list[threading.Thread] = []
        self._out_lock = threading.Lock()

    def describe(self) -> str:
        """Each worker's command line, as a shell would run it (for --dry_run and the logs)."""
        return "\n".join(
            f"TF_CONFIG={shlex.quote(json.dumps(config))} {shlex.join(self.command)}" for config in self.tf_configs
        )

    def start(self) -> None:
        ports = [address.rsplit(":", 1)[1] for address in self.tf_configs[0]["cluster"]["worker"]]
        self._log(f"ports {', '.join(ports)} {OPEN_PORTS_WARNING}")
        self._log(f"starting {len(self.tf_configs)} workers:\n{self.describe()}")
        for i, config in enumerate(self.tf_configs):
            process = subprocess.Popen(
                self.command,
                env={**self.env, "TF_CONFIG": json.dumps(config)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                errors="replace",
            )
            self.processes.append(process)
            reader = threading.Thread(target=self._stream, args=(i, process), daemon=True)
            reader.start()
            self._readers.append(reader)

    def _stream(self, index: int, process: subprocess.Popen) -> None:
        for line in process.stdout:
            with self._out_lock:
                self.out.write(f"[worker {index}] {line}")
                self.out.flush()

    def wait(self, timeout_s: float | None = None) -> int:
        """Waits for every worker; stops them all as soon as one fails or the timeout passes.

        Returns 0 when all succeeded, else the first failure's status (124 for the timeout)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        status = 0
        while status == 0 and None in [p.poll() for p in self.processes]:  # a list: poll every worker
            failed = [p for p in self.processes if p.returncode not in (None, 0)]
            if failed:
                status = exit_status(failed[0].returncode)
                self._log(f"worker {self.processes.index(failed[0])} failed (exit {status}): stopping the others")
            elif deadline is not None and time.monotonic() > deadline:
                status = 124
                self._log(f"timed out after {timeout_s:g} s: stopping the workers")
            else:
                time.sleep(0.1)
        self.stop()
        for reader in self._readers:
            reader.join()
        if status == 0:
            status = next((exit_status(p.returncode) for p in self.processes if p.returncode != 0), 0)
        return status

    def stop(self) -> None:
        """SIGTERM every running worker, then SIGKILL those still running after STOP_GRACE_S."""
        running = [p for p in self.processes if p.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _log(self, message: str) -> None:
        with self._out_lock:
            self.out.write(f"[local_cluster] {message}\n")
            self.out.flush()


def run_cluster(
    args: list[str],
    num_workers: int = 2,
    module: str = DEFAULT_MODULE,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """Runs the job to the end (see LocalCluster) and returns its exit status."""
    cluster = LocalCluster(args, num_workers=num_workers, module=module, env=env, out=out)
    try:
        cluster.start()
        return cluster.wait(timeout_s)
    finally:
        cluster.stop()


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    cluster = LocalCluster(argv[1:], num_workers=FLAGS.num_workers, module=FLAGS.module)
    if FLAGS.dry_run:
        print(cluster.describe())
        return 0
    signal.signal(signal.SIGTERM, _interrupt)  # stop the workers too, not only this process
    try:
        cluster.start()
        return cluster.wait(FLAGS.timeout_s or None)
    except KeyboardInterrupt:
        return 130
    finally:
        cluster.stop()


def define_flags() -> None:
    """Only when run as a script, so that importing this module adds no flags to another program."""
    flags.DEFINE_integer("num_workers", 2, "Number of worker processes.", lower_bound=1)
    flags.DEFINE_string("module", DEFAULT_MODULE, "Python module each worker runs with `python -m`.")
    flags.DEFINE_float("timeout_s", 0, "Stop the job and exit 124 after this many seconds (0: no limit).", lower_bound=0)
    flags.DEFINE_bool("dry_run", False, "Print each worker's TF_CONFIG and command instead of running them.")


if __name__ == "__main__":
    define_flags()
    app.run(lambda argv: sys.exit(main(argv)))
