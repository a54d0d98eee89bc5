# syntax=docker/dockerfile:1
# The cancel-operator image: one static (musl) binary, /cancel-operator, in an
# otherwise empty image, run as 65532:65532. Both of the chart's Deployments
# (controller and REST sidecar) run it with their own arguments.
#
#   docker build -t ghcr.io/cancel-dev/cancel-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# `make image` (scripts/image.sh) builds the same image without a container
# daemon, with the same compiler, target, flags, file and configuration; keep
# the two in step.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
# musl-gcc compiles the C parts of the dependencies (ring) for the musl target;
# the version scripts/image.sh gets from Debian 12 too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools=1.2.3-1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The sources sit in /src and the registry in /usr/local/cargo here, the
# paths scripts/image.sh remaps its own to; symbols are stripped.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && rustup target add "$target" \
 && env "CC_$(uname -m)_unknown_linux_musl=musl-gcc" \
      cargo build --release --locked --target "$target" --bin cancel-operator \
 && install -D -m 0755 "target/$target/release/cancel-operator" /out/cancel-operator

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=
ARG SOURCE=https://github.com/cancel-dev/cancel-operator
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.title="cancel-operator" \
      org.opencontainers.image.description="A Kubernetes operator that runs stages as Jobs and cancels them safely, with the cancel APIs of GoCD, CodeArts, CrafterCMS and Cloud Foundry"
COPY --from=build --chown=0:0 /out/cancel-operator /cancel-operator
USER 65532:65532
WORKDIR /
ENTRYPOINT ["/cancel-operator"]
