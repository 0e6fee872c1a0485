#!/usr/bin/env bash
# Train with tltrain on several GPU machines (MultiWorkerMirroredStrategy): one worker per host, started over
# ssh with that host's TF_CONFIG; every worker uses all the GPUs of its host. Logs stream here with a
# "[worker i host]" prefix; when one worker fails the others are stopped and this script exits non-zero.
#
# Needs: bash 5.1+ and ssh here; on every host: passwordless ssh (BatchMode), tltrain installed for
# PYTHON, the same records (a shared file system or gs://), MODEL_DIR on storage all hosts share (gs://,
# NFS); the port open between the hosts and closed to everyone else (the workers' gRPC servers listen on
# every interface, unauthenticated: keep them on a private network or VPC, see launch/README.md).
#
# Usage: launch/gpu_workers.sh [--dry_run] --hosts=HOST[,HOST...] -- TLTRAIN_FLAGS...
#   HOST is [user@]host[:port]; the i-th host runs worker i, and worker 0 is the chief (it writes the
#   checkpoints, summaries and export). --hosts_file=FILE reads the hosts one per line instead.
#   --dry_run  print the ssh command of every worker instead of running it
# Environment (default): PORT (2222, for hosts without :port)  PYTHON (python3)
#   REMOTE_DIR (where the job starts; absolute or relative to the
#   ssh login directory)  SSH_FLAGS (-o BatchMode=yes)
# Example (global batch 256 over 2 hosts x 4 GPUs = 32 per GPU; learning rate scaled by 8 replicas):
#   launch/gpu_workers.sh --hosts=gpu-a,gpu-b -- --records_dir=gs://bucket/flowers \
#     --model_dir=gs://bucket/runs/1 --batch_size=256 --scale_learning_rate=linear
set -euo pipefail
# shellcheck source=launch/common.sh
source "$(dirname "$0")/common.sh"

hosts=()
while (($#)); do
  case "$1" in
    --dry_run) DRY_RUN=1 ;;
    --hosts=*) IFS=, read -r -a hosts <<<"${1#--hosts=}" ;;
    --hosts_file=*)
      [[ -f ${1#--hosts_file=} ]] || die "--hosts_file: no such file '${1#--hosts_file=}'"
      mapfile -t hosts < <(grep -v -e '^[[:space:]]*$' -e '^[[:space:]]*#' "${1#--hosts_file=}")
      ;;
    --) shift; break ;;
    *) die "unknown argument '$1' (usage: gpu_workers.sh [--dry_run] --hosts=HOST[,HOST...] -- TLTRAIN_FLAGS...)" ;;
  esac
  shift
done
((${#hosts[@]})) || die "no hosts: give --hosts=host1,host2 or --hosts_file=FILE"
PORT=${PORT:-2222}
PYTHON=${PYTHON:-python3}
read -r -a SSH_FLAGS <<<"${SSH_FLAGS:--o BatchMode=yes}"

# The cluster: "host:port" of every worker, in order (the ssh user is not part of the address).
addresses=()
for host in "${hosts[@]}"; do
  address=${host#*@}
  [[ $address == *:* ]] || address+=":$PORT"
  addresses+=("$address")
done
cluster=$(printf '"%s",' "${addresses[@]}")
cluster="{\"worker\": [${cluster%,}]}"

# worker_command INDEX TLTRAIN_FLAGS...: the shell command that starts worker INDEX on its host.
worker_command() {
  local tf_config="{\"cluster\": $cluster, \"task\": {\"type\": \"worker\", \"index\": $1}}"
  shift
  local start=""
  [[ -z ${REMOTE_DIR:-} ]] || start="cd $(quote "$REMOTE_DIR") && "
  printf '%sTF_CONFIG=%s exec %s' "$start" "$(quote "$tf_config")" \
    "$(join_quoted "$PYTHON" -m tltrain.main --strategy=multi_worker "$@")"
}

pids=()
for i in "${!hosts[@]}"; do
  target=${hosts[i]%:*}
  # -tt: closing the connection hangs up the remote job, so stopping a worker here stops it there.
  ssh_cmd=(ssh -tt "${SSH_FLAGS[@]}" "$target" "$(worker_command "$i" "$@")")
  if ((DRY_RUN)); then
    cmd "${ssh_cmd[@]}"
    continue
  fi
  echo "+ $(join_quoted "${ssh_cmd[@]}")" >&2
  "${ssh_cmd[@]}" </dev/null > >(sed -u -e 's/\r$//' -e "s/^/[worker $i ${addresses[i]%:*}] /") 2>&1 &
  pids+=("$!")
done
((DRY_RUN)) && exit 0

stop_all() {
  kill "${pids[@]}" 2>/dev/null || true
}
trap stop_all INT TERM

status=0
remaining=("${pids[@]}")
while ((${#remaining[@]})); do
  finished=""
  rc=0
  wait -n -p finished "${remaining[@]}" || rc=$?
  [[ -n $finished ]] || continue  # interrupted by a signal; the trap stopped the workers
  still_running=()
  for pid in "${remaining[@]}"; do
    [[ $pid == "$finished" ]] || still_running+=("$pid")
  done
  remaining=("${still_running[@]}")
  if ((rc != 0 && status == 0)); then
    status=$rc
    echo "gpu_workers.sh: a worker failed (exit $rc): stopping the others" >&2
    stop_all
  fi
done
exit "$status"
