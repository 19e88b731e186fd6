#!/usr/bin/env bash
# The README's first command: set up this host and run firebuild's main job end to end, as far as the
# product goes today: host check, offline base image, guest kernel, and the example Dockerfile built into
# a tagged ext4 root file system. Run from the repository as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
npm ci --no-audit --no-fund --loglevel=error
fb() { node bin/firebuild.js "$@"; }

echo "== host check"
fb doctor

echo "== offline Debian base image (debian:bookworm-slim in Docker and the local registry)"
bash scripts/make-base-image.sh >/dev/null

echo "== guest kernel: Debian's cloud kernel + initrd"
vmlinuz=$(ls /boot/vmlinuz-*cloud* | sort | tail -n1)
fb kernel import --id debian-cloud --overwrite "$vmlinuz" --initrd "${vmlinuz/vmlinuz/initrd.img}" >/dev/null
fb kernel ls

echo "== build the example service (examples/hello) into a tagged rootfs with the Docker engine"
fb rootfs --engine docker --dockerfile examples/hello/Dockerfile --tag examples/hello:1 --overwrite
fb image inspect examples/hello:1 >/dev/null && echo "examples/hello:1 stored (firebuild image inspect examples/hello:1 shows its metadata)"

echo "== image store"
fb image ls
echo "quickstart: done"
