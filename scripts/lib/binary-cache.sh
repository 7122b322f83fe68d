# Shared by the scripts that build test binaries once and cache them (k8s-binaries.sh,
# jaeger.sh). Sourced; the caller defines log().

# Copy (hard links when on the same file system) a complete bin dir into place atomically.
install_dir() {
  local from=$1 to=$2 tmp
  mkdir -p "$(dirname "${to}")"
  tmp="$(mktemp -d "$(dirname "${to}")/.bin.XXXXXX")"
  chmod 755 "${tmp}"
  cp -l "${from}"/* "${tmp}/" 2>/dev/null || cp "${from}"/* "${tmp}/"
  rm -rf "${to}"
  mv -T "${tmp}" "${to}"
}

# Holds lock file $1 on fd 9 for the rest of the script, waiting (and saying so) while
# another build or copy holds it.
hold_build_lock() {
  local lock=$1
  command -v flock >/dev/null 2>&1 || { log "flock (util-linux) is required"; exit 1; }
  exec 9>"${lock}"
  if ! flock -n 9; then
    log "waiting for another build/copy (lock ${lock})"
    flock 9
  fi
}

# Builds into machine bin dir $1 with the caller's build_into (given a fresh staging dir
# next to $1), moving the result into place only once it is complete; says how long it took.
build_atomically() {
  local machine_bin=$1 started staging
  started=$(date +%s)
  mkdir -p "$(dirname "${machine_bin}")"
  staging="$(mktemp -d "$(dirname "${machine_bin}")/.build.XXXXXX")"
  chmod 755 "${staging}"
  trap "rm -rf '${staging}'" EXIT
  build_into "${staging}"
  rm -rf "${machine_bin}"
  mv -T "${staging}" "${machine_bin}"
  trap - EXIT
  log "built in $(($(date +%s) - started)) s into ${machine_bin}"
}
