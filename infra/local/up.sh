#!/usr/bin/env bash
# Start the imgbuilder local stack (redis, dockerd, registry, s3rver) on loopback and push the
# test base image. Idempotent: services that are already up are left alone.
# stdout: `export VAR=value` lines (also written to $STATE/env); progress goes to stderr.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=infra/local/lib.sh
source "$HERE/lib.sh"

READY_TIMEOUT="${IMGBUILDER_LOCAL_READY_TIMEOUT:-60}"
BASE_IMAGE_REPO="imgbuilder/busybox"
BASE_IMAGE="127.0.0.1:$REGISTRY_PORT/$BASE_IMAGE_REPO:latest"
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
# Process helpers
# ---------------------------------------------------------------------------------------------

# launch NAME LOGFILE CMD... : start CMD in its own session (so it survives this script and its
# process group), stdin from /dev/null, stdout+stderr appended to LOGFILE; pid -> $STATE/NAME.pid.
launch() {
  local name=$1 logfile=$2
  shift 2
  printf '\n=== %s starting %s: %s\n' "$(date -Is)" "$name" "$*" >>"$logfile"
  setsid "$@" </dev/null >>"$logfile" 2>&1 9>&- &
  printf '%s\n' "$!" >"$STATE/$name.pid"
}

# wait_ready NAME PIDFILE_NAME LOGFILE CHECK_CMD... : poll CHECK_CMD until it succeeds, bounded by
# READY_TIMEOUT; fail early (with the log tail) if the launched process exits.
wait_ready() {
  local name=$1 pidname=$2 logfile=$3 pid="" deadline
  shift 3
  [[ -n "$pidname" && -f "$STATE/$pidname.pid" ]] && pid=$(<"$STATE/$pidname.pid")
  deadline=$((SECONDS + READY_TIMEOUT))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      log_tail "$logfile"
      log "$name exited during startup (log: $logfile)"
      return 2
    fi
    sleep 0.2
  done
  log_tail "$logfile"
  log "$name not ready after ${READY_TIMEOUT}s (log: $logfile)"
  return 1
}

# ensure_port_free NAME PORT: die with a clear message if someone else listens on PORT.
ensure_port_free() {
  local name=$1 port=$2 pid
  port_in_use "$port" || return 0
  pid=$(port_listener "$port")
  die "$name: port 127.0.0.1:$port is already used by another process${pid:+ (pid $pid: $(pid_cmdline "$pid"))}, not started by this script with state dir $STATE; stop it or choose another port (IMGBUILDER_LOCAL_*_PORT)"
}

