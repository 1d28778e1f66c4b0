#!/usr/bin/env bash
# The quick start: starts the local stack, one API and one worker on local defaults, serves an example git
# repository over git://, builds it through the Build rpc, prints the status stream and the image ref, and stops.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash infra/local/up.sh)"
work=$(mktemp -d /tmp/imgbuilder-example-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

export NODE_ENV=${NODE_ENV:-development}
export IMGBUILDER_GRPC_ADDR=${IMGBUILDER_GRPC_ADDR:-127.0.0.1:8080}
# Loopback only: the API refuses development's fixed key on a listener other machines reach.
export IMGBUILDER_METRICS_ADDR=${IMGBUILDER_METRICS_ADDR:-127.0.0.1:9090}
export IMGBUILDER_SERVER=$IMGBUILDER_GRPC_ADDR
# The example repository is served on loopback, which the fetch policy refuses unless re-allowed.
export IMGBUILDER_FETCH_ALLOW=${IMGBUILDER_FETCH_ALLOW:-127.0.0.1:9418}

mkdir -p "$work/repos/example"
cat > "$work/repos/example/Dockerfile" <<DOCKERFILE
FROM $IMGBUILDER_TEST_BASE_IMAGE
RUN echo "hello from imgbuilder's example build" && echo built-at-$(date +%s) > /built
DOCKERFILE
git -C "$work/repos/example" init -q -b main
git -C "$work/repos/example" add -A
git -C "$work/repos/example" -c user.email=example@localhost -c user.name=example commit -qm example
git daemon --reuseaddr --base-path="$work/repos" --export-all --listen=127.0.0.1 --port=9418 "$work/repos" >"$work/git.log" 2>&1 &
pids+=($!)

node --import tsx apps/api/src/main.ts >"$work/api.log" 2>&1 &
pids+=($!)
node --import tsx apps/worker/src/main.ts >"$work/worker.log" 2>&1 &
pids+=($!)
echo "API and worker starting (logs in $work)" >&2

# Wait (bounded) until the API answers, then build through the CLI: status line, live log, then the image ref.
for _ in $(seq 1 60); do node bin/imgbuilder.mjs ls >/dev/null 2>&1 && break; sleep 0.5; done
node bin/imgbuilder.mjs build --force --git git://127.0.0.1:9418/example
