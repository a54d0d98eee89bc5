#!/usr/bin/env bash
# Builds the container image without a container daemon: a static (musl)
# release binary of cancel-operator, packed with umoci into an OCI image layout
# and written as a tar:
#
#   target/image/cancel-operator-<appVersion>.oci.tar
#
# named like the chart's default image (values.yaml image.repository, tag: the
# chart's appVersion). It holds what the Dockerfile's final stage holds: the
# binary at /cancel-operator, owned by root, mode 0755, run as 65532:65532.
#
# The build is reproducible from a commit: timestamps come from
# SOURCE_DATE_EPOCH (default: the last commit's time) and build paths are
# remapped. The image is not rebuilt when the binary and its metadata have not
# changed. Then the archive is checked: its layer tar, and the binary run from
# a fresh unpack of the archive.
#
# Settings (environment):
#   CARGO_TARGET_DIR   cargo's target directory (default ~/.cache/cancel-operator/target)
#   IMAGE_REPOSITORY   image name (default: values.yaml image.repository)
#   IMAGE_TAG          tag (default: Chart.yaml appVersion)
#   IMAGE_SOURCE       org.opencontainers.image.source label
#   IMAGE_OUT          output file (default target/image/cancel-operator-<tag>.oci.tar)
#   SOURCE_DATE_EPOCH  timestamps of the image (default: the last commit's)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
start=$SECONDS
say() { printf '==> %s (%ds)\n' "$*" "$((SECONDS - start))" >&2; }
die() { printf 'image.sh: %s\n' "$*" >&2; exit 1; }

# --- what to build -----------------------------------------------------------
chart=charts/cancel-operator
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^" ]*\)"\{0,1\} *$/\1/p' "$chart/Chart.yaml")
chart_repository=$(sed -n '/^image:/,/^[^ #]/s/^  repository: *\([^ #]*\).*/\1/p' "$chart/values.yaml")
[[ -n $app_version && -n $chart_repository ]] || die "cannot read appVersion or image.repository from $chart"
repository=${IMAGE_REPOSITORY:-$chart_repository}
tag=${IMAGE_TAG:-$app_version}
image=$repository:$tag
out=${IMAGE_OUT:-$root/target/image/cancel-operator-$tag.oci.tar}

description=$(sed -n 's/^description = "\(.*\)"$/\1/p' Cargo.toml | head -1)
license=$(sed -n 's/^license = "\(.*\)"$/\1/p' Cargo.toml | head -1)
source_url=${IMAGE_SOURCE:-https://github.com/cancel-dev/cancel-operator}
revision=unknown
if git rev-parse --git-dir >/dev/null 2>&1; then
  revision=$(git rev-parse HEAD)
  if [[ -n $(git status --porcelain --untracked-files=no) ]]; then revision+=-dirty; fi
  : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct)}"
fi
epoch=${SOURCE_DATE_EPOCH:-0}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac
target=$(uname -m)-unknown-linux-musl

# --- tools ---------------------------------------------------------------
missing=()
command -v musl-gcc >/dev/null || missing+=(musl-tools)
command -v umoci >/dev/null || missing+=(umoci)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  else
    die "needs ${missing[*]} (Debian: apt-get install ${missing[*]})"
  fi
fi
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$target"; then
  say "rustup target add $target"
  rustup target add "$target"
fi
# umoci keeps file owners as they are when run as root; otherwise it maps the
# caller to root in the image.
rootless=()
[[ $(id -u) == 0 ]] || rootless=(--rootless)

# --- the binary ---------------------------------------------------------------
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cancel-operator/target}
cargo_home=${CARGO_HOME:-$HOME/.cargo}
say "cargo build --release --locked --target $target (in $CARGO_TARGET_DIR)"
# The same flags as the Dockerfile: static, symbols stripped, no build paths.
# Not SOURCE_DATE_EPOCH: C build scripts (ring's) rerun when it changes, and
# with them most of the build, at every commit.
env -u SOURCE_DATE_EPOCH "CC_${target//-/_}=musl-gcc" \
  CARGO_PROFILE_RELEASE_STRIP=symbols \
  RUSTFLAGS="--remap-path-prefix=$root=/src --remap-path-prefix=$cargo_home=/usr/local/cargo" \
  cargo build --release --locked --target "$target" --bin cancel-operator
bin=$CARGO_TARGET_DIR/$target/release/cancel-operator
file_type=$(LC_ALL=C od -An -c -N4 "$bin" | tr -d ' ')
[[ $file_type == 177ELF ]] || die "$bin is not an ELF binary"
if command -v readelf >/dev/null && readelf -l "$bin" | grep -q INTERP; then
  die "$bin is not static"
fi

