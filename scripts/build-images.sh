#!/usr/bin/env bash
# Build the project's two images (Dockerfile targets `operator` and `trainer`) with buildah on a
# local Debian base made by mmdebstrap, and save each as a docker-archive for containerd.
# Nothing is pulled from a registry: the base comes from Debian, Python packages from PyPI, and
# torch from the wheel the host's pip resolves for requirements/cpu.txt (the CPU build here).
# Published images use the Dockerfile's defaults instead (public base, CUDA build of torch).
#
#   scripts/build-images.sh          # prints the two archive paths, one a line
#
# Cached under ${STEPSHOT_CACHE:-~/.cache/stepshot}: the base rootfs (keyed by its package list),
# the torch wheel, and buildah's layer cache (so only layers after a source change rebuild).
# Needs root (apt, buildah with the vfs driver).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${STEPSHOT_CACHE:-$HOME/.cache/stepshot}
TAG=${STEPSHOT_IMAGE_TAG:-dev}
BASE_PACKAGES=python3,python3-pip,python-is-python3,passwd,ca-certificates
APT_OPT='APT::Install-Recommends "false"'
log() { echo "[build-images] $*" >&2; }
mkdir -p "$CACHE/images"

need=()
for p in buildah mmdebstrap; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq >&2 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
BUILDAH=(buildah --storage-driver vfs)

# ---------------------------------------------------------------- the base: Debian bookworm + Python
base_key=$(echo "bookworm $BASE_PACKAGES $APT_OPT" | sha256sum | cut -c1-12)
BASE_IMAGE=localhost/stepshot-base:$base_key
if ! "${BUILDAH[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  work=$(mktemp -d "$CACHE/base.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  log "mmdebstrap bookworm ($BASE_PACKAGES) from ${mirror:-the default mirror}"
  mmdebstrap --quiet --variant=minbase --include="$BASE_PACKAGES" --aptopt="$APT_OPT" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$work/layer.tar" ${mirror:+"$mirror"} >&2
  bash "$ROOT/scripts/docker-archive.sh" "$work/layer.tar" "$BASE_IMAGE" \
    '{"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
              "PIP_BREAK_SYSTEM_PACKAGES=1"], "Cmd": ["python3"]}' "$work/base.tar"
  "${BUILDAH[@]}" pull --quiet "docker-archive:$work/base.tar" >/dev/null
  rm -rf "$work"; trap - EXIT
fi

# ---------------------------------------------------------------- torch: the wheel the tests use
torch_req=$(grep -E '^torch==' "$ROOT/requirements/cpu.txt")
mkdir -p "$CACHE/wheels"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$CACHE/wheels" "$torch_req" >&2
wheel=$(ls "$CACHE"/wheels/torch-"${torch_req#torch==}"*.whl | head -1)
torch_version=$(basename "$wheel" | cut -d- -f2)          # e.g. 2.13.0+cpu

# ---------------------------------------------------------------- the two targets
# The host's CA bundle: pip in the build container must trust what the host trusts.
build=("${BUILDAH[@]}" bud --quiet --layers --isolation chroot --network host
       -v /etc/ssl/certs:/etc/ssl/certs:ro -v "$CACHE/wheels:/host-wheels:ro"
       --build-arg "PYTHON_IMAGE=$BASE_IMAGE" --build-arg "TRAINER_BASE=$BASE_IMAGE"
       --build-arg "TORCH_VERSION=$torch_version" --build-arg PIP_FIND_LINKS=/host-wheels)
for target in operator trainer; do
  image=localhost/stepshot-$target:$TAG
  start=$SECONDS
  "${build[@]}" --target "$target" -t "$image" "$ROOT" >&2
  id=$("${BUILDAH[@]}" inspect --type image --format '{{.FromImageID}}' "$image")
  archive="$CACHE/images/stepshot-$target-${id:0:12}.tar"
  if [ ! -f "$archive" ]; then
    rm -f "$CACHE"/images/stepshot-"$target"-*.tar
    "${BUILDAH[@]}" push --quiet "$image" "docker-archive:$archive.tmp:$image" >&2
    mv "$archive.tmp" "$archive"
  fi
  log "$image: $((SECONDS - start)) s, $(du -m "$archive" | cut -f1) MiB archive"
  echo "$archive"
done
# vfs keeps a full copy of every layer: drop the images earlier builds left untagged.
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
