#!/usr/bin/env bash
# Wrap one root-filesystem tar as a `docker save` archive, the format `ctr image import` and
# `buildah pull docker-archive:` load (no registry needed):
#   scripts/docker-archive.sh ROOTFS.tar NAME:TAG CONFIG_JSON OUT.tar
# CONFIG_JSON is the image's "config" object ({"Env": [...], "Entrypoint": [...], ...}). The
# history entry matters: buildah refuses to commit on top of a layer that has none.
set -euo pipefail
rootfs=$(realpath "$1") tag=$2 config=$3 out=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ln -s "$rootfs" "$work/layer.tar"
diff_id=$(sha256sum "$rootfs" | cut -d' ' -f1)
printf '{"architecture": "amd64", "os": "linux", "config": %s,\n "rootfs": {"type": "layers", "diff_ids": ["sha256:%s"]},\n "history": [{"created_by": "scripts/docker-archive.sh %s"}]}\n' \
  "$config" "$diff_id" "$tag" > "$work/config.json"
printf '[{"Config": "config.json", "RepoTags": ["%s"], "Layers": ["layer.tar"]}]\n' "$tag" > "$work/manifest.json"
tar -chf "$out" -C "$work" manifest.json config.json layer.tar
