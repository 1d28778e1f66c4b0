#!/bin/sh
# Starts the worker's Docker engine (docker:dind) with imgbuilder's egress policy for build steps: the k8s engine
# sidecar (worker.yaml) and compose's `docker` service run it. The engine counts as started only once the policy is
# installed: the marker file appears after that, and the startup probe / healthcheck require it, so no worker ever
# builds on an engine whose build steps could reach the pod, the node or private networks.
#
# Usage: engine-start.sh ENGINE_COMMAND...      e.g. engine-start.sh dockerd-entrypoint.sh dockerd --host=…
# The policy script is egress-policy.sh next to this file (both live in infra/engine, which the k8s base includes);
# it reads IMGBUILDER_BUILD_EGRESS_ALLOW, _DENY and _DNS. If dockerd or the policy fails, this exits
# non-zero and the engine stops with it: the container restarts rather than build without the rules.
set -eu

HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
POLICY="${IMGBUILDER_ENGINE_POLICY:-$HERE/egress-policy.sh}"
MARKER="${IMGBUILDER_ENGINE_READY_MARKER:-/run/imgbuilder-engine-ready}"
TIMEOUT="${IMGBUILDER_ENGINE_START_TIMEOUT:-120}"
BRIDGE="${IMGBUILDER_BUILD_BRIDGE:-docker0}"

say() { printf 'engine-start: %s\n' "$*" >&2; }

[ "$#" -gt 0 ] || { say "usage: engine-start.sh ENGINE_COMMAND..."; exit 64; }
[ -r "$POLICY" ] || { say "egress policy script $POLICY not found"; exit 1; }

# dockerd's BuildKit clips a step's output (on 20.10: past 2 MiB, or faster than 200 KiB/s; -1 does not lift it).
# Raised to 1 GiB, so only the worker's IMGBUILDER_LOG_MAX_BYTES cuts a build's log.
export BUILDKIT_STEP_LOG_MAX_SIZE="${BUILDKIT_STEP_LOG_MAX_SIZE:-1073741824}"
export BUILDKIT_STEP_LOG_MAX_SPEED="${BUILDKIT_STEP_LOG_MAX_SPEED:-1073741824}"

# A restarted container (compose keeps its file system) must not look ready before the rules are back.
rm -f "$MARKER"
"$@" &
engine=$!
# As PID 1 this shell ignores signals it does not trap: hand SIGTERM/SIGINT to the engine and exit with it.
trap 'kill -TERM "$engine" 2>/dev/null || true' TERM INT

fail() {
  say "$1"
  kill -TERM "$engine" 2>/dev/null || true
  wait "$engine" 2>/dev/null || true
  exit 1
}

# dockerd creates the bridge and its DOCKER-USER chain before its API answers.
deadline=$(($(date +%s) + TIMEOUT))
until docker version >/dev/null 2>&1 && ip link show "$BRIDGE" >/dev/null 2>&1; do
  if ! kill -0 "$engine" 2>/dev/null; then
    rc=0
    wait "$engine" || rc=$?
    say "the engine exited (status $rc) before it answered"
    exit $((rc == 0 ? 1 : rc))
  fi
  [ "$(date +%s)" -lt "$deadline" ] || fail "the engine did not answer within ${TIMEOUT}s"
  sleep 1
done

# dockerd-entrypoint.sh picks iptables-legacy or nf_tables by what the kernel offers; the policy must go into the
# same variant as the engine's own rules: the one holding its DOCKER-USER chain.
LEGACY=/usr/local/sbin/.iptables-legacy
if [ -x "$LEGACY/iptables" ] && "$LEGACY/iptables" -w -n -L DOCKER-USER >/dev/null 2>&1; then
  PATH="$LEGACY:$PATH"
  export PATH
fi

IMGBUILDER_BUILD_BRIDGE="$BRIDGE" sh "$POLICY" "$BRIDGE" || fail "installing the egress policy on $BRIDGE failed: stopping the engine"

# The limits agent (apps/worker/dist/limits-agent.js under IMGBUILDER_APP_DIR, /app in the `engine` image target)
# does the worker's cgroup work in this container's namespaces. Without it the worker cannot enforce the build
# limits: it ending stops the engine.
if [ -n "${IMGBUILDER_LIMITS_AGENT:-}" ]; then
  rm -f "$IMGBUILDER_LIMITS_AGENT"
  (node "${IMGBUILDER_APP_DIR:-/app}/apps/worker/dist/limits-agent.js" || true; say "the limits agent exited: stopping the engine"; kill -TERM "$engine" 2>/dev/null) &
  until [ -S "$IMGBUILDER_LIMITS_AGENT" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "the limits agent did not listen on $IMGBUILDER_LIMITS_AGENT within ${TIMEOUT}s"
    sleep 1
  done
fi
mkdir -p "$(dirname "$MARKER")"
: >"$MARKER"
say "engine up; build steps on $BRIDGE reach the public internet only"

# `wait` returns early when a trapped signal arrives: keep waiting until the engine itself has exited.
while :; do
  rc=0
  wait "$engine" || rc=$?
  kill -0 "$engine" 2>/dev/null || exit "$rc"
done
