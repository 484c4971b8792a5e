#!/usr/bin/env bash
# promtool (the metrics and rules linter the tests run) and the prometheus server (the tests
# scrape a real trainer with it and evaluate the dashboard's queries and the chart's alerts),
# both from Debian's prometheus package: the .deb is unpacked, never installed (no service,
# nothing started). Cached under ~/.cache/stepshot/prometheus-<version>/; copied to $1
# (default .venv/bin).
set -euo pipefail
dest=${1:-.venv/bin}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/stepshot
version=$(apt-cache policy prometheus 2>/dev/null | awk '/Candidate:/ {print $2}')
if [ -z "$version" ] || [ "$version" = "(none)" ]; then
  apt-get update -qq
  version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
fi
dir=$cache/prometheus-$version
if [ ! -x "$dir/promtool" ] || [ ! -x "$dir/prometheus" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq "prometheus=$version" 2>/dev/null && dpkg-deb -x prometheus_*.deb x)
  mkdir -p "$dir"
  install -m 0755 "$tmp/x/usr/bin/promtool" "$dir/promtool"
  install -m 0755 "$tmp/x/usr/bin/prometheus" "$dir/prometheus"
  rm -rf "$tmp"
fi
install -m 0755 "$dir/promtool" "$dest/promtool"
install -m 0755 "$dir/prometheus" "$dest/prometheus"
