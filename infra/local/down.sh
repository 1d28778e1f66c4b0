#!/usr/bin/env bash
# Stop what infra/local/up.sh started: s3rver, registry, redis, and dockerd only if up.sh started
# it. Idempotent. `--purge` also deletes the state dir (${IMGBUILDER_LOCAL_DIR:-/tmp/imgbuilder-local}).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=infra/local/lib.sh
source "$HERE/lib.sh"

purge=0
for arg in "$@"; do
  case "$arg" in
    --purge) purge=1 ;;
    -h | --help)
      echo "usage: $0 [--purge]"
      exit 0
      ;;
    *) die "unknown argument: $arg (usage: $0 [--purge])" ;;
  esac
done

[[ -d "$STATE" ]] || exit 0
STATE="$(cd "$STATE" && pwd)"

exec 9>"$STATE/.lock"
flock -w 300 9 || die "another up.sh/down.sh holds $STATE/.lock"

# stop NAME PATTERN TIMEOUT
stop() {
  local name=$1 pattern=$2 timeout=$3 pid
  if pid=$(ours_pid "$name" "$pattern"); then
    log "stopping $name (pid $pid)"
    stop_pid "$name" "$pid" "$timeout"
  fi
  rm -f "$STATE/$name.pid"
}

stop s3rver s3rver.mjs 15
stop registry docker-registry 15
stop redis redis-server 30 # SIGTERM = SHUTDOWN: flushes the AOF
# dockerd.pid exists only if up.sh started the daemon; a dockerd started by someone else is left alone.
stop dockerd dockerd 60
rm -f "$STATE/dockerd.driver"

if ((purge)); then
  case "$STATE" in
    / | /tmp | /var | /var/tmp | /root | /home | "$HOME") die "refusing to purge $STATE" ;;
  esac
  log "purging $STATE"
  exec 9>&-
  rm -rf -- "$STATE"
fi
