"""tltrain's one output path: every module logs to a child of the "tltrain" logger (stdlib logging) and never
prints. Nothing is shown until someone asks: the command-line tools call `show_on_console()`, a notebook
calls `tltrain.log_to_console()` to see the same lines."""

from __future__ import annotations

import logging
import sys

LOGGER = "tltrain"


class _Console(logging.StreamHandler):
    """Plain text lines: INFO on the current sys.stdout, warnings and errors on the current sys.stderr
    (notebooks and tests replace both)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        super().emit(record)


def log_to_console() -> None:
    """Shows what tltrain logs on the console: progress lines (per epoch, per phase, feature caches, results)
    as plain text on stdout, warnings on stderr. The "tltrain" logger gets its own handler, level INFO, and
    stops passing records up to the root logger's handlers (which some libraries install, and which would
    show every line twice). Calling it again changes nothing."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if not any(isinstance(handler, _Console) for handler in logger.handlers):
        logger.addHandler(_Console())


def show_on_console() -> None:
    """For the command-line tools under absl's app.run: tltrain's lines as log_to_console shows them, and
    absl's handler (on the root logger) keeps warnings and errors only, so TensorFlow's and Keras's INFO
    lines don't drown the per-epoch lines."""
    from absl import logging as absl_logging

    log_to_console()
    absl_logging.get_absl_handler().addFilter(lambda record: record.levelno >= logging.WARNING)
