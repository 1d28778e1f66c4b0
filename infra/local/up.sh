#!/usr/bin/env bash
# Start the imgbuilder local stack (redis, dockerd, registry, s3rver) on loopback and push the
# test base image. Idempotent: services that are already up are left alone.
# stdout: `export VAR=value` lines (also written to $STATE/env); progress goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=infra/local/lib.sh
source "$HERE/lib.sh"
# shellcheck source=infra/local/processes.sh
source "$HERE/processes.sh"
# shellcheck source=infra/local/services.sh
source "$HERE/services.sh"
# shellcheck source=infra/local/build-setup.sh
source "$HERE/build-setup.sh"
# shellcheck source=infra/local/env.sh
source "$HERE/env.sh"

READY_TIMEOUT="${IMGBUILDER_LOCAL_READY_TIMEOUT:-60}"
export DOCKER_HOST="unix://$DOCKER_SOCK"
# Our CLI calls must negotiate with whatever engine answers; a stale pin would break them.
unset DOCKER_API_VERSION DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH

[[ "$(id -u)" == 0 ]] || die "must run as root (installs packages and starts dockerd)"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"

# Serialise concurrent up/down runs. fd 9 must not leak into the daemons (see launch()).
exec 9>"$STATE/.lock"
flock -w 300 9 || die "another up.sh/down.sh holds $STATE/.lock"

# ---------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------
install_packages() {
  local pkgs=(redis-server redis-tools docker.io docker-registry busybox-static git openssl iproute2 iptables curl apache2-utils chromium fonts-dejavu-core)
  local missing=() p
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  ((${#missing[@]})) || return 0

  log "installing ${missing[*]} (apt; log in $STATE/apt.log)"
  # Keep the packages' postinst from starting Debian's own services (packaged redis on 6379,
  # htpasswd-protected registry on 5000, docker/containerd): policy-rc.d exit 101 = "forbidden".
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -q &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
  } >>"$STATE/apt.log" 2>&1 || rc=$?
  ((made_policy)) && rm -f /usr/sbin/policy-rc.d
  if ((rc)); then
    log_tail "$STATE/apt.log"
    die "apt-get failed (exit $rc) installing: ${missing[*]}"
  fi
  stop_packaged_services
}

# If a package's postinst started Debian's own daemon anyway, stop it (by its pid file).
stop_packaged_services() {
  local f pid
  for f in /run/redis/redis-server.pid /run/docker-registry.pid /var/run/docker-registry.pid; do
    [[ -f "$f" ]] || continue
    pid=$(<"$f")
    if [[ "$pid" =~ ^[0-9]+$ ]] && pid_alive "$pid"; then
      log "stopping Debian's packaged service from $f (pid $pid)"
      stop_pid "packaged service" "$pid" 15
    fi
  done
}

# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
install_packages
start_redis
start_registry
start_s3rver
start_dockerd
install_egress_policy
pin_docker_api_version
ensure_base_image
write_env
cat "$STATE/env"
log "ready (state dir $STATE; env in $STATE/env)"
