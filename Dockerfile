# syntax=docker/dockerfile:1
# rollbackd's container image: `docker build -t rollbackd:0.1.0 .`
#
# The builder compiles the locked dependency set with the pinned toolchain, without the default
# `sandbox` feature (the simulated API server and the demo are for tests); the runtime is
# distroless (no shell, no package manager) and runs as the non-root user 65532. TLS roots are
# compiled in (webpki-roots), so the image needs no CA bundle of its own.
#
# Config: /etc/rollbackd/rollbackd.toml (mounted from the ConfigMap in deploy/kubernetes).
# Port:   9095 (webhook, API, pages, /metrics, /healthz, /readyz).
# Store:  /var/lib/rollbackd (a volume; SQLite needs a writable /tmp too, an emptyDir in the pod).

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# Everything cargo reads to build the binary: the workspace manifest names its member crates
# (the simulator and the demo's scenario, not built here but read), the root manifest names
# every bench, and the store's migrations are compiled in. The registry and target caches
# persist between builds, so a source change does not download or rebuild the dependencies.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
COPY benches ./benches
COPY migrations ./migrations
# The page templates are compiled into the binary (askama).
COPY templates ./templates
COPY rules ./rules
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p rollbackd --no-default-features \
    && install -D -m 0755 target/release/rollbackd /out/rollbackd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/rollbackd /usr/local/bin/rollbackd
COPY rules /etc/rollbackd/rules
USER 65532:65532
EXPOSE 9095
WORKDIR /var/lib/rollbackd
ENTRYPOINT ["/usr/local/bin/rollbackd"]
CMD ["serve", "--config", "/etc/rollbackd/rollbackd.toml", "--log-format", "json"]
