"""What keeps a model_dir's checkpoints whole: one training run at a time, a restore that falls back past a
damaged checkpoint, and a failed save reported in one line.

The lock is model_dir/train.lock. On a local or NFS file system it is an flock(2) lock, which the kernel
releases when its process ends however it ends (kill -9 included), so a killed run never blocks the next.
Object stores (gs://, s3://) have no such lock and tf.io.gfile has no create-if-absent: there the file is a
lease the holder rewrites every LEASE_REFRESH_S seconds; another run refuses while the lease is younger than
LEASE_EXPIRY_S (a killed run's lease expires after that), and one on the same host takes over at once when
the holder's process is gone. Two runs started within the same second on an object store can both win.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import posixpath
import socket
import threading
import time
from typing import Iterator

import tensorflow as tf

LOCK_FILE = "train.lock"
LEASE_REFRESH_S = 60.0
LEASE_EXPIRY_S = 300.0
# What reading a damaged checkpoint raises: TensorFlow's errors (DataLossError, NotFoundError, ...), and
# IndexError "Read less bytes than requested" for a truncated data file.
_UNREADABLE = (tf.errors.OpError, IndexError, OSError)


class RunError(RuntimeError):
    """A run that cannot go on, in one line that says what to do (main prints it without a traceback)."""


class ModelDirInUse(RunError):
    """Another training run holds model_dir's lock."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200] or type(error).__name__


# ------------------------------------------------------------------------------------------------------- lock


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def _describe(owner: dict) -> str:
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {owner.get('started', '?')}"


def _in_use(model_dir: str, owner: dict) -> ModelDirInUse:
    return ModelDirInUse(f"--model_dir={model_dir}: another training run is writing there ({_describe(owner)}); "
                         "wait for it to end, or use another --model_dir")


def _read_owner(path: str) -> dict:
    try:
        with tf.io.gfile.GFile(path) as f:
            return json.loads(f.read() or "{}")
    except (ValueError, *_UNREADABLE):
        return {}


@contextlib.contextmanager
def _flock(model_dir: str, path: str) -> Iterator[None]:
    import fcntl

    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(model_dir, _read_owner(path)) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_owner()).encode())
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it would race with the next run's open)


def _holder_alive(owner: dict) -> bool:
    """Whether the lease's holder still runs: its age, or on this host whether its process exists."""
    if time.time() - owner.get("renewed", 0) > LEASE_EXPIRY_S:
        return False
    if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return True


@contextlib.contextmanager
def _lease(model_dir: str, path: str) -> Iterator[None]:
    held = _read_owner(path)
    if held and _holder_alive(held):
        raise _in_use(model_dir, held)
    mine = {**_owner(), "token": os.urandom(8).hex()}

    def renew() -> None:
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(json.dumps({**mine, "renewed": time.time()}))

    renew()
    time.sleep(1.0)  # a run that wrote the lease at the same time: the last writer wins, the other sees it
    winner = _read_owner(path)
    if winner.get("token") != mine["token"]:
        raise _in_use(model_dir, winner)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(LEASE_REFRESH_S):
            with contextlib.suppress(*_UNREADABLE):
                renew()

    renewer = threading.Thread(target=keep_renewing, name="tltrain-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(*_UNREADABLE):
            tf.io.gfile.remove(path)


@contextlib.contextmanager
def exclusive(model_dir: str) -> Iterator[None]:
    """Holds model_dir/train.lock for the block; ModelDirInUse (one line naming the holder) when another
    run holds it. An flock on local paths, a lease on object stores (see the module docstring)."""
    tf.io.gfile.makedirs(model_dir)
    path = posixpath.join(model_dir, LOCK_FILE)
    with (_lease if "://" in model_dir else _flock)(model_dir, path):
        yield


# ---------------------------------------------------------------------------------------------- restore, save


def newest_first(directory: str) -> list[str]:
    """The checkpoints a CheckpointManager keeps in `directory`, newest first (empty when there are none)."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    return list(reversed(state.all_model_checkpoint_paths)) or [state.model_checkpoint_path]


def restore_newest(checkpoint: tf.train.Checkpoint, directory: str, partial: bool = False) -> str | None:
    """Restores the newest checkpoint of `directory` that reads back and returns its path (None: there is
    none). One that fails to read (truncated, ...) gets a line, and the next older one is tried; a RunError
    when none of them reads. `partial`: only some of the checkpoint's objects are wanted (evaluate, export)."""
    failures = []
    for path in newest_first(directory):
        try:
            status = checkpoint.restore(path)
        except _UNREADABLE as error:
            failures.append(path)
            print(f"{path}: cannot be read ({_one_line(error)}); trying the checkpoint before it", flush=True)
            continue
        if partial:
            status.expect_partial()
        else:
            status.assert_nontrivial_match()
        if failures:
            print(f"restored {path}, the newest checkpoint that reads ({len(failures)} newer one(s) unreadable)",
                  flush=True)
        return path
    if failures:
        raise RunError(f"{directory}: none of its checkpoints can be read ({', '.join(failures)}); "
                       "move them away to train from the start")
    return None


def save(manager: tf.train.CheckpointManager, step: int) -> str:
    """manager.save, with a failed write (disk full, quota, permissions) as a RunError naming the checkpoint
    and the last good one, which a re-run resumes from."""
    try:
        return manager.save(checkpoint_number=step)
    except _UNREADABLE as error:
        last = manager.latest_checkpoint
        resume = f"a re-run resumes from {last}" if last else "a re-run starts from the beginning"
        raise RunError(f"{manager.directory}: writing checkpoint ckpt-{step} failed ({_one_line(error)}); "
                       f"free space or fix the directory, then {resume}") from None
