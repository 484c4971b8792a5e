#!/usr/bin/env bash
# Build (once) a single-node Kubernetes control plane and node from Debian's kubernetes source
# package: kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy, and
# install etcd.
# The binaries are cached under ${STEPSHOT_CACHE:-~/.cache/stepshot}/kube-<Debian version>/, so
# later runs on the same machine reuse them. Needs root (apt). Prints the binaries' directory.
# Docs: shared/docs/real-kube-apiserver.md, shared/docs/real-node.md.
set -euo pipefail
CACHE=${STEPSHOT_CACHE:-$HOME/.cache/stepshot}
COMPONENTS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
mkdir -p "$CACHE"
log() { echo "[build-kube] $*" >&2; }

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
OUT="$CACHE/kube-${VERSION//[^A-Za-z0-9.]/_}"
missing=()
for c in "${COMPONENTS[@]}"; do [ -x "$OUT/$c" ] || missing+=("$c"); done
if [ ${#missing[@]} -eq 0 ]; then echo "$OUT"; exit 0; fi

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
log "building ${missing[*]} $VERSION in $WORK (all five: about 20 min on 2 cores)"
(cd "$WORK" && apt-get source --download-only kubernetes >&2)
mkdir "$WORK/src"
tar -xzf "$WORK"/kubernetes_*.orig.tar.gz -C "$WORK/src" --strip-components=1
# Vendored reflect2 v1.0.1 crashes when built with Go >= 1.18; use Debian's v1.0.2.
rm -rf "$WORK/src/vendor/github.com/modern-go/reflect2"
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 "$WORK/src/vendor/github.com/modern-go/reflect2"
cd "$WORK/src"
mkdir -p .go/src/k8s.io && ln -s ../../.. .go/src/k8s.io/kubernetes
# One make for all: they share most packages, so the second and later cost minutes, not tens.
env GOPATH="$PWD/.go" CGO_ENABLED=0 HOME="$WORK/home" \
  make WHAT="${missing[*]/#/cmd/}" >&2
mkdir -p "$OUT"
for c in "${missing[@]}"; do
  install -m 0755 "_output/bin/$c" "$OUT/$c.tmp" && mv "$OUT/$c.tmp" "$OUT/$c"
done
log "cached $OUT"
echo "$OUT"
