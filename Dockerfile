# syntax=docker/dockerfile:1
# The cancel-operator image: one static (musl) binary, /cancel-operator, in an
# otherwise empty image, run as 65532:65532. Both of the chart's Deployments
# (controller and REST sidecar) run it with their own arguments.
#
#   docker build -t ghcr.io/cancel-dev/cancel-operator:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# Multi-arch (linux/amd64 and linux/arm64, as the release workflow builds it):
# `docker buildx build --platform linux/amd64,linux/arm64 ...`. The binary is
# compiled on the build machine's own platform for each target architecture,
# without emulation.
#
# `make image` (scripts/image.sh) builds the same image without a container
# daemon, with the same compiler, target, flags, file and configuration; keep
# the two in step.

ARG RUST_VERSION=1.95

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-bookworm AS build
ARG TARGETARCH
# For the build machine's own architecture, musl-gcc compiles the C parts of
# the dependencies (ring, psm) for the musl target, the version scripts/image.sh
# gets from Debian 12 too. For the other one, clang (ring and psm build without
# a target sysroot) with llvm-ar, and rust-lld links against the musl libc that
# Rust ships with the target.
RUN case "$TARGETARCH" in \
      amd64) arch=x86_64 ;; \
      arm64) arch=aarch64 ;; \
      *) echo "unsupported architecture: $TARGETARCH" >&2; exit 1 ;; \
    esac \
 && if [ "$arch" = "$(uname -m)" ]; then packages=musl-tools=1.2.3-1; else packages="clang-14 llvm-14"; fi \
 && apt-get update \
 && apt-get install -y --no-install-recommends $packages \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$arch-unknown-linux-musl" \
 && echo "$arch" >/target-arch
WORKDIR /src
COPY . .
# The sources sit in /src and the registry in /usr/local/cargo here, the
# paths scripts/image.sh remaps its own to; symbols are stripped.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=cancel-operator-target-${TARGETARCH} \
    arch="$(cat /target-arch)" \
 && target="$arch-unknown-linux-musl" \
 && if [ "$arch" = "$(uname -m)" ]; then \
      set -- "CC_${arch}_unknown_linux_musl=musl-gcc"; \
    else \
      set -- "CC_${arch}_unknown_linux_musl=clang-14" "AR_${arch}_unknown_linux_musl=llvm-ar-14" \
        "CARGO_TARGET_$(echo "$arch" | tr '[:lower:]' '[:upper:]')_UNKNOWN_LINUX_MUSL_LINKER=rust-lld"; \
    fi \
 && env "$@" cargo build --release --locked --target "$target" --bin cancel-operator \
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
