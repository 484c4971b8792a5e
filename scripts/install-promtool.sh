#!/usr/bin/env bash
# promtool (the metrics linter the tests run on both expositions), from Debian's prometheus
# package: the .deb is unpacked, never installed (no server, no service). Cached under
# ~/.cache/stepshot/promtool-<version>/; copied to $1 (default .venv/bin).
set -euo pipefail
dest=${1:-.venv/bin}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/stepshot
version=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  apt-get update -qq
  version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
fi
dir=$cache/promtool-$version
if [ ! -x "$dir/promtool" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "prometheus=$version" 2>/dev/null && dpkg-deb -x prometheus_*.deb x)
  mkdir -p "$dir"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$dir/promtool"
  rm -rf "$tmp"
fi
install -m 0755 "$dir/promtool" "$dest/promtool"
