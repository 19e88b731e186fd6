#!/usr/bin/env bash
# Makes an offline Debian bookworm base image with mmdebstrap (no Docker Hub needed) and makes it available
#   - as a Docker image:  debian:bookworm-slim  and  firebuild-test/debian:bookworm
#   - in the local registry: $FIREBUILD_REGISTRY_ADDR/debian:bookworm-slim
# The rootfs tar is cached on disk, keyed by what goes into it, so later runs take seconds.
#
# Environment:
#   FIREBUILD_TEST_CACHE     cache directory (default /var/cache/firebuild-test)
#   FIREBUILD_DEBIAN_MIRROR  Debian mirror (default: the first of this host's apt sources, else deb.debian.org)
#   FIREBUILD_REGISTRY_ADDR  local registry (default 127.0.0.1:5000); set to "" to skip the push
#   FIREBUILD_BASE_PACKAGES  extra packages (default: busybox for small servers and tools, libcap2-bin for setcap)
# Prints the path of the cached tar on stdout.
set -euo pipefail

CACHE=${FIREBUILD_TEST_CACHE:-/var/cache/firebuild-test}
REGISTRY=${FIREBUILD_REGISTRY_ADDR-127.0.0.1:5000}
PACKAGES=${FIREBUILD_BASE_PACKAGES-busybox libcap2-bin}
SUITE=bookworm
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker

log() { printf 'make-base-image: %s\n' "$*" >&2; }

mirror=${FIREBUILD_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
  mirror=$(grep -hoE '^(URIs:|deb)\s+\S+' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null | awk '{print $2}' | grep -v security | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

# The key covers everything that changes the image's content (not the mirror: the suite pins it).
recipe="v2 suite=$SUITE variant=minbase packages=$PACKAGES"
key=$(printf '%s' "$recipe" | sha256sum | cut -c1-16)
tarball="$CACHE/debian-$SUITE-$key.tar"

mkdir -p "$CACHE"
if [ ! -s "$tarball" ]; then
  log "building $tarball from $mirror ($recipe)"
  tmp=$(mktemp "$CACHE/.debian-$SUITE-XXXXXX.tar")
  trap 'rm -f "$tmp"' EXIT
  include=()
  [ -n "$PACKAGES" ] && include=(--include="${PACKAGES// /,}")
  # Slim like the official -slim images: no docs, man pages or locales.
  mmdebstrap --quiet --variant=minbase "${include[@]}" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
    --format=tar "$SUITE" "$tmp" "$mirror" >&2
  chmod 0644 "$tmp"
  mv "$tmp" "$tarball"
  trap - EXIT
else
  log "cached: $tarball"
fi

label="org.firebuild.test-base=$key"
have=$($DOCKER image inspect --format '{{ index .Config.Labels "org.firebuild.test-base" }}' firebuild-test/debian:$SUITE 2>/dev/null || true)
if [ "$have" != "$key" ]; then
  log "importing into the Docker engine as firebuild-test/debian:$SUITE"
  $DOCKER import --change "LABEL $label" --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "$tarball" "firebuild-test/debian:$SUITE" >/dev/null
fi
# debian:bookworm-slim for Dockerfiles that name it; never replace one that did not come from here.
slim=$($DOCKER image inspect --format '{{ index .Config.Labels "org.firebuild.test-base" }}' debian:$SUITE-slim 2>/dev/null || echo absent)
if [ "$slim" = absent ] || { [ -n "$slim" ] && [ "$slim" != "$key" ]; }; then
  $DOCKER tag "firebuild-test/debian:$SUITE" "debian:$SUITE-slim"
elif [ -z "$slim" ]; then
  log "debian:$SUITE-slim exists and is not firebuild's test base: leaving it alone"
fi

if [ -n "$REGISTRY" ]; then
  ref="$REGISTRY/debian:$SUITE-slim"
  remote=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REGISTRY/v2/debian/manifests/$SUITE-slim" 2>/dev/null | sha256sum | cut -c1-64 || true)
  local_id=$($DOCKER image inspect --format '{{.Id}}' "firebuild-test/debian:$SUITE")
  pushed=$(cat "$CACHE/.pushed-$key" 2>/dev/null || true)
  if [ "$pushed" != "$local_id $remote" ] || [ -z "$remote" ]; then
    log "pushing $ref"
    $DOCKER tag "firebuild-test/debian:$SUITE" "$ref"
    $DOCKER push "$ref" >/dev/null
    remote=$(curl -fsS -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' "http://$REGISTRY/v2/debian/manifests/$SUITE-slim" | sha256sum | cut -c1-64)
    echo "$local_id $remote" > "$CACHE/.pushed-$key"
  fi
fi
echo "$tarball"
