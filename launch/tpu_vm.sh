#!/usr/bin/env bash
# Train with tltrain on a Cloud TPU VM: create the VM, install tltrain, run the job and stream its log,
# delete the VM.
#
# Needs: the gcloud CLI, logged in (`gcloud auth login`), a project with Cloud TPU quota in ZONE
# (`gcloud config set project P`, or PROJECT=P); python3 with pip here (to build the tltrain wheel);
# records from tools/make_tfrecords.py on gs:// in a bucket the TPU VM's service account can read (or, for
# a single-host TPU, a local records directory, which is copied to the VM).
#
# Usage: launch/tpu_vm.sh [--dry_run] [--pod] up|run|logs|down|all... [-- TLTRAIN_FLAGS...]
#   (several subcommands run in the order given, e.g. `up run`)
#   up     create the TPU VM and install tltrain on it
#   run    python3 -m tltrain.main --strategy=tpu --tpu=local --records_dir=RECORDS_DIR --model_dir=MODEL_DIR
#          TLTRAIN_FLAGS, streaming its log; the job keeps running if the connection drops (see `logs`)
#   logs   stream the job's log again
#   down   copy a MODEL_DIR that lives on the VM back to ./, then delete the TPU VM
#   all    up, run, down (down also runs when up or run fails)
#   --dry_run  print every command instead of running it
#   --pod  a multi-host TPU slice (e.g. ACCELERATOR_TYPE=v4-32): tltrain is installed on every host
#          (--worker=all), the runtime is the -pod- variant, and the job runs on worker 0 with
#          --tpu=TPU_NAME, from where TensorFlow drives all hosts. RECORDS_DIR and MODEL_DIR must be gs://.
# Environment (default):
#   TPU_NAME (tltrain-tpu)  ZONE (us-central2-b)  ACCELERATOR_TYPE (v4-8; v4-32 with --pod)
#   TF_VERSION (2.16.1)  RUNTIME_VERSION (tpu-vm-tf-TF_VERSION[-pod]-pjrt)  PROJECT (gcloud's default)
#   RECORDS_DIR (needed by run)  MODEL_DIR (tltrain_model, on the VM: use gs://... to keep it)
#   CREATE_FLAGS (extra flags for `tpu-vm create`, e.g. "--spot")  WHEEL_DIR (${TMPDIR:-/tmp}/tltrain-wheel)
# Example:
#   RECORDS_DIR=gs://my-bucket/flowers MODEL_DIR=gs://my-bucket/runs/1 \
#     launch/tpu_vm.sh all -- --model=efficientnet_b0 --batch_size=1024 --epochs=10 --fine_tune_epochs=5
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"

