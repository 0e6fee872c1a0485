"""Progress inside an epoch, an evaluation or a feature-cache build, for people at a console or reading a log."""

from __future__ import annotations

import logging
import sys
import time

import keras

from tltrain import strategy as strategy_lib

log = logging.getLogger(__name__)


class StepProgress:
    """Progress inside an epoch or an evaluation, as Keras shows it. On a terminal: a keras.utils.Progbar (step /
    steps, the values given, time per step, ETA), cleared when done, so the epoch line takes its place. Elsewhere
    (a log file, a pipe): a plain line at most every `interval` seconds, so logs stay readable and a run that
    takes minutes per epoch still shows it is moving: "PREFIX step DONE/TOTAL[ OF] - values - ETA m:ss". Nothing
    with interval 0, nor off the chief. `initial`: the steps already done when it starts (a resumed epoch)."""

    def __init__(self, prefix: str, total: int, interval: float, initial: int = 0, of: str = ""):
        self.prefix, self.of, self.total, self.interval, self.initial = prefix, of, total, interval, initial
        self.started = self.shown = time.perf_counter()
        self.enabled = total > 0 and interval > 0 and strategy_lib.is_chief()
        self.bar = keras.utils.Progbar(total, stateful_metrics=("loss", "img/s")) \
            if self.enabled and sys.stdout.isatty() else None

    def update(self, done: int, values: dict[str, float] | None = None) -> None:
        if not self.enabled:
            return
        values = values or {}
        if self.bar is not None:
            self.bar.update(min(done, self.total), list(values.items()), finalize=False)
            return
        now = time.perf_counter()
        if now - self.shown < self.interval or done >= self.total:
            return
        self.shown = now
        eta = (now - self.started) / max(done - self.initial, 1) * (self.total - done)
        parts = [f"{self.prefix} step {done}/{self.total}{self.of and ' of ' + self.of}",
                 *(f"{name} {_number(name, value)}" for name, value in values.items()),
                 f"ETA {int(eta // 60)}:{int(eta % 60):02d}"]
        log.info(" - ".join(parts))

    def close(self) -> None:
        if self.bar is not None:
            sys.stdout.write("\r\x1b[2K")  # clear the bar's line
            sys.stdout.flush()
            self.bar = None


def _number(name: str, value: float) -> str:
    """A rate to one decimal (img/s 28.8), a loss to four (0.4312), anything of 100 or more to a whole number."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}" if name.endswith("/s") else f"{value:.4f}"
