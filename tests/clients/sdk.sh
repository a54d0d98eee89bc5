#!/bin/sh
# Builds the runner of one of Huawei Cloud's published SDKs that the client
# tests drive (tests/clients/<sdk>/, pinned by its lockfile), once per content
# of that directory, of this script and of the toolchain, and prints the path
# of a program that runs it on stdout. The program reads the CODEARTS_*
# variables its source describes and exits non-zero at the first step that
# fails.
# Idempotent and safe to run concurrently, like venv.sh.
#
#   RUN=$(tests/clients/sdk.sh go) && CODEARTS_ENDPOINT=… "$RUN"
#
# <sdk>: go (go build, the module cache as the control plane's build uses it),
# node (npm ci), java (Maven, its repository under the cache).
# Environment: CANCEL_OPERATOR_CACHE (default ~/.cache/cancel-operator).
set -eu
sdk=${1:?usage: sdk.sh go|node|java}
here=$(cd "$(dirname "$0")" && pwd)
src="$here/$sdk"
cache="${CANCEL_OPERATOR_CACHE:-$HOME/.cache/cancel-operator}"
[ -d "$src" ] || { echo "sdk.sh: no runner for $sdk" >&2; exit 2; }
mkdir -p "$cache"

case "$sdk" in
  go) toolchain=$(go version) ;;
  node) toolchain=$(node --version; npm --version) ;;
  java) toolchain=$(java -version 2>&1; mvn --version 2>&1 | head -1) ;;
  *) echo "sdk.sh: unknown sdk $sdk" >&2; exit 2 ;;
esac
key=$({
  cd "$src" && find . -type f -not -path './node_modules/*' -not -path './target/*' |
    LC_ALL=C sort | xargs sha256sum
  echo "$toolchain"
  cat "$here/sdk.sh"
} | sha256sum | cut -d' ' -f1)
dir="$cache/sdk-$sdk-$(printf %s "$key" | cut -c1-12)"
stamp="$dir/.content.sha256"

current() {
  [ -x "$dir/run" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]
}

build() {
  rm -rf "$dir"
  mkdir -p "$dir"
  case "$sdk" in
    go)
      (cd "$src" && go build -mod=readonly -trimpath -buildvcs=false -o "$dir/run" .)
      ;;
    node)
      cp -R "$src/." "$dir/"
      (cd "$dir" && npm ci --no-audit --no-fund --cache "$cache/npm" >&2)
      printf '#!/bin/sh\nexec node "%s/test_codearts.js" "$@"\n' "$dir" >"$dir/run"
      chmod +x "$dir/run"
      ;;
    java)
      cp -R "$src/." "$dir/"
      (cd "$dir" && mvn -B -q -Dmaven.repo.local="$cache/m2" \
        -Dmdep.outputFile=classpath.txt compile dependency:build-classpath >&2)
      printf '#!/bin/sh\nexec java -cp "%s/target/classes:%s" CodeArts "$@"\n' \
        "$dir" "$(cat "$dir/classpath.txt")" >"$dir/run"
      chmod +x "$dir/run"
      ;;
  esac
  echo "$key" >"$stamp"
}

if ! current; then
  exec 9>"$cache/sdk-$sdk.lock"
  flock 9
  if ! current; then
    echo "building $dir from $src" >&2
    build >&2
  fi
  flock -u 9
fi
echo "$dir/run"
