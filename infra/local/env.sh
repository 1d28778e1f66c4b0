# shellcheck shell=bash
# The environment the local stack hands to imgbuilder's processes, scripts and tests: $STATE/env (sourced by up.sh;
# needs lib.sh and services.sh).

# The IMGBUILDER_SECRET_KEY of this stack: random, generated once and kept in the state dir (mode 600), so API and
# workers started from the env file agree on one key, and none uses the fixed, public NODE_ENV=development key.
dev_secret_key() {
  if [[ ! -s "$STATE/secret.key" ]]; then
    (umask 077 && openssl rand -base64 32 >"$STATE/secret.key")
  fi
  cat "$STATE/secret.key"
}

# write_env: writes $STATE/env (mode 600: it holds the Redis password and the key) and $STATE/redis-url.
write_env() {
  local tmp="$STATE/env.tmp"
  (umask 077 && cat >"$tmp" <<ENV
export REDIS_URL=redis://:$(redis_password)@127.0.0.1:$REDIS_PORT
export DOCKER_HOST=unix://$DOCKER_SOCK
export IMGBUILDER_SECRET_KEY=$(dev_secret_key)
export IMGBUILDER_BASE_REPOSITORY=127.0.0.1:$REGISTRY_PORT/imgbuilder/base
export IMGBUILDER_WORKSPACE_REPOSITORY=127.0.0.1:$REGISTRY_PORT/imgbuilder/workspace
export IMGBUILDER_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export IMGBUILDER_S3_BUCKET=imgbuilder-logs
export IMGBUILDER_S3_REGION=us-east-1
export AWS_ACCESS_KEY_ID=S3RVER
export AWS_SECRET_ACCESS_KEY=S3RVER
export IMGBUILDER_LOCAL_REGISTRY_LOG=$STATE/registry.log
export IMGBUILDER_TEST_BASE_IMAGE=$BASE_IMAGE
ENV
  )
  (umask 077 && printf 'redis://:%s@127.0.0.1:%s\n' "$(redis_password)" "$REDIS_PORT" >"$STATE/redis-url")
  mv -f "$tmp" "$STATE/env"
}
