"""The worker pool: processes that read, check and frame images, keep each record until the main process
has decided where it goes, then write it there with one pwritev (no image bytes cross a pipe).

Forked from a forkserver that has imported only this package (forking the main process, with TensorFlow's
threads running, is unsafe; spawning fresh interpreters costs ~0.3 s each): the workers never import
TensorFlow and start in milliseconds.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import signal
import sys
import types

from tltrain import records
from tltrain.convert.images import Loaded, load
from tltrain.convert.options import ConvertError, Options


def record_fields(job: dict, loaded: Loaded) -> dict:
    """The record's fields but the image bytes: the job's (label, class_name, filename) and the loaded image's."""
    return {
        "image_format": loaded.image_format,
        "label": job["label"],
        "class_name": job["class_name"],
        "height": loaded.height,
        "width": loaded.width,
        "channels": loaded.channels,
        "filename": job["filename"],
        "source_id": loaded.sha256,
    }


class RecordMaker:
    """A worker's state: loads files into framed records, holds them until told where they go, writes them there.

    Each record is written once, by the process that read its file, with one pwritev at the offset the main
    process chose: no image bytes cross a pipe and none are copied on the way to the shard.
    """

    def __init__(self, options: Options):
        self.options = options
        self.held = {}  # job key -> framed record pieces
        self.shards = {}  # temporary shard path -> file descriptor

    def step(self, places: list[tuple], jobs: list[tuple]) -> list[Loaded]:
        """Writes held records to their places [(key, shard path or None to drop, offset)], then loads jobs
        [(key, path, job fields)] and returns what became of each (records kept here, not returned)."""
        for key, path, offset in places:
            pieces = self.held.pop(key)
            if path is not None:
                self._write(path, pieces, offset)
        results = []
        for key, path, job in jobs:
            loaded = load(path, self.options)
            if not loaded.reason:
                pieces = records.frame(records.example_pieces(encoded=loaded.encoded, **record_fields(job, loaded)))
                self.held[key] = pieces
                loaded.encoded, loaded.record_size = b"", sum(map(len, pieces))
            results.append(loaded)
        return results

    def _write(self, path: str, pieces: list[bytes], offset: int):
        try:
            if path not in self.shards:
                self.shards[path] = os.open(path, os.O_WRONLY)  # created by the main process
            written = os.pwritev(self.shards[path], pieces, offset)
            rest = b"".join(pieces)[written:]
            while rest:  # a short write (rare: signals, huge records)
                offset, written = offset + written, os.pwrite(self.shards[path], rest, offset + written)
                rest = rest[written:]
        except OSError as error:
            raise ConvertError(f"{path}: cannot write: {error.strerror or error}") from None

    def close(self):
        for fd in self.shards.values():
            os.close(fd)
        self.shards.clear()


def _handle(maker: RecordMaker, message: tuple) -> list[Loaded] | Exception:
    try:
        return maker.step(*message)
    except Exception as error:  # a write failed (disk full...): the main process raises it
        return error


def _serve(connection, options: Options):
    """Worker loop: (places, jobs) in, list of Loaded out, until None or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    maker = RecordMaker(options)
    try:
        while (message := connection.recv()) is not None:
            connection.send(_handle(maker, message))
    except (EOFError, BrokenPipeError):
        pass
    finally:
        maker.close()


class _InProcess:
    """A RecordMaker in this process behind a pipe's send/recv (workers=1): one code path for both."""

    def __init__(self, options: Options):
        self.maker, self.replies = RecordMaker(options), collections.deque()

    def send(self, message):
        if message is not None:
            self.replies.append(_handle(self.maker, message))

    def recv(self):
        return self.replies.popleft()

    def close(self):
        self.maker.close()


@contextlib.contextmanager
def _without_caller_main():
    """Starts worker processes with only this package in mind.

    Hides the caller's __main__ (multiprocessing would re-run the caller's script in every worker: importing
    TF there, or failing without an `if __name__ == "__main__"` guard) and puts the package root on
    PYTHONPATH (Python 3.11's forkserver ignores the sys.path it is handed, so its preload would fail).
    """
    main, pythonpath = sys.modules["__main__"], os.environ.get("PYTHONPATH")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.modules["__main__"] = types.ModuleType("__main__")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, pythonpath]))
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        if pythonpath is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = pythonpath


