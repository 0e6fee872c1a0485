"""How the input benchmarks time their methods and print the result, so every bench measures the same way.

Every method is measured alike: one iterator kept for the whole run (with AUTOTUNE, a fresh iterator per epoch
ran 30-60% of epochs at half speed on a 2-core machine, one long-lived iterator never did; the trainer keeps
one), a warm-up, then timed passes taken round-robin over the methods, so a burst of load from other
processes hits every method rather than one; the figure is the median pass. tf.data methods drain their
prefetch buffers for a second before each pass so a pass never starts on batches made while idle.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Method:
    """A name and a factory of `next_batch() -> number of images`; `tf_data` methods get drained first."""

    def __init__(self, name: str, start, tf_data: bool = True):
        self.name, self.start, self.tf_data = name, start, tf_data
        self.next_batch = None


def iterate(dataset):
    """next_batch of a dataset of (images, ...) batches, over one iterator."""
    iterator = iter(dataset)
    return lambda: int(next(iterator)[0].shape[0])


def _images_in(method: Method, seconds: float, min_batches: int = 1) -> tuple[int, float]:
    images, start = 0, time.perf_counter()
    batches = 0
    while batches < min_batches or time.perf_counter() - start < seconds:
        images += method.next_batch()
        batches += 1
    return images, time.perf_counter() - start


def measure(methods: list[Method], batch_size: int, passes: int, pass_seconds: float) -> dict[str, list[float]]:
    """images/second of every pass of every method, round-robin (see the module docstring)."""
    batches_per_pass = {}
    for method in methods:
        log(f"warming up {method.name} ...")
        method.next_batch = method.start()
        _images_in(method, 2.0, min_batches=3)  # start-up, tracing, autotuning, shuffle buffer
        images, seconds = _images_in(method, 1.0, min_batches=2)
        batches_per_pass[method.name] = max(3, math.ceil(pass_seconds * images / seconds / batch_size))
    figures = {method.name: [] for method in methods}
    for index in range(passes):
        for method in methods:
            if method.tf_data:
                _images_in(method, 1.0, min_batches=2)
            images, start = 0, time.perf_counter()
            for _ in range(batches_per_pass[method.name]):
                images += method.next_batch()
            figures[method.name].append(images / (time.perf_counter() - start))
            log(f"pass {index + 1}/{passes} {method.name}: {figures[method.name][-1]:.1f} img/s")
    return figures


def machine() -> dict:
    import keras
    import tensorflow as tf

    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor()) if os.path.exists("/proc/cpuinfo") else platform.processor()
    versions = {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__}
    try:
        import tf_keras

        versions["tf_keras"] = tf_keras.__version__
    except ImportError:
        pass
    return {"cpu": model, "cores": len(os.sched_getaffinity(0)), "platform": platform.platform(),
            "tf_cpu_allocator_use_bfc": os.environ.get("TF_CPU_ALLOCATOR_USE_BFC", ""),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2), **versions}


def report(figures: dict[str, float], passes: dict[str, list[float]], about: dict, settings: dict,
           targets: tuple, columns: tuple, as_json: bool, hint: str = "", extra: dict | None = None) -> dict:
    """Prints the table (or, as_json, one JSON object) and returns the JSON object. targets: (method, baseline,
    minimum ratio); columns: the baselines every method is divided by; extra: more keys for the JSON."""
    ratios = {name: {f"x_{base}": round(value / figures[base], 3) for base in columns if base in figures}
              for name, value in figures.items()}
    checks = [{"target": f"{name} >= {minimum} x {base}", "ratio": round(figures[name] / figures[base], 3),
               "met": figures[name] / figures[base] >= minimum}
              for name, base, minimum in targets if name in figures and base in figures]
    about = dict(about, load_average_1m_at_end=round(os.getloadavg()[0], 2))
    result = {name: round(value, 1) for name, value in figures.items()}
    result.update(machine=about, settings=settings, ratios=ratios, targets=checks,
                  passes={name: [round(v, 1) for v in values] for name, values in passes.items()}, **(extra or {}))
    if as_json:
        print(json.dumps(result, indent=2))
        return result
    print(f"{about['cpu']}, {about['cores']} cores, TF {about['tensorflow']}, Keras {about['keras']}; "
          f"load average {about['load_average_1m_at_start']} -> {about['load_average_1m_at_end']}")
    print(", ".join(f"{k}={v}" for k, v in settings.items()))
    width = max(len(name) for name in figures) + 2
    shown = [base for base in columns if base in figures]
    print(f"{'method':{width}}{'img/s':>9}  " + "  ".join(f"x {c}" for c in shown) + "   passes")
    for name, value in figures.items():
        cells = "  ".join(f"{ratios[name]['x_' + c]:>{len(c) + 2}.2f}" for c in shown)
        print(f"{name:{width}}{value:9.1f}  {cells}   {', '.join(f'{v:.0f}' for v in passes[name])}")
    for key, value in (extra or {}).items():
        print(f"{key}: {value}")
    for check in checks:
        print(f"target {check['target']}: {check['ratio']:.2f}  {'met' if check['met'] else 'NOT MET'}")
    if hint and not all(check["met"] for check in checks):
        print(hint)
    return result


def one_thread_pass(elements, fn):
    """A function that maps fn over elements in tf.data on one thread (no autotuning): a CPU cost per element
    that other load does not change, unlike images/second."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices(elements).map(fn).batch(64).with_options(options)
    return lambda: [None for _ in dataset]


def cpu_ms_per_image(run_once, images: int, repeats: int = 3) -> float:
    """Median process CPU time per image of run_once() (which handles `images` images), after one warm-up."""
    run_once()
    costs = []
    for _ in range(repeats):
        start = time.process_time()
        run_once()
        costs.append((time.process_time() - start) * 1000 / images)
    return statistics.median(costs)
