"""Checkpoints that survive faults: a restore that falls back past a damaged checkpoint and says so, and a
failed save reported in one line that says where a re-run resumes (model_dir_lock keeps a second run out)."""

from __future__ import annotations

import logging
import re

import tensorflow as tf

from tltrain.errors import RunError

log = logging.getLogger(__name__)

# What reading a damaged checkpoint raises: TensorFlow's errors (DataLossError, NotFoundError, ...), and
# IndexError "Read less bytes than requested" for a truncated data file.
_UNREADABLE = (tf.errors.OpError, IndexError, OSError)


def _one_line(error: BaseException) -> str:
    message = error.message if isinstance(error, tf.errors.OpError) else str(error)
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)  # TensorFlow's op context
    return " ".join(message.split())[:200] or type(error).__name__


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
            log.info(f"{path}: cannot be read ({_one_line(error)}); trying the checkpoint before it")
            continue
        if partial:
            status.expect_partial()
        else:
            status.assert_nontrivial_match()
        if failures:
            log.info(f"restored {path}, the newest checkpoint that reads ({len(failures)} newer one(s) unreadable)")
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
