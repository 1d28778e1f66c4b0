# shellcheck shell=bash
# Shared helpers for infra/local/up.sh and infra/local/down.sh (sourced, not executed).

# shellcheck disable=SC2034 # used by the scripts that source this file
STATE="${IMGBUILDER_LOCAL_DIR:-/tmp/imgbuilder-local}"
REDIS_PORT="${IMGBUILDER_LOCAL_REDIS_PORT:-6379}"
REGISTRY_PORT="${IMGBUILDER_LOCAL_REGISTRY_PORT:-5000}"
S3_PORT="${IMGBUILDER_LOCAL_S3_PORT:-4568}"
DOCKER_SOCK=/var/run/docker.sock
BASE_IMAGE_REPO="imgbuilder/busybox"
BASE_IMAGE="127.0.0.1:$REGISTRY_PORT/$BASE_IMAGE_REPO:latest"

log() { printf 'local-stack: %s\n' "$*" >&2; }
die() {
  printf 'local-stack: ERROR: %s\n' "$*" >&2
  exit 1
}

# pid_alive PID -> true if the process exists and is not a zombie (PID 1 here reaps lazily, so an
# exited daemon can linger as a zombie for a few seconds).
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local stat
  stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
  stat=${stat##*) }
  [[ "${stat:0:1}" != Z ]]
}

# pid_cmdline PID -> the process' command line with spaces (empty if gone)
pid_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true; }

# ours_pid NAME PATTERN -> prints the pid from $STATE/NAME.pid if that process is alive and
# its command line contains PATTERN (guards against pid reuse). Returns 1 otherwise.
ours_pid() {
  local name=$1 pattern=$2 pid
  [[ -f "$STATE/$name.pid" ]] || return 1
  pid=$(<"$STATE/$name.pid")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  pid_alive "$pid" || return 1
  [[ "$(pid_cmdline "$pid")" == *"$pattern"* ]] || return 1
  printf '%s\n' "$pid"
}

# port_listener PORT -> pid of the process listening on TCP PORT (empty if none / unknown)
port_listener() {
  ss -Hltnp "sport = :$1" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true
}

port_in_use() { [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]]; }

# log_tail FILE -> last lines of a log, indented, for error messages
log_tail() {
  if [[ -f "$1" ]]; then tail -n 15 "$1" | sed 's/^/    | /' >&2; fi
  return 0
}

# stop_pid NAME PID TIMEOUT_SECONDS: SIGTERM, wait (bounded), then SIGKILL.
stop_pid() {
  local name=$1 pid=$2 timeout=$3 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "$name (pid $pid) did not exit within ${timeout}s after SIGTERM; sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 50; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  die "$name (pid $pid) is still alive after SIGKILL"
}
