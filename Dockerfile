# syntax=docker/dockerfile:1
# The imgbuilder service image: `docker run IMAGE api`, `… worker`, `… cli --help`.
# A build stage compiles the services and the CLI (`npm run build`, apps/*/dist/main.js); the image runs those
# with production dependencies only (tsx and the compilers are development dependencies).
# Build: docker build -t imgbuilder .
# The code also runs on Node 20.19+ (package.json "engines"); the image uses a supported LTS.

ARG NODE_IMAGE=node:24-bookworm-slim

# The workspace manifests alone, so the dependency layers below are rebuilt when dependencies change, not when code
# does. Every workspace's package.json must be here, or npm ci does not link it into node_modules.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/common/package.json packages/common/
COPY packages/proto/package.json packages/proto/
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
COPY apps/cli/package.json apps/cli/

# Production dependencies only: what the image ships.
FROM manifests AS deps
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# All dependencies (esbuild), then the sources, compiled into apps/{api,worker,cli}/dist/main.js.
FROM manifests AS build
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build

# The worker's Docker engine (Kubernetes sidecar, compose's `docker`): docker:dind plus Node and the limits agent,
# which engine-start.sh runs next to dockerd when IMGBUILDER_LIMITS_AGENT names its socket. Build with --target engine.
FROM docker:27-dind AS engine
RUN apk add --no-cache nodejs
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY apps/worker/package.json apps/worker/
COPY --from=build /app/apps/worker/dist/ apps/worker/dist/
COPY infra/engine/ /etc/imgbuilder/engine/
ENTRYPOINT ["/bin/sh", "/etc/imgbuilder/engine/engine-start.sh"]
CMD ["dockerd-entrypoint.sh", "dockerd"]

FROM ${NODE_IMAGE} AS runtime
# git: workers clone build sources. tini: PID 1 that forwards signals and reaps git's child processes.
# busybox-static: /bin/busybox, from which the worker makes its egress probe image (a RUN step's view of the network).
# No iptables: the egress policy is installed where the engine runs (infra/engine/egress-policy.sh), not here.
RUN apt-get update \
  && apt-get install -y --no-install-recommends git ca-certificates tini busybox-static \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=deps /app/node_modules ./node_modules
# What runs: the bundles, the manifests that make them ES modules, the dashboard's static files (read beside the
# API's bundle), the CLI's launcher and the entry point. No TypeScript sources.
COPY package.json ./
COPY bin/ bin/
COPY infra/docker/ infra/docker/
COPY apps/api/package.json apps/api/
COPY apps/api/dashboard/ apps/api/dashboard/
COPY apps/worker/package.json apps/worker/
COPY apps/cli/package.json apps/cli/
COPY --from=build /app/apps/api/dist/ apps/api/dist/
COPY --from=build /app/apps/worker/dist/ apps/worker/dist/
COPY --from=build /app/apps/cli/dist/ apps/cli/dist/
USER node
# gRPC, API metrics/health, worker metrics/health.
EXPOSE 8080 9090 9091
ENTRYPOINT ["/usr/bin/tini", "--", "/app/infra/docker/entrypoint.sh"]
CMD ["api"]
