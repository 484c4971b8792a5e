#!/usr/bin/env bash
# Build (once) a real kube-apiserver from Debian's Kubernetes source package and
# install etcd, for the operator's integration tests. The binary is cached under
# ${STEPSHOT_CACHE:-~/.cache/stepshot} keyed by the Debian source version, so later
# runs on the same machine reuse it. Needs root (apt). Prints the binary's path.
set -euo pipefail
CACHE=${STEPSHOT_CACHE:-$HOME/.cache/stepshot}
mkdir -p "$CACHE"
log() { echo "[kube-apiserver] $*" >&2; }

SRC_LIST=/etc/apt/sources.list.d/stepshot-deb-src.sources
if [ ! -f "$SRC_LIST" ]; then
  # Same mirror and key as the machine's own first stanza, but for source packages.
  awk 'BEGIN{RS="";ORS="\n\n"} NR==1{print; exit}' /etc/apt/sources.list.d/debian.sources \
    | sed -e 's/^Types:.*/Types: deb-src/' -e 's/^Suites:.*/Suites: bookworm/' > "$SRC_LIST"
  apt-get update -qq >&2
fi
need=()
for p in etcd-server golang-go rsync make golang-github-modern-go-reflect2-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

VERSION=$(apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/{print $2; exit}')
[ -n "$VERSION" ] || { log "apt-cache showsrc kubernetes found nothing"; exit 1; }
BIN="$CACHE/kube-apiserver-${VERSION//[^A-Za-z0-9.]/_}"
if [ -x "$BIN" ]; then echo "$BIN"; exit 0; fi

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building kube-apiserver $VERSION in $WORK (about 13 min on 2 cores)"
(cd "$WORK" && apt-get source --download-only kubernetes >&2)
mkdir "$WORK/src"
tar -xzf "$WORK"/kubernetes_*.orig.tar.gz -C "$WORK/src" --strip-components=1
# Vendored reflect2 v1.0.1 crashes when built with Go >= 1.18; use Debian's v1.0.2.
rm -rf "$WORK/src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$WORK/src/vendor/github.com/modern-go/reflect2"
cd "$WORK/src"
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
env GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$WORK/home" \
  make WHAT=cmd/kube-apiserver >&2
install -m 0755 _output/bin/kube-apiserver "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
log "cached $BIN"
echo "$BIN"
