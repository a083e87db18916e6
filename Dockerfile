# syntax=docker/dockerfile:1
# rollbackd's container image: `docker build -t rollbackd:0.1.0 .`
#
# The builder compiles the locked dependency set with the pinned toolchain; the runtime is
# distroless (no shell, no package manager) and runs as the non-root user 65532. TLS roots are
# compiled in (webpki-roots), so the image needs no CA bundle of its own.
#
# Config: /etc/rollbackd/rollbackd.toml (mounted from the ConfigMap in deploy/kubernetes).
# Port:   9095 (webhook, API, pages, /metrics, /healthz, /readyz).
# Store:  /var/lib/rollbackd (a volume; SQLite needs a writable /tmp too, an emptyDir in the pod).

ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && printf 'fn main() {}\n' > benches/rollback.rs \
    && cp benches/rollback.rs benches/backlog.rs \
    && cargo build --release --locked \
    && rm -rf src benches
COPY src ./src
COPY migrations ./migrations
# The page templates are compiled into the binary (askama).
COPY templates ./templates
COPY rules ./rules
COPY benches ./benches
# Touch, so that cargo does not take the stub's build as up to date.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/rollbackd /out/rollbackd

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/rollbackd /usr/local/bin/rollbackd
COPY rules /etc/rollbackd/rules
USER 65532:65532
EXPOSE 9095
WORKDIR /var/lib/rollbackd
ENTRYPOINT ["/usr/local/bin/rollbackd"]
CMD ["serve", "--config", "/etc/rollbackd/rollbackd.toml", "--log-format", "json"]
