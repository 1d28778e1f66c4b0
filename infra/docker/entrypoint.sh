#!/bin/sh
# Entry point of the service image: `docker run IMAGE api | worker | cli [args…]`; anything else runs as a command.
# `exec` hands the process over, so the service itself receives SIGTERM (tini, in front, reaps git's children).
set -eu

APP_DIR="${IMGBUILDER_APP_DIR:-$(CDPATH= cd -- "$(dirname -- "$0")/../.." && pwd)}"
cd "$APP_DIR"

usage() {
  echo "usage: IMAGE api | worker | cli [args…] | limits-agent | COMMAND [args…]" >&2
}

if [ "$#" -eq 0 ]; then
  usage
  exit 64
fi

target="$1"
shift
case "$target" in
  # The compiled bundles of `npm run build` (scripts/build.mjs); source maps point stack traces at the TypeScript.
  api) exec node --enable-source-maps apps/api/dist/main.js "$@" ;;
  worker) exec node --enable-source-maps apps/worker/dist/main.js "$@" ;;
  cli) exec node --enable-source-maps apps/cli/dist/main.js "$@" ;;
  limits-agent) exec node --enable-source-maps apps/worker/dist/limits-agent.js "$@" ;;
  -h | --help | help)
    usage
    exit 0
    ;;
  *) exec "$target" "$@" ;;
esac
