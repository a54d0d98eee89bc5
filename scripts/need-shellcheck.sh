# shellcheck shell=bash
# Sourced by the lint scripts: need_shellcheck makes sure shellcheck is on
# PATH. It comes from the system; on Debian or Ubuntu it is installed with
# apt-get when missing, as root or through password-less sudo (as on CI
# runners). Expects the caller's log and die functions.
need_shellcheck() {
  command -v shellcheck >/dev/null && return 0
  local as_root=()
  [[ $(id -u) == 0 ]] || as_root=(sudo -n)
  if command -v apt-get >/dev/null && { ((${#as_root[@]} == 0)) || sudo -n true 2>/dev/null; }; then
    log "installing shellcheck"
    local apt=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get)
    "${apt[@]}" install -y --no-install-recommends shellcheck >/dev/null ||
      { "${apt[@]}" update >/dev/null && "${apt[@]}" install -y --no-install-recommends shellcheck >/dev/null; }
  else
    die "needs shellcheck (Debian: apt-get install shellcheck)"
  fi
}