# ---------------------------------------------------------------------------------------------
# redis
# ---------------------------------------------------------------------------------------------
# The local Redis requires a password (generated once, kept in the state dir, mode 600): build steps and other local
# users must not be able to read or forge build state. Clients get it through REDIS_URL.
redis_password() {
  if [[ ! -s "$STATE/redis.password" ]]; then
    (umask 077 && openssl rand -hex 24 >"$STATE/redis.password")
  fi
  cat "$STATE/redis.password"
}
redis_ready() { [[ "$(REDISCLI_AUTH="$(redis_password)" timeout 5 redis-cli --no-auth-warning -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

write_redis_config() {
  # The password goes into a file only root reads, never onto a command line (ps shows those).
  (umask 077 && cat >"$STATE/redis.conf" <<REDISCONF
# Written by infra/local/up.sh.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize no
supervised no
logfile ""
dir $STATE/redis
appendonly yes
appendfsync everysec
maxmemory-policy noeviction
requirepass $(redis_password)
REDISCONF
  )
}

start_redis() {
  if ours_pid redis redis-server >/dev/null; then
    # A Redis started by an older up.sh without a password: give it one now (no restart, no lost state).
    if [[ "$(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; then
      log "redis (started earlier) has no password: setting one"
      timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" CONFIG SET requirepass "$(redis_password)" >/dev/null
    fi
    wait_ready redis redis "$STATE/redis.log" redis_ready || die "redis (started earlier) is not answering"
    return 0
  fi
  ensure_port_free redis "$REDIS_PORT"
  mkdir -p "$STATE/redis"
  write_redis_config
  log "starting redis on 127.0.0.1:$REDIS_PORT (password in $STATE/redis.password)"
  launch redis "$STATE/redis.log" redis-server "$STATE/redis.conf"
  wait_ready redis redis "$STATE/redis.log" redis_ready || die "redis failed to start"
}

# ---------------------------------------------------------------------------------------------
# dockerd
# ---------------------------------------------------------------------------------------------
docker_ready() { timeout 10 docker info >/dev/null 2>&1; }

start_dockerd() {
  if docker_ready; then return 0; fi
  if ours_pid dockerd dockerd >/dev/null; then
    wait_ready dockerd dockerd "$STATE/dockerd.log" docker_ready || die "dockerd (started earlier) is not answering on $DOCKER_SOCK"
    return 0
  fi
  command -v dockerd >/dev/null || die "dockerd not found (package docker.io)"
  local driver rc
  for driver in overlay2 vfs; do
    log "starting dockerd (storage driver $driver; log $STATE/dockerd.log)"
    # BuildKit clips a step's log far below IMGBUILDER_LOG_MAX_BYTES unless both limits are raised (-1 does not mean
    # unlimited on engine 20.10); the worker applies the one cap itself.
    launch dockerd "$STATE/dockerd.log" env BUILDKIT_STEP_LOG_MAX_SIZE=1073741824 BUILDKIT_STEP_LOG_MAX_SPEED=1073741824 \
      dockerd --host "unix://$DOCKER_SOCK" --storage-driver "$driver"
    rc=0
    wait_ready dockerd dockerd "$STATE/dockerd.log" docker_ready || rc=$?
    if ((rc == 0)); then
      printf '%s\n' "$driver" >"$STATE/dockerd.driver"
      return 0
    fi
    if ((rc == 2)) && [[ "$driver" == overlay2 ]]; then
      log "dockerd failed with overlay2; retrying with vfs"
      continue
    fi
    break
  done
  # Still ours and alive but not answering: do not leave a half-started daemon behind.
  local pid
  if pid=$(ours_pid dockerd dockerd); then stop_pid dockerd "$pid" 30; fi
  rm -f "$STATE/dockerd.pid"
  die "dockerd did not answer 'docker info' on $DOCKER_SOCK within ${READY_TIMEOUT}s (log: $STATE/dockerd.log)"
}

# Pin the CLI to the engine's API version (CLI 28.x in /usr/local/bin vs Debian engine 20.10).
pin_docker_api_version() {
  local v
  v=$(curl -fsS --max-time 10 --unix-socket "$DOCKER_SOCK" http://localhost/version |
    sed -n 's/.*"ApiVersion":"\([0-9.]*\)".*/\1/p') || true
  [[ -n "$v" ]] && export DOCKER_API_VERSION="$v"
  return 0
}

# ---------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------
registry_ready() { curl -fsS --max-time 5 -o /dev/null "http://127.0.0.1:$REGISTRY_PORT/v2/"; }

write_registry_config() {
  [[ -s "$STATE/registry.secret" ]] || openssl rand -hex 32 >"$STATE/registry.secret"
  local tmp="$STATE/registry.yml.tmp"
  cat >"$tmp" <<EOF
# Written by infra/local/up.sh. No auth; loopback only; access log on (stdout -> registry.log).
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$REGISTRY_PORT
  secret: $(<"$STATE/registry.secret")
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  if cmp -s "$tmp" "$STATE/registry.yml"; then rm -f "$tmp"; else mv -f "$tmp" "$STATE/registry.yml"; fi
}

start_registry() {
  if ours_pid registry docker-registry >/dev/null; then
    wait_ready registry registry "$STATE/registry.log" registry_ready || die "registry (started earlier) is not answering"
    return 0
  fi
  ensure_port_free registry "$REGISTRY_PORT"
  mkdir -p "$STATE/registry"
  write_registry_config
  log "starting registry on 127.0.0.1:$REGISTRY_PORT"
  # REGISTRY_* variables would override the config file (e.g. turn auth back on): drop them.
  local unset_args=() v
  for v in $(compgen -e | grep '^REGISTRY_' || true); do unset_args+=(-u "$v"); done
  launch registry "$STATE/registry.log" env "${unset_args[@]}" /usr/bin/docker-registry serve "$STATE/registry.yml"
  wait_ready registry registry "$STATE/registry.log" registry_ready || die "registry failed to start"
}

# ---------------------------------------------------------------------------------------------
# s3rver
# ---------------------------------------------------------------------------------------------
s3_ready() {
  local code
  code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$S3_PORT/") || return 1
  [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}

start_s3rver() {
  if ours_pid s3rver s3rver.mjs >/dev/null; then
    wait_ready s3rver s3rver "$STATE/s3rver.log" s3_ready || die "s3rver (started earlier) is not answering"
    return 0
  fi
  ensure_port_free s3rver "$S3_PORT"
  command -v node >/dev/null || die "node not found"
  [[ -f "$REPO_ROOT/node_modules/s3rver/package.json" ]] || die "s3rver not installed in $REPO_ROOT/node_modules (run npm install)"
  mkdir -p "$STATE/s3"
  log "starting s3rver on 127.0.0.1:$S3_PORT"
  launch s3rver "$STATE/s3rver.log" node "$HERE/s3rver.mjs" \
    --address 127.0.0.1 --port "$S3_PORT" --directory "$STATE/s3"
  wait_ready s3rver s3rver "$STATE/s3rver.log" s3_ready || die "s3rver failed to start"
}

# ---------------------------------------------------------------------------------------------
# test base image: FROM scratch + static busybox, pushed to the local registry
# ---------------------------------------------------------------------------------------------
registry_has_base_image() {
  curl -fs --max-time 10 -o /dev/null -I \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    "http://127.0.0.1:$REGISTRY_PORT/v2/$BASE_IMAGE_REPO/manifests/latest"
}

ensure_base_image() {
  registry_has_base_image && return 0
  local blog="$STATE/base-image.log"
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "building $BASE_IMAGE"
    [[ -x /bin/busybox ]] || die "/bin/busybox missing (package busybox-static)"
    local ctx="$STATE/base-image"
    rm -rf "$ctx"
    mkdir -p "$ctx"
    cp /bin/busybox "$ctx/busybox"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
CMD ["/bin/sh"]
EOF
    DOCKER_BUILDKIT=0 docker build --network none -t "$BASE_IMAGE" "$ctx" >"$blog" 2>&1 ||
      {
        log_tail "$blog"
        die "building $BASE_IMAGE failed (log: $blog)"
      }
  fi
  log "pushing $BASE_IMAGE"
  docker push "$BASE_IMAGE" >>"$blog" 2>&1 || {
    log_tail "$blog"
    die "pushing $BASE_IMAGE failed (log: $blog)"
  }
  registry_has_base_image || die "registry does not list $BASE_IMAGE after push"
}

# ---------------------------------------------------------------------------------------------
# egress policy for build steps (infra/engine/egress-policy.sh; IMGBUILDER_BUILD_EGRESS_ALLOW opens exceptions)
# ---------------------------------------------------------------------------------------------
install_egress_policy() {
  command -v iptables >/dev/null || die "iptables not found (package iptables)"
  sh "$REPO_ROOT/infra/engine/egress-policy.sh" docker0 2>>"$STATE/egress.log" || {
    log_tail "$STATE/egress.log"
    die "installing the egress policy for build steps failed (log: $STATE/egress.log)"
  }
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

env_tmp="$STATE/env.tmp"
cat >"$env_tmp" <<EOF
export REDIS_URL=redis://:$(redis_password)@127.0.0.1:$REDIS_PORT
export DOCKER_HOST=unix://$DOCKER_SOCK
export IMGBUILDER_BASE_REPOSITORY=127.0.0.1:$REGISTRY_PORT/imgbuilder/base
export IMGBUILDER_WORKSPACE_REPOSITORY=127.0.0.1:$REGISTRY_PORT/imgbuilder/workspace
export IMGBUILDER_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export IMGBUILDER_S3_BUCKET=imgbuilder-logs
export IMGBUILDER_S3_REGION=us-east-1
export AWS_ACCESS_KEY_ID=S3RVER
export AWS_SECRET_ACCESS_KEY=S3RVER
export IMGBUILDER_LOCAL_REGISTRY_LOG=$STATE/registry.log
export IMGBUILDER_TEST_BASE_IMAGE=$BASE_IMAGE
EOF
(umask 077 && printf 'redis://:%s@127.0.0.1:%s\n' "$(redis_password)" "$REDIS_PORT" >"$STATE/redis-url")
chmod 600 "$env_tmp"
mv -f "$env_tmp" "$STATE/env"
cat "$STATE/env"
log "ready (state dir $STATE; env in $STATE/env)"
