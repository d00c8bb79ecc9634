#!/usr/bin/env bash
# scripts/with-node.sh MAJOR COMMAND...: runs COMMAND with Node.js MAJOR first
# on PATH. That Node comes from the npm registry's `node` package, installed
# the first time into ~/.cache/virtio-tap-node/MAJOR (as root: /var/cache/...; no
# other download); later runs reuse it. Example: scripts/with-node.sh 24 npm test
set -euo pipefail
major=$1
shift
# As root the cache is outside /root (mode 0700), so that tests running node as
# another user (setpriv) can still execute it.
if [ "$(id -u)" = 0 ]; then base=/var/cache/virtio-tap-node; else base="${XDG_CACHE_HOME:-$HOME/.cache}/virtio-tap-node"; fi
dir="${VIRTIO_TAP_NODE_CACHE:-$base}/$major"
bin="$dir/node_modules/.bin"
if ! "$bin/node" --version >/dev/null 2>&1; then
  mkdir -p "$dir"
  [ -f "$dir/package.json" ] || echo '{ "private": true }' >"$dir/package.json"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error "node@$major" >&2
fi
export PATH="$bin:$PATH"
exec "$@"
