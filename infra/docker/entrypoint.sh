#!/bin/sh
# Entry point of the service image: `docker run IMAGE api | worker | cli [args…]`; anything else runs as a command.
# `exec` hands the process over, so the service itself receives SIGTERM (tini, in front, reaps git's children).
set -eu

APP_DIR="${IMGBUILDER_APP_DIR:-$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)}"
cd "$APP_DIR"

usage() {
  echo "usage: IMAGE api | worker | cli [args…] | COMMAND [args…]" >&2
}

if [ "$#" -eq 0 ]; then
  usage
  exit 64
fi

target="$1"
shift
case "$target" in
  # The services are TypeScript run through tsx's loader (no build step); see package.json scripts api/worker.
  api) exec node --import tsx apps/api/src/main.ts "$@" ;;
  worker) exec node --import tsx apps/worker/src/main.ts "$@" ;;
  # package.json "bin".
  cli) exec node bin/imgbuilder.mjs "$@" ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  *) exec "$target" "$@" ;;
esac
