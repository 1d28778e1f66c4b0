# shellcheck shell=bash
# One start function per daemon of the local stack: redis, dockerd, the registry, s3rver (sourced by up.sh).

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
