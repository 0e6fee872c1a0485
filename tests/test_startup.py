"""What every entry point gets from `import tltrain` before TensorFlow loads: TensorFlow's start-up without its
C++ log noise (real errors kept, the user's TF_CPP_MIN_LOG_LEVEL respected), and the console tools installed
with tltrain found in this interpreter's environment even when it is not activated."""

import os
import subprocess
import sys
import sysconfig

from tltrain import console_tools, tf_startup

# What TensorFlow 2.21 wrote on a CPU machine at start-up (two libraries with their own absl each, then the GPU
# platform), with a real error and a Python warning among them.
STARTUP = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796146527.769552   19184 port.cc:153] oneDNN custom operations are on. You may see slightly different numerical results.
I0000 00:00:1796146527.769901   19184 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will not be used.
W0000 00:00:1796146527.800000   19184 env_var.cc:12] TF_ENABLE_ONEDNN_OPTS is not set to either '0', 'false', '1', or 'true'.
/x/y.py:3: DeprecationWarning: something old
E0000 00:00:1796146550.583956   19184 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)
E0000 00:00:1796146550.600000   19184 op_kernel.cc:1857] OP_REQUIRES failed: a real error
"""
NOISE = ("absl::InitializeLog()", "oneDNN custom operations", "cuda drivers", "cuInit", "cpu_feature_guard",
         "This TensorFlow binary is optimized")


def test_startup_lines_below_the_log_level_go_and_errors_stay():
    kept = tf_startup.filter_startup_lines(STARTUP, level=2).splitlines()
    assert kept == ["/x/y.py:3: DeprecationWarning: something old", STARTUP.splitlines()[-1]]
    at_warning = tf_startup.filter_startup_lines(STARTUP, level=1)
    assert "TF_ENABLE_ONEDNN_OPTS is not set" in at_warning and "oneDNN custom" not in at_warning
    assert tf_startup.filter_startup_lines(STARTUP, level=0) == STARTUP  # TF_CPP_MIN_LOG_LEVEL=0: everything
    with_driver = STARTUP.replace("Could not find cuda drivers", "Found a driver")
    assert "failed call to cuInit" in tf_startup.filter_startup_lines(with_driver, level=2)  # a GPU machine's error


def test_the_users_settings_win(monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    monkeypatch.delenv("TF_ENABLE_ONEDNN_OPTS", raising=False)
    tf_startup.install()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0" and os.environ["TF_ENABLE_ONEDNN_OPTS"] == "1"


def test_a_command_line_run_prints_no_tensorflow_startup_lines():
    env = {name: value for name, value in os.environ.items() if not name.startswith("TF_CPP_")}
    run = subprocess.run([sys.executable, "-m", "tltrain.main", "--model=list"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 0 and "mobilenet_v2" in run.stdout, run.stderr[-2000:]
    assert not [line for line in run.stderr.splitlines() if any(noise in line for noise in NOISE)], run.stderr


def test_console_tools_are_found_in_this_interpreters_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an unactivated environment: its scripts are not on PATH
    found = console_tools.find("saved_model_cli")  # installed with tensorflow, next to this interpreter
    assert found and os.path.dirname(found) in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable))
    assert console_tools.command("saved_model_cli") == found  # typed with its full path
    assert console_tools.find("no-such-tool-here") is None
    monkeypatch.setenv("PATH", os.path.dirname(found))
    assert console_tools.command("saved_model_cli") == "saved_model_cli"
