# syntax=docker/dockerfile:1
#
# A container image of one cicada test binary: a master, a worker or a single process, chosen by its flags.
#
#   docker build -t cicada-quickstart .                                   # examples/quickstart.rs (the default)
#   docker build --build-arg EXAMPLE=login_flow -t cicada-login-flow .    # another example
#   docker build --build-arg BIN=my-load-test -t my-load-test .           # your test crate's binary (see below)
#   docker build --build-arg WEB_UI=0 -t cicada-quickstart .              # no Node.js: the UI page says how to build it
#
# Your own test: a binary crate that depends on cicada, built from a context that holds its workspace: put the
# crate in this workspace (under crates/) or copy this file to your own repository's root, then build with
# `--build-arg BIN=<binary>` (and `--build-arg PACKAGE=<package>` when the package has another name). Nothing here
# depends on this repository's layout but the default EXAMPLE.
#
# Stages: `chef` is the toolchain (Rust 1.95 and cargo-chef, Node.js for the web UI), `planner` reduces the sources
# to a recipe of the manifests, `builder` builds the dependencies from the recipe alone (a layer that stays cached
# until a Cargo.toml or Cargo.lock changes) and then the binary from the sources, and the last stage is the small
# runtime image: Debian slim (the same Debian as the builder, so the same glibc), the binary, a non-root user, and
# the reports volume. docs/distributed.md ("Docker") has a worked example.

ARG RUST_IMAGE=rust:1.95-slim-trixie
ARG RUNTIME_IMAGE=debian:trixie-slim

FROM ${RUST_IMAGE} AS chef
# Node.js and npm build the web UI's bundle (crates/cicada/build.rs runs `npm ci` and `npm run build` in web/).
# Debian's versions are used, as of the pinned base image, so no version is pinned here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends nodejs npm \
    && rm -rf /var/lib/apt/lists/*
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /build

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
ARG EXAMPLE=quickstart
ARG PACKAGE=
ARG BIN=
ARG WEB_UI=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The dependencies, from the recipe only: this layer is rebuilt only when the manifests or the lock file change.
# (cargo-chef builds every example's dependencies, dev-dependencies included, as an example build uses them.)
COPY --from=planner /build/recipe.json recipe.json
RUN if [ -n "$BIN" ]; then target=(--bin "$BIN"); [ -n "$PACKAGE" ] && target=(-p "$PACKAGE" "${target[@]}"); \
    else target=(-p cicada --examples); fi; \
    cargo chef cook --release --locked --recipe-path recipe.json "${target[@]}"
# The test binary, from the sources.
COPY . .
RUN if [ "$WEB_UI" = 0 ]; then export CICADA_SKIP_WEB_BUILD=1; fi; \
    if [ -n "$BIN" ]; then \
        cargo build --release --locked ${PACKAGE:+-p "$PACKAGE"} --bin "$BIN" \
        && built="target/release/$BIN"; \
    else \
        cargo build --release --locked -p cicada --example "$EXAMPLE" \
        && built="target/release/examples/$EXAMPLE"; \
    fi; \
    install -m 0755 "$built" /cicada-test

FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="cicada load test" \
      org.opencontainers.image.description="A cicada load test binary: --master, --worker, or a single process" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
# A user without a shell or a home outside the reports folder; numeric, so that Kubernetes' runAsNonRoot can check it.
RUN groupadd --system --gid 10001 cicada \
    && useradd --system --uid 10001 --gid 10001 --home-dir /reports --no-create-home --shell /usr/sbin/nologin cicada \
    && mkdir /reports \
    && chown 10001:10001 /reports
COPY --from=builder /cicada-test /usr/local/bin/cicada-test
# Reports written with relative names (--html report.html, --csv run, --report-json run.json) land in /reports.
WORKDIR /reports
VOLUME ["/reports"]
# The web UI listens on every address of the container, so that a published port reaches it. Publish it on the
# host's loopback (docker run -p 127.0.0.1:8089:8089) or give it --web-login: see docs/web-ui.md, Security. The
# cluster port is not opened beyond loopback here: --master-bind-host 0.0.0.0 needs a cluster token.
ENV CICADA_WEB_HOST=0.0.0.0
# 8089: the web UI (--web-port). 5557: the master's cluster port (--master-bind-port), with the gRPC health service.
EXPOSE 8089 5557
# SIGTERM stops a run like the first Ctrl-C: users get --stop-timeout, the reports are written, then the process
# exits with the run's own code. Give `docker stop -t` (or Kubernetes' terminationGracePeriodSeconds) that long.
STOPSIGNAL SIGTERM
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/cicada-test"]
CMD ["--help"]
