# syntax=docker/dockerfile:1
#
# The secret-relay operator image: one static (musl) binary and the CA bundle on an empty
# base, running as a numeric non-root user (65532) as the Helm chart's securityContext expects.
#
#   docker build -t REPOSITORY/secret-relay:0.1.0 .
#   helm install secret-relay charts/secret-relay --set image.repository=REPOSITORY/secret-relay
#
# The project's own machine has no Docker daemon: hack/image/build.sh writes the same image
# from the same inputs (`cargo build --release --locked --bin secret-relay` for musl, stripped;
# the CA bundle; user 65532; this entrypoint and cmd) as an OCI archive, and the node tier of
# hack/test.sh runs it as the chart's Pods. Keep the two in step. Build this file where
# BuildKit is available (the default builder of current Docker; `docker buildx build
# --platform linux/arm64 .` for arm64).

ARG RUST_VERSION=1.95

# --- build: Alpine's Rust targets musl, whose binaries are static by default -----------------
FROM rust:${RUST_VERSION}-alpine AS build
# A C toolchain for aws-lc-sys and ring (rustls' crypto providers; cmake and perl for
# aws-lc-sys' fallback build) and the CA bundle copied into the runtime image (the operator
# verifies TLS with the system roots: AWS, Vault, the API server).
RUN apk add --no-cache build-base cmake perl ca-certificates
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts keep the registry and the target directory between builds; the binary is
# copied out of the (unexported) target mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin secret-relay \
 && cp target/release/secret-relay /secret-relay \
 && strip /secret-relay \
 && /secret-relay --version

# --- runtime: nothing but the binary and the CA bundle (no shell, no package manager) --------
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /secret-relay /usr/local/bin/secret-relay
# Numeric, so that the kubelet can check runAsNonRoot without an /etc/passwd.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/secret-relay"]
CMD ["run"]
