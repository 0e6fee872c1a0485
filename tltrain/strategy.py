"""Build the tf.distribute strategy a run asks for, and decide where this worker may write.

The strategy is created before any dataset or model, so every variable lands in its scope. Only the chief
of a multi-worker job writes to the real model_dir; the others write to a temporary directory (they must
still take part in checkpoint saves, which are collective) that is removed afterwards, or by the job's
re-run when a worker was killed.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
import tempfile
import typing

import tensorflow as tf

from tltrain.config import Strategy, StrategyConfig

STRATEGIES = typing.get_args(Strategy)
# --mixed_precision values that name a Keras dtype policy outright.
PRECISION_POLICIES = {"float16": "mixed_float16", "bfloat16": "mixed_bfloat16", "none": "float32"}


def configure_cpu_devices(num_cpu_devices: int) -> None:
    """Splits the first CPU into N logical devices (tests and demos of multi-replica code on one CPU).

    Must run before anything touches the devices: TensorFlow fixes the device list at first use.
    """
    if num_cpu_devices <= 1:
        return
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * num_cpu_devices)
    except RuntimeError as e:
        raise RuntimeError(f"--num_cpu_devices={num_cpu_devices}: devices were already initialised ({e})") from e


def _replica_devices() -> list[str]:
    """GPUs when there are any, else every logical CPU (several after --num_cpu_devices)."""
    gpus = tf.config.list_logical_devices("GPU")
    return [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]


def make_strategy(cfg: StrategyConfig) -> tf.distribute.Strategy:
    """The strategy named by --strategy; a ValueError with one line when it cannot be had."""
    cfg.validate()
    if cfg.strategy == "default":
        return tf.distribute.get_strategy()
    if cfg.strategy == "one_device":
        return tf.distribute.OneDeviceStrategy(_replica_devices()[0])
    if cfg.strategy == "mirrored":
        return tf.distribute.MirroredStrategy(_replica_devices())
    if cfg.strategy == "multi_worker":
        # TF_CONFIG names the cluster and this task; without it this is a one-worker job.
        return tf.distribute.MultiWorkerMirroredStrategy()
    return _tpu_strategy(cfg.tpu)


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    """--tpu: a Cloud TPU name, `local` on a TPU VM, or empty to let the resolver read its environment."""
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or None)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, OSError, tf.errors.OpError) as e:
        detail = " ".join(str(e).split())[:200] or type(e).__name__
        raise ValueError(f"--strategy=tpu --tpu={tpu}: no TPU reachable ({detail})") from e
    return tf.distribute.TPUStrategy(resolver)


def task() -> tuple[str | None, int]:
    """(task type, task index) of this process from TF_CONFIG; (None, 0) outside a cluster."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task_spec = tf_config.get("task") or {}
    return task_spec.get("type"), int(task_spec.get("index", 0))


def is_chief() -> bool:
    """The task that writes: the 'chief' when the cluster has one, else worker 0, else the only process."""
    task_type, index = task()
    if task_type is None:
        return True
    cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    if "chief" in cluster:
        return task_type == "chief"
    return task_type == "worker" and index == 0


def write_dir(path: str) -> str:
    """Where this task writes what belongs in `path`: `path` itself on the chief, elsewhere an emptied
    directory in the system temp dir (remove it with cleanup_write_dir). Its name is fixed by the task and
    `path`, so the re-run of a job whose worker was killed (and could not clean up) removes what it left."""
    if is_chief():
        return path
    task_type, index = task()
    digest = hashlib.sha256(path.encode()).hexdigest()[:12]
    written = os.path.join(tempfile.gettempdir(),
                           f"tltrain-{task_type}{index}-{posixpath.basename(path.rstrip('/'))}-{digest}")
    shutil.rmtree(written, ignore_errors=True)
    os.makedirs(written)
    return written


def cleanup_write_dir(path: str, written: str) -> None:
    """Removes a non-chief task's temporary directory (never the real one)."""
    if written != path:
        shutil.rmtree(written, ignore_errors=True)


def resolve_precision(mode: str, strategy: tf.distribute.Strategy) -> str:
    """The Keras dtype policy for --mixed_precision=auto|float16|bfloat16|none on this strategy's devices.

    auto: mixed_float16 on GPUs of compute capability 7.0 or later (tensor cores), mixed_bfloat16 on TPUs (their
    native training type), float32 everywhere else, every CPU included: mixed_bfloat16 on CPUs measured 0.3-0.9x
    float32's speed, even on CPUs with bf16 instructions, so a CPU trains in bfloat16 only when asked.
    """
    if mode in PRECISION_POLICIES:
        return PRECISION_POLICIES[mode]
    if mode != "auto":
        raise ValueError(f"--mixed_precision={mode}: expected auto, {', '.join(PRECISION_POLICIES)}")
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return auto_precision("TPU")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return auto_precision("GPU", tf.config.experimental.get_device_details(gpus[0]).get("compute_capability"))
    return auto_precision("CPU")


def auto_precision(device_type: str, compute_capability: tuple[int, int] | None = None) -> str:
    """The rule of --mixed_precision=auto for the device type that runs the replicas (CPU, GPU or TPU)."""
    if device_type == "TPU":
        return "mixed_bfloat16"
    if device_type == "GPU" and compute_capability and tuple(compute_capability) >= (7, 0):
        return "mixed_float16"
    return "float32"
