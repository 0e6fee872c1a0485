"""tools/accelerator_check.py in its CPU mode, on a tiny model: the report CI can read."""

import json
import subprocess
import sys

import tensorflow as tf

from tltrain import strategy


def test_accelerator_check_runs_on_cpu(tmp_path, repo_root):
    result = subprocess.run(
        [sys.executable, str(repo_root / "tools" / "accelerator_check.py"), "--json", f"--work_dir={tmp_path}",
         "--models=simple_cnn", "--image_size=32", "--batch_size=8", "--steps=2", "--num_images=24"],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["kind"] == "cpu" and report["precision"] == strategy.resolve_precision("auto", tf.distribute.get_strategy())
    (row,) = report["results"]
    assert row["model"] == "simple_cnn" and row["replicas"] == 1 and row["xla_compiles"] is True
    for name in ("synthetic", "records", "resized"):
        assert row[name]["images_per_second"] > 0 and 0 <= row[name]["input_wait_share"] < 1
    assert row["records"]["x_synthetic"] > 0
