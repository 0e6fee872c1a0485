"""The trainer's side of a tf.data service (`--data_service=grpc://HOST:PORT`), with no wait on it unbounded.

A tf.data service client retries an unreachable dispatcher or worker forever, inside TensorFlow where Python
cannot interrupt it: a trainer whose service is down or dies would sit silently. So the dispatcher is probed
before anything is built, and every call that waits on the service (registering the pipeline, each batch)
runs under a watchdog: when one takes longer than --data_service_timeout seconds, the process prints one line
naming the address and exits with EXIT_STATUS. It exits with os._exit because TensorFlow's gRPC threads,
still retrying, would hold a normal exit. Checkpoints are saved between batches, never during one, so a
re-run of the same command (with the service back) resumes from the last one.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import sys
import threading
import time
import typing
from typing import Iterator

import tensorflow as tf

from tltrain.config import DataConfig, DataServiceMode

DATA_SERVICE_MODES = typing.get_args(DataServiceMode)
EXIT_STATUS = 69  # EX_UNAVAILABLE: a service the run needs is unavailable


def address(cfg: DataConfig) -> tuple[str, int]:
    """(host, port) of --data_service; one-line ValueError for a malformed address."""
    match = re.fullmatch(r"grpc://([^:/]+):(\d+)", cfg.data_service)
    if not match:
        raise ValueError(f"--data_service={cfg.data_service}: expected grpc://HOST:PORT of a dispatcher")
    return match.group(1), int(match.group(2))


def probe(cfg: DataConfig) -> None:
    """Waits up to --data_service_timeout for the dispatcher to accept a connection (it may still be starting);
    a one-line ValueError naming the address when it does not. No-op without --data_service."""
    if not cfg.data_service:
        return
    host, port = address(cfg)
    deadline = time.monotonic() + cfg.data_service_timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())):
                return
        except OSError as error:
            if time.monotonic() + 0.5 >= deadline:
                raise ValueError(f"--data_service={cfg.data_service}: no tf.data service dispatcher reachable within "
                                 f"--data_service_timeout={cfg.data_service_timeout:g}s ({error.strerror or error}); "
                                 "start it (launch/data_service.py) or check the address") from None
            time.sleep(0.5)


class _Watchdog:
    """One daemon thread per process that ends the process when a watched call outlives its deadline."""

    def __init__(self):
        self._deadline: tuple[float, str] | None = None  # (monotonic deadline, the line to print)
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watch(self, seconds: float, message: str) -> Iterator[None]:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tltrain-data-service-watchdog", daemon=True)
            self._thread.start()
        self._deadline = (time.monotonic() + seconds, message)
        try:
            yield
        finally:
            self._deadline = None

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            armed = self._deadline
            if armed is not None and time.monotonic() > armed[0]:
                sys.stdout.flush()
                print(armed[1], file=sys.stderr, flush=True)
                os._exit(EXIT_STATUS)


_WATCHDOG = _Watchdog()


def _stalled(cfg: DataConfig, what: str) -> str:
    return (f"tltrain: --data_service={cfg.data_service}: {what} took longer than --data_service_timeout="
            f"{cfg.data_service_timeout:g}s (the dispatcher or its workers are down or unreachable); stopping. "
            "Re-run the same command once the service is back: it resumes from the last checkpoint")


def distribute(dataset: tf.data.Dataset, cfg: DataConfig) -> tf.data.Dataset:
    """`dataset` produced by the tf.data service workers (registering it with the dispatcher is watched)."""
    address(cfg)
    with _WATCHDOG.watch(cfg.data_service_timeout, _stalled(cfg, "registering the input pipeline")):
        return dataset.apply(tf.data.experimental.service.distribute(
            processing_mode=cfg.data_service_mode, service=cfg.data_service))


class _WatchedIterator:
    def __init__(self, iterator, cfg: DataConfig):
        self._iterator = iterator
        self._cfg = cfg

    def __next__(self):
        with _WATCHDOG.watch(self._cfg.data_service_timeout, _stalled(self._cfg, "waiting for a batch")):
            return next(self._iterator)


def watched(dataset, cfg: DataConfig):
    """iter(dataset); with --data_service, an iterator whose start and every next() are watched."""
    if not cfg.data_service:
        return iter(dataset)
    with _WATCHDOG.watch(cfg.data_service_timeout, _stalled(cfg, "starting the input pipeline")):
        return _WatchedIterator(iter(dataset), cfg)
