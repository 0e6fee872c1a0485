"""Run a tf.data service: a dispatcher and K workers that run the trainer's input pipeline for it.

For when one host's CPUs cannot read, decode and resize images as fast as its accelerators train: run this
on one or more CPU machines and give the trainer the printed address (`--data_service=grpc://HOST:PORT`).
On a single machine it is slower than the local pipeline (0.4-0.65x measured on 2 cores): it adds input
hosts, it does not speed up one box.

Needs: TensorFlow (the same version as the trainer's), and the records readable from every worker host
(gs:// or a shared file system).

Usage:
  python launch/data_service.py --port=5050 --num_workers=2       # a dispatcher and 2 workers on this host
  python launch/data_service.py --dispatcher_address=10.0.0.2:5050 --host=10.0.0.3 --num_workers=4
                                                                     # 4 more workers on another host
It prints `--data_service=grpc://HOST:PORT` and serves until SIGINT or SIGTERM.

Security: these gRPC servers listen on every interface whatever --host says, and anyone who reaches them
can run pipelines and read data through them. Keep the ports on a private network (see launch/README.md).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import signal
import socket
import sys
import threading

from absl import app, flags, logging

FLAGS = flags.FLAGS
# Printed at start: what the README's "Security" section says, for the ports this run opened.
OPEN_PORTS_WARNING = ("listen on every network interface, without authentication: "
                      "run this only on a private network (README.md, Security)")


@dataclasses.dataclass
class DataService:
    """The servers of a running tf.data service; they serve until stop() or the end of the process."""

    address: str  # grpc://host:port of the dispatcher: the trainer's --data_service
    dispatcher: object | None  # tf.data.experimental.service.DispatchServer, None when joining another one
    workers: list

    def stop(self) -> None:
        for server in [*self.workers, self.dispatcher]:
            if server is not None:
                server.stop()


def start(
    num_workers: int = 1,
    port: int = 0,
    worker_ports: list[int] | tuple[int, ...] = (),
    host: str = "127.0.0.1",
    dispatcher_address: str = "",
    work_dir: str = "",
) -> DataService:
    """Starts a dispatcher on `port` (0: a free port), unless `dispatcher_address` (host:port) names a running
    one, and `num_workers` workers on `worker_ports` (empty: free ports). `host` is the address the servers
    advertise to each other and to trainers. `work_dir` keeps the dispatcher's journal, so a restarted
    dispatcher carries on with its jobs."""
    if worker_ports and len(worker_ports) != num_workers:
        raise ValueError(f"--worker_ports has {len(worker_ports)} ports for --num_workers={num_workers}")
    if dispatcher_address and num_workers < 1:
        raise ValueError("--dispatcher_address given with --num_workers=0: there is nothing to start")
    if not dispatcher_address:
        check_port_free("port", port)
    for worker_port in worker_ports:
        check_port_free("worker_ports", worker_port)
    import tensorflow as tf

    service = tf.data.experimental.service
    dispatcher = None
    if not dispatcher_address:
        dispatcher = service.DispatchServer(
            service.DispatcherConfig(port=port, work_dir=work_dir or None, fault_tolerant_mode=bool(work_dir))
        )
        dispatcher_address = f"{host}:{dispatcher.target.rsplit(':', 1)[1]}"
    workers = [
        service.WorkerServer(
            service.WorkerConfig(
                dispatcher_address=dispatcher_address, worker_address=f"{host}:%port%", port=worker_port
            )
        )
        for worker_port in (worker_ports or [0] * num_workers)
    ]
    return DataService(address=f"grpc://{dispatcher_address}", dispatcher=dispatcher, workers=workers)


def check_port_free(flag: str, port: int) -> None:
    """gRPC servers bind with SO_REUSEPORT, so a server on a port another process listens on starts anyway
    and shares it (trainers then fail with `Iteration id ... not found`): refuse such a port in one line.
    A plain bind fails where anything listens (SO_REUSEADDR only lets it past closing connections)."""
    if not port:
        return
    for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise ValueError(f"--{flag}={port}: already in use on this host (another dispatcher or worker?); "
                                     "stop it or choose another port") from None


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        data_service = start(
            num_workers=FLAGS.num_workers,
            port=FLAGS.port,
            worker_ports=[int(p) for p in FLAGS.worker_ports],
            host=FLAGS.host,
            dispatcher_address=FLAGS.dispatcher_address,
            work_dir=FLAGS.work_dir,
        )
    except ValueError as error:
        sys.exit(f"data_service: {error}")
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    opened = "the workers' ports" if data_service.dispatcher is None else (
        f"the dispatcher's port {data_service.address.rsplit(':', 1)[1]} and the workers' ports")
    print(f"data_service: {opened} {OPEN_PORTS_WARNING}", file=sys.stderr, flush=True)
    role = "workers joined" if data_service.dispatcher is None else "dispatcher and workers"
    logging.info("tf.data service %s: %s, %d workers", role, data_service.address, len(data_service.workers))
    print(f"--data_service={data_service.address}", flush=True)
    while not stopping.wait(1.0):
        pass
    data_service.stop()
    logging.info("tf.data service stopped")


def define_flags() -> None:
    """Only when run as a script, so that importing this module adds no flags to another program."""
    flags.DEFINE_integer("port", 5050, "Dispatcher port (0: a free port).", lower_bound=0)
    flags.DEFINE_integer("num_workers", 1, "Number of tf.data service workers to start here.", lower_bound=0)
    flags.DEFINE_list("worker_ports", [], "One port per worker (default: free ports).")
    flags.register_validator(
        "worker_ports", lambda ports: all(p.isdigit() for p in ports), "--worker_ports: comma-separated port numbers"
    )
    flags.DEFINE_string("host", "127.0.0.1", "Address the servers advertise (they listen on every interface).")
    flags.DEFINE_string("dispatcher_address", "", "host:port of a running dispatcher: start only workers, for it.")
    flags.DEFINE_string("work_dir", "", "Dispatcher journal directory (local or gs://): a restarted dispatcher resumes.")


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import tltrain  # noqa: F401  (TensorFlow's start-up settings and quiet start-up; stdlib only)

    define_flags()
    app.run(main)