# --- the image ----------------------------------------------------------------
labels=(
  "org.opencontainers.image.source=$source_url"
  "org.opencontainers.image.version=$tag"
  "org.opencontainers.image.revision=$revision"
  "org.opencontainers.image.licenses=$license"
  "org.opencontainers.image.title=cancel-operator"
  "org.opencontainers.image.description=$description"
  "org.opencontainers.image.created=$created"
)
key=$( {
  sha256sum "$bin" | cut -d' ' -f1
  printf '%s\n' "$image" "$created" "$arch" "${labels[@]}"
  sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
} | sha256sum | cut -d' ' -f1)
if [[ -f $out && -f $out.key && $(<"$out.key") == "$key" && ${IMAGE_REBUILD:-} != 1 ]]; then
  say "$image is up to date: $out"
  exit 0
fi

mkdir -p "$(dirname "$out")"
work=$(mktemp -d "$(dirname "$out")/.image.XXXXXX")
trap 'rm -rf "$work"' EXIT
layout=$work/layout
ref=$layout:$tag

say "packing $image"
umoci init --layout "$layout"
umoci new --image "$ref"
umoci unpack "${rootless[@]}" --image "$ref" "$work/bundle"
rootfs=$work/bundle/rootfs
install -m 0755 "$bin" "$rootfs/cancel-operator"
[[ $(id -u) != 0 ]] || chown 0:0 "$rootfs/cancel-operator"
chmod 0755 "$rootfs"
touch -d "@$epoch" "$rootfs/cancel-operator" "$rootfs"
# `umoci repack` of a bundle: `umoci insert` 0.4.7 writes a truncated layer tar.
umoci repack "${rootless[@]}" --image "$ref" \
  --history.created "$created" --history.created_by "COPY cancel-operator /cancel-operator" \
  "$work/bundle"
config=(--created "$created" --os linux --architecture "$arch"
  --config.user 65532:65532 --config.entrypoint /cancel-operator --config.workingdir /
  --history.created "$created"
  --history.created_by "USER 65532:65532; ENTRYPOINT [\"/cancel-operator\"]")
for label in "${labels[@]}"; do config+=(--config.label "$label"); done
umoci config --image "$ref" "${config[@]}"
umoci gc --layout "$layout"
# containerd (ctr images import, the kubelet's runtime) and Docker name an
# imported OCI image after this annotation; the OCI one holds the tag.
jq --arg name "$image" -c \
  '.manifests[0].annotations["io.containerd.image.name"] = $name' \
  "$layout/index.json" >"$work/index.json"
mv "$work/index.json" "$layout/index.json"
chmod -R u=rwX,go=rX "$layout"
(cd "$layout" && tar --sort=name --format=ustar --numeric-owner --owner=0 --group=0 \
  --mtime="@$epoch" -cf "$work/image.tar" oci-layout index.json blobs)

# --- checks -------------------------------------------------------------------
say "checking the archive"
check=$work/check
mkdir "$check" && tar -xf "$work/image.tar" -C "$check"
manifest=$check/blobs/$(jq -r '.manifests[0].digest | sub(":"; "/")' "$check/index.json")
[[ $(jq -r '.manifests | length' "$check/index.json") == 1 ]] || die "index.json: not one manifest"
[[ $(jq -r '.layers | length' "$manifest") == 1 ]] || die "not one layer"
layer=$check/blobs/$(jq -r '.layers[0].digest | sub(":"; "/")' "$manifest")
config_blob=$check/blobs/$(jq -r '.config.digest | sub(":"; "/")' "$manifest")
for blob in "$check"/blobs/sha256/*; do
  [[ $(sha256sum "$blob" | cut -d' ' -f1) == "$(basename "$blob")" ]] || die "blob $blob: digest mismatch"
done
[[ sha256:$(gzip -dc "$layer" | sha256sum | cut -d' ' -f1) == "$(jq -r '.rootfs.diff_ids[0]' "$config_blob")" ]] ||
  die "layer: diff_id mismatch"
# The layer must be a complete tar holding the binary, root-owned, mode 0755.
listing=$(gzip -dc "$layer" | tar -tvf - --numeric-owner) || die "layer: not a valid tar"
grep -Eq '^-rwxr-xr-x 0/0 +[0-9]+ .* cancel-operator$' <<<"$listing" ||
  die "layer: no root-owned /cancel-operator with mode 0755: $listing"
[[ $(jq -r '.config.User + " " + (.config.Entrypoint | join(" "))' "$config_blob") == "65532:65532 /cancel-operator" ]] ||
  die "config: wrong user or entrypoint"
umoci stat --image "$check:$tag" >/dev/null
umoci unpack "${rootless[@]}" --image "$check:$tag" "$work/unpacked" >/dev/null
"$work/unpacked/rootfs/cancel-operator" --help >/dev/null || die "the unpacked binary does not run"

mv "$work/image.tar" "$out"
printf '%s\n' "$key" >"$out.key"
layer_size=$(jq -r '.layers[0].size' "$manifest")
unpacked_size=$(stat -c %s "$work/unpacked/rootfs/cancel-operator")
say "built $image"
cat <<EOF
image:     $image
archive:   $out ($(stat -c %s "$out") bytes)
manifest:  $(jq -r '.manifests[0].digest' "$check/index.json")
layer:     $layer_size bytes compressed, $unpacked_size bytes unpacked
revision:  $revision
created:   $created
EOF
