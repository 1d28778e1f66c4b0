# shellcheck shell=bash
# What builds need besides the daemons: the test base image and the egress policy (sourced by up.sh).

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
