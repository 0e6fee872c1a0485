"""One training run at a time on a model_dir: the lock file model_dir/train.lock.

On a local or NFS file system it is an flock(2) lock, which the kernel releases when its process ends however
it ends (kill -9 included), so a killed run never blocks the next. Object stores (gs://, s3://) have no such
lock and tf.io.gfile has no create-if-absent: there the file is a lease the holder rewrites every
LEASE_REFRESH_S seconds; another run refuses while the lease is younger than LEASE_EXPIRY_S (a killed run's
lease expires after that), and one on the same host takes over at once when the holder's process is gone.
Two runs started within the same second on an object store can both get it. TensorFlow is imported only for
object stores, so taking a local lock costs milliseconds.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import threading
import time
from typing import Iterator

from tltrain.errors import RunError

LOCK_FILE = "train.lock"
LEASE_REFRESH_S = 60.0
LEASE_EXPIRY_S = 300.0


class ModelDirInUse(RunError):
    """Another training run holds model_dir's lock."""


def _owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")}


def _describe(owner: dict) -> str:
    return f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, since {owner.get('started', '?')}"


def _in_use(model_dir: str, owner: dict) -> ModelDirInUse:
    return ModelDirInUse(f"--model_dir={model_dir}: another training run is writing there ({_describe(owner)}); "
                         "wait for it to end, or use another --model_dir")


def _read_owner(path: str) -> dict:
    """The holder's record in the lock file ({} when it cannot be read)."""
    try:
        if "://" in path:
            import tensorflow as tf

            with tf.io.gfile.GFile(path) as f:
                return json.loads(f.read() or "{}")
        with open(path) as f:
            return json.loads(f.read() or "{}")
    except Exception:  # noqa: BLE001 -- a lock file being rewritten or gone: no holder to name
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
    import tensorflow as tf

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
            with contextlib.suppress(OSError, tf.errors.OpError):
                renew()

    renewer = threading.Thread(target=keep_renewing, name="tltrain-lease", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        renewer.join()
        with contextlib.suppress(OSError, tf.errors.OpError):
            tf.io.gfile.remove(path)


@contextlib.contextmanager
def exclusive(model_dir: str) -> Iterator[None]:
    """Holds model_dir/train.lock for the block; ModelDirInUse (one line naming the holder) when another
    run holds it. An flock on local paths, a lease on object stores (see the module docstring)."""
    path = f"{model_dir.rstrip('/')}/{LOCK_FILE}"
    if "://" in model_dir:
        import tensorflow as tf

        tf.io.gfile.makedirs(model_dir)
        lock = _lease(model_dir, path)
    else:
        os.makedirs(model_dir, exist_ok=True)
        lock = _flock(model_dir, path)
    with lock:
        yield


