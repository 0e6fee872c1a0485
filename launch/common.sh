# shellcheck shell=bash
# Shared helpers for the launch/*.sh scripts (sourced, not run).
# Needs: bash 4.3+.
#
# Every external command goes through `cmd`, so `--dry_run` (DRY_RUN=1) prints exactly what would run,
# quoted so that it can be pasted into a shell, instead of running it.

DRY_RUN=${DRY_RUN:-0}

# quote ARG: ARG as one shell word, single-quoted only when it needs to be.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=,@+%^-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# join_quoted ARGS...: the arguments as one command line.
join_quoted() {
  local out="" arg
  for arg in "$@"; do
    out+="${out:+ }$(quote "$arg")"
  done
  printf '%s' "$out"
}

# cmd ARGS...: run the command, or print it under --dry_run.
cmd() {
  if ((DRY_RUN)); then
    printf '%s\n' "$(join_quoted "$@")"
  else
    echo "+ $(join_quoted "$@")" >&2
    "$@"
  fi
}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}
