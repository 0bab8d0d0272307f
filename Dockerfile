# syntax=docker/dockerfile:1
# The opa-sync container image: the compiled program with its production dependencies, the example
# policies, and the opa binary that validates bundles (--opa-bin=/usr/local/bin/opa).
#
#   docker build -t opa-sync:0.1.0 .
#
# The final stage is Debian slim on purpose, not distroless: the opa-kube-mgmt Helm chart's init
# container runs /bin/sh, tr, dd and cat from the kube-mgmt image (it writes OPA's token and authz
# policy with them), so an image that replaces kube-mgmt's must have them. The arguments of kube-mgmt's
# container are passed to opa-sync unchanged: they replace CMD, never ENTRYPOINT.

ARG NODE_IMAGE=node:24-bookworm-slim
ARG GO_IMAGE=golang:1.26-bookworm
# The version the tests run against (OPA_VERSION in scripts/tools.ts); OPA v1.22.3 needs Go 1.26.
ARG OPA_VERSION=v1.22.3

# --- build: compile TypeScript, then keep only the production dependencies -------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts/bundle.mjs ./scripts/bundle.mjs
COPY src ./src
# Type-checks, then bundles src/ and its dependencies into dist/ (scripts/bundle.mjs).
RUN npm run build && npm prune --omit=dev --no-audit --no-fund

# --- opa: built from the Go module proxy, as scripts/tools.ts builds the test tools --------------------
FROM ${GO_IMAGE} AS opa
ARG OPA_VERSION
RUN CGO_ENABLED=0 GOBIN=/out go install -trimpath -ldflags='-s -w' \
      "github.com/open-policy-agent/opa@${OPA_VERSION}" \
    && /out/opa version

# --- runtime ------------------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
LABEL org.opencontainers.image.title="opa-sync" \
      org.opencontainers.image.description="Loads Rego policies and Kubernetes data into OPA (a kube-mgmt stand-in) and serves them as OPA bundles" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
# Everything stays owned by root: the process cannot change its own code or the opa binary.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY policies ./policies
COPY --from=opa /out/opa /usr/local/bin/opa
# A numeric user, so that Kubernetes' runAsNonRoot can verify it without an /etc/passwd entry.
USER 10001:10001
# 8282: --bundle-addr (bundle server); 8000: --health-endpoint (/health, /ready, /metrics).
EXPOSE 8282 8000
ENTRYPOINT ["node", "/app/dist/main.js"]
# Without arguments (`docker run -p 8282:8282 opa-sync:0.1.0`): serve the example policies copied above
# as the bundle `policies`. Any arguments (a Kubernetes container's `args`) replace these.
CMD ["--policies-dir=/app/policies", "--bundle-addr=0.0.0.0:8282", "--health-endpoint=0.0.0.0:8000", "--opa-bin=/usr/local/bin/opa"]
