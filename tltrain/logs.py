"""tltrain's one output path: every module logs to a child of the "tltrain" logger (stdlib logging) and never
prints. Nothing is shown until someone asks: the command-line tools call `show_on_console()`, a notebook
calls `tltrain.log_to_console()` to see the same lines."""

from __future__ import annotations

import logging
import sys

LOGGER = "tltrain"


class _Stdout(logging.StreamHandler):
    """The INFO lines as plain text on the current sys.stdout (notebooks and tests replace it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def log_to_console() -> None:
    """Shows tltrain's progress lines (per epoch, per phase, feature caches, results) as plain text on stdout:
    adds a handler to the "tltrain" logger and sets it to INFO. Calling it again changes nothing."""
    logger = logging.getLogger(LOGGER)
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, _Stdout) for handler in logger.handlers):
        handler = _Stdout()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(lambda record: record.levelno < logging.WARNING)  # warnings go the usual way
        logger.addHandler(handler)


def show_on_console() -> None:
    """For the command-line tools under absl's app.run: tltrain's lines as log_to_console shows them, and
    absl's handler (on the root logger) keeps warnings and errors only, so TensorFlow's and Keras's INFO
    lines don't drown the per-epoch lines and tltrain's are not shown twice."""
    from absl import logging as absl_logging

    log_to_console()
    absl_logging.get_absl_handler().addFilter(lambda record: record.levelno >= logging.WARNING)
