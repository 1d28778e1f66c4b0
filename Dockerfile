# syntax=docker/dockerfile:1
# The imgbuilder service image: `docker run IMAGE api`, `… worker`, `… cli --help`.
# The services run TypeScript through tsx at run time (no build step), so tsx is a production dependency.
# Build: docker build -t imgbuilder .

ARG NODE_IMAGE=node:20-bookworm-slim

# Dependencies first, from the manifests only, so this layer is rebuilt when dependencies change, not when code
# does. Every workspace's package.json must be here, or npm ci does not link it into node_modules.
# Production dependencies only: tsx is one, because the services run through it.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY packages/common/package.json packages/common/
COPY packages/proto/package.json packages/proto/
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
COPY apps/cli/package.json apps/cli/
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

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
# .dockerignore lets through only what runs: package manifests, apps/, packages/, bin/, cli/, infra/docker/.
COPY . .
USER node
# gRPC, API metrics/health, worker metrics/health.
EXPOSE 8080 9090 9091
ENTRYPOINT ["/usr/bin/tini", "--", "/app/infra/docker/entrypoint.sh"]
CMD ["api"]
