#!/usr/bin/env bash
# A 3-node Redis Cluster on loopback, to run imgbuilder (and its tests) against Redis Cluster.
#   up    start the nodes on free ports and form the cluster (3 masters, no replicas); prints
#         `export REDIS_URL=redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3` (also written to $DIR/env).
#         Idempotent: a running cluster in $DIR is reused.
#   down  stop the nodes this script started (by their pid files) and delete $DIR.
# $IMGBUILDER_CLUSTER_DIR sets the state dir (default /tmp/imgbuilder-cluster): give each cluster its own.
set -euo pipefail

DIR="${IMGBUILDER_CLUSTER_DIR:-/tmp/imgbuilder-cluster}"
NODES=3
TIMEOUT="${IMGBUILDER_CLUSTER_READY_TIMEOUT:-30}"

log() { printf 'redis-cluster: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port whose cluster bus port (+10000) is free too.
free_port() {
  local p tries
  for ((tries = 0; tries < 200; tries++)); do
    p=$((20000 + RANDOM % 10000))
    port_in_use "$p" || port_in_use $((p + 10000)) || {
      echo "$p"
      return 0
    }
  done
  die "no free port found"
}

node_pid() {
  local f="$1/redis.pid" pid
  [[ -f "$f" ]] || return 1
  pid=$(<"$f")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && grep -q redis-server "/proc/$pid/cmdline" 2>/dev/null && echo "$pid"
}

wait_for() {
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${TIMEOUT}s"
    sleep 0.1
  done
}

cluster_ok() { redis-cli -p "$1" cluster info | grep -q '^cluster_state:ok'; }

up() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || die "redis-server and redis-cli are needed (apt-get install redis-server redis-tools)"
  if [[ -f "$DIR/env" ]]; then
    local alive=0 d
    for d in "$DIR"/node-*; do node_pid "$d" >/dev/null && alive=$((alive + 1)); done
    if ((alive == NODES)); then
      cat "$DIR/env"
      return 0
    fi
    log "stale state in $DIR; starting afresh"
    down
  fi
  mkdir -p "$DIR"
  local ports=() p i d
  for ((i = 0; i < NODES; i++)); do
    p=$(free_port)
    d="$DIR/node-$p"
    mkdir -p "$d"
    # Persistence as recommended for production (append-only file, no eviction): BullMQ needs its keys kept.
    redis-server --port "$p" --bind 127.0.0.1 --protected-mode no --dir "$d" \
      --cluster-enabled yes --cluster-config-file "$d/nodes.conf" --cluster-node-timeout 5000 \
      --appendonly yes --save '' --maxmemory-policy noeviction \
      --daemonize yes --pidfile "$d/redis.pid" --logfile "$d/redis.log"
    ports+=("$p")
  done
  for p in "${ports[@]}"; do wait_for "node $p" redis-cli -p "$p" ping; done
  local seeds=()
  for p in "${ports[@]}"; do seeds+=("127.0.0.1:$p"); done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes >"$DIR/create.log" 2>&1 || {
    cat "$DIR/create.log" >&2
    die "redis-cli --cluster create failed"
  }
  for p in "${ports[@]}"; do wait_for "cluster state on node $p" cluster_ok "$p"; done
  local url
  url="redis+cluster://$(
    IFS=,
    echo "${seeds[*]}"
  )"
  echo "export REDIS_URL=$url" >"$DIR/env"
  log "cluster of ${NODES} nodes up: $url (state in $DIR)"
  cat "$DIR/env"
}

down() {
  [[ -d "$DIR" ]] || return 0
  local d pid deadline pids=()
  # All nodes at once: each takes a second or two to shut down.
  for d in "$DIR"/node-*; do
    [[ -d "$d" ]] || continue
    pid=$(node_pid "$d") || continue
    kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  done
  deadline=$((SECONDS + 10))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$DIR"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *)
    echo "usage: $0 up|down   (state dir: \${IMGBUILDER_CLUSTER_DIR:-/tmp/imgbuilder-cluster})" >&2
    exit 2
    ;;
esac