POD=0
actions=()
while (($#)); do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --pod) POD=1 ;;
    up | run | logs | down | all) actions+=("$1") ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (usage: tpu_vm.sh [--dry_run] [--pod] up|run|logs|down|all... [-- TLTRAIN_FLAGS...])" ;;
  esac
  shift
done
((${#actions[@]})) || die "missing subcommand: up, run, logs, down or all"
TLTRAIN_FLAGS=("$@")

REPO_ROOT=$(cd "$(dirname "$0")/.." && pwd)
TPU_NAME=${TPU_NAME:-tltrain-tpu}
ZONE=${ZONE:-us-central2-b}
TF_VERSION=${TF_VERSION:-2.16.1}
MODEL_DIR=${MODEL_DIR:-tltrain_model}
WHEEL_DIR=${WHEEL_DIR:-${TMPDIR:-/tmp}/tltrain-wheel}
read -r -a CREATE_FLAGS <<<"${CREATE_FLAGS:-}"
if ((POD)); then
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-32}
  RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-vm-tf-$TF_VERSION-pod-pjrt}
  INSTALL_WORKERS=all
else
  ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v4-8}
  RUNTIME_VERSION=${RUNTIME_VERSION:-tpu-vm-tf-$TF_VERSION-pjrt}
  INSTALL_WORKERS=0
fi
LOCATION=(--zone="$ZONE")
[[ -z ${PROJECT:-} ]] || LOCATION+=(--project="$PROJECT")
TPU_VM=(gcloud compute tpus tpu-vm)
LOG_FILE=tltrain.log  # in the home directory of worker 0

# on_vm WORKER COMMAND: run a shell command on worker WORKER (a number or "all") of the TPU VM.
on_vm() {
  cmd "${TPU_VM[@]}" ssh "$TPU_NAME" "${LOCATION[@]}" --worker="$1" --command "$2"
}

up() {
  cmd "${TPU_VM[@]}" create "$TPU_NAME" "${LOCATION[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
    --version="$RUNTIME_VERSION" "${CREATE_FLAGS[@]}"
  cmd rm -rf "$WHEEL_DIR"
  cmd python3 -m pip wheel --quiet --no-deps --wheel-dir "$WHEEL_DIR" "$REPO_ROOT"
  cmd "${TPU_VM[@]}" scp "$WHEEL_DIR"/tltrain-*.whl "$TPU_NAME:" "${LOCATION[@]}" --worker="$INSTALL_WORKERS"
  # The runtime image's TensorFlow satisfies tltrain's requirement, so pip keeps it.
  # shellcheck disable=SC2016  # expanded on the VM
  on_vm "$INSTALL_WORKERS" 'python3 -m pip install --quiet "$(ls -t ~/tltrain-*.whl | head -n 1)"'
}

# check_run_config: fail before anything is created when `run` could not work.
check_run_config() {
  [[ -n ${RECORDS_DIR:-} ]] || die "RECORDS_DIR is not set: gs://bucket/records (or a local records directory)"
  if ((POD)); then
    [[ $RECORDS_DIR == gs://* && $MODEL_DIR == gs://* ]] ||
      die "--pod needs RECORDS_DIR and MODEL_DIR on gs:// (every host reads them); got '$RECORDS_DIR' and '$MODEL_DIR'"
  elif [[ $RECORDS_DIR != gs://* && $DRY_RUN == 0 && ! -f $RECORDS_DIR/dataset.json ]]; then
    die "RECORDS_DIR=$RECORDS_DIR has no dataset.json: make it with tools/make_tfrecords.py"
  fi
}

run() {
  local records=$RECORDS_DIR tpu=local env_vars
  if ((POD)); then
    tpu=$TPU_NAME
    env_vars="TPU_LOAD_LIBRARY=0"  # worker 0 is a client of the slice's TPU servers, not a TPU host itself
  else
    env_vars="NEXT_PLUGGABLE_DEVICE_USE_C_API=true TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so"  # PJRT
  fi
  if [[ $RECORDS_DIR != gs://* ]]; then
    cmd "${TPU_VM[@]}" scp --recurse "$RECORDS_DIR" "$TPU_NAME:" "${LOCATION[@]}" --worker=0
    records=$(basename "$RECORDS_DIR")
  fi
  local job
  job="$env_vars $(join_quoted python3 -m tltrain.main --strategy=tpu --tpu="$tpu" --records_dir="$records" \
    --model_dir="$MODEL_DIR" "${TLTRAIN_FLAGS[@]}")"
  # nohup + tail: the log streams here, and the job survives a dropped ssh connection.
  on_vm 0 "$job > $LOG_FILE 2>&1 < /dev/null & pid=\$!; tail -n +1 -f --pid=\$pid $LOG_FILE; wait \$pid"
}

logs() {
  on_vm 0 "tail -n +1 -F $LOG_FILE"
}

down() {
  if [[ $MODEL_DIR != gs://* ]]; then
    cmd "${TPU_VM[@]}" scp --recurse "$TPU_NAME:$MODEL_DIR" . "${LOCATION[@]}" --worker=0 ||
      echo "warning: could not copy $MODEL_DIR back from the TPU VM" >&2
  fi
  cmd "${TPU_VM[@]}" delete "$TPU_NAME" "${LOCATION[@]}" --quiet
}

if [[ " ${actions[*]} " == *" run "* || " ${actions[*]} " == *" all "* ]]; then
  check_run_config
fi
for action in "${actions[@]}"; do
  case "$action" in
    all)
      trap down EXIT
      up
      run
      ;;
    *) "$action" ;;
  esac
done