class Workers:
    """RecordMakers in worker processes (or one in this process), fed over pipes by the calling thread.

    Forked from a forkserver that has imported only this module (forking this process itself, with
    TensorFlow's threads running, is unsafe; spawning fresh interpreters costs ~0.3 s each): the server
    starts once per process, workers in milliseconds. Plain pipes read by the main thread, not
    multiprocessing.Pool: a worker must keep its records until the main process has placed them.
    """

    def __init__(self, count: int, options: Options, chunk: int = 16, depth: int = 2):
        self.chunk, self.depth, self.processes = chunk, depth, []
        if count == 1:
            self.pipes = [_InProcess(options)]
        else:
            method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
            context = multiprocessing.get_context(method)
            if method == "forkserver":
                context.set_forkserver_preload([__name__])
            self.pipes = []
            with _without_caller_main():
                for _ in range(count):
                    parent, child = context.Pipe()
                    process = context.Process(target=_serve, args=(child, options), daemon=True)
                    process.start()
                    child.close()
                    self.pipes.append(parent)
                    self.processes.append(process)
        self.places = [[] for _ in self.pipes]  # per worker: placements to send with its next message

    def _worker(self, key: int) -> int:
        return key // self.chunk % len(self.pipes)  # chunk k of the jobs goes to worker k % count

    def place(self, key: int, path: str | None, offset: int = 0):
        """Where the record of job `key` goes (None: nowhere); sent to its worker with the next message."""
        self.places[self._worker(key)].append((key, path, offset))

    def _died(self, worker: int, what: str) -> ConvertError:
        """The error for a worker process that went away (killed, out of memory): nothing is published."""
        process = self.processes[worker]
        process.join(timeout=5)
        code = process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        return ConvertError(f"worker process {process.pid} died ({how}) while {what}; no records were published: "
                            "run the same command again")

    def _send(self, worker: int, jobs: list[tuple], what: str):
        try:
            self.pipes[worker].send((self.places[worker], jobs))
        except OSError:  # BrokenPipeError, ConnectionResetError
            raise self._died(worker, what) from None
        self.places[worker] = []

    def _recv(self, worker: int, what: str) -> list[Loaded]:
        try:
            reply = self.pipes[worker].recv()
        except (EOFError, OSError):  # OSError: ConnectionResetError
            raise self._died(worker, what) from None
        if isinstance(reply, Exception):
            raise reply
        return reply

    def map(self, jobs: list[tuple]):
        """Yields (job, Loaded) for every job (key, path, fields), in order; the caller place()s each loaded
        record before asking for the next chunk. Returns once every placed record is written."""
        chunks = [jobs[i : i + self.chunk] for i in range(0, len(jobs), self.chunk)]
        ahead = self.depth * len(self.pipes)
        def reading(part):
            return f"reading {part[0][1]} ... {part[-1][1]}"

        for k in range(min(ahead, len(chunks))):
            self._send(k % len(self.pipes), chunks[k], reading(chunks[k]))
        for k, part in enumerate(chunks):
            yield from zip(part, self._recv(k % len(self.pipes), reading(part)))
            if k + ahead < len(chunks):
                self._send((k + ahead) % len(self.pipes), chunks[k + ahead], reading(chunks[k + ahead]))
        for worker in range(len(self.pipes)):  # the last placements; the replies say they are written
            self._send(worker, [], "writing records")
            self._recv(worker, "writing records")

    def close(self):
        """Stops the workers (again: nothing)."""
        pipes, processes, self.pipes, self.processes = self.pipes, self.processes, [], []
        for pipe, process in itertools.zip_longest(pipes, processes):
            try:
                pipe.send(None)
            except OSError:
                pass
            pipe.close()
            if process is not None:
                process.join(timeout=10)
                if process.is_alive():
                    process.kill()
