#!/usr/bin/env bash
# Installs and starts every real part firebuild and its tests use, from Debian packages.
# Idempotent: packages already present are not reinstalled, services already answering are not restarted.
# Used by the README's two commands, .ci/run and runner-setup/.
#
#   scripts/install-deps.sh            install packages, start Docker engine and the local registry
#   scripts/install-deps.sh --no-start install packages only
#
# Environment:
#   FIREBUILD_REGISTRY_ADDR   address of the local OCI registry (default 127.0.0.1:5000)
#   FIREBUILD_STATE_DIR       where service logs and registry data live (default /var/lib/firebuild)
set -euo pipefail

start_services=1
for arg in "$@"; do
  case "$arg" in
    --no-start) start_services=0 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "install-deps: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

REGISTRY_ADDR=${FIREBUILD_REGISTRY_ADDR:-127.0.0.1:5000}
STATE_DIR=${FIREBUILD_STATE_DIR:-/var/lib/firebuild}

log() { printf 'install-deps: %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else log "run as root or install sudo"; exit 2; fi
fi

PACKAGES=(
  qemu-system-x86 qemu-utils docker.io docker-registry e2fsprogs busybox-static
  linux-image-cloud-amd64 containernetworking-plugins mmdebstrap zstd git iproute2 iptables
  ca-certificates curl procps util-linux openssh-client openssl
  # runner-setup --privileged-vms: its sudoers rule is validated with visudo (tests too)
  sudo
  # isolated user-mode networking of the VMs (--network user): the namespace's only way out
  slirp4netns
  # firebuild kernel build: Debian's kernel source and its build tools
  linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev xz-utils
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "all ${#PACKAGES[@]} packages present"
fi

# Node.js >= 20 is needed by firebuild itself.
node_major=0
if command -v node >/dev/null 2>&1; then node_major=$(node -p 'process.versions.node.split(".")[0]'); fi
if [ "$node_major" -lt 20 ]; then
  if [ "$node_major" -eq 0 ]; then
    log "Node.js not found: trying Debian's nodejs and npm"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null || true
    node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  fi
  if [ "$node_major" -lt 20 ]; then
    log "Node.js >= 20 is required (found ${node_major}); install it from your distribution or nodejs.org and re-run"
    exit 2
  fi
fi

[ "$start_services" -eq 1 ] || exit 0

$SUDO mkdir -p "$STATE_DIR"

docker_ok() { $SUDO /usr/bin/docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || $SUDO docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if docker_ok; then
  log "Docker engine answering"
else
  if command -v systemctl >/dev/null 2>&1 && [ "$(systemctl is-system-running 2>/dev/null || true)" != "offline" ] && systemctl list-unit-files docker.service >/dev/null 2>&1; then
    $SUDO systemctl start docker || true
  fi
  if ! docker_ok; then
    log "starting dockerd (log: $STATE_DIR/dockerd.log)"
    $SUDO bash -c "setsid nohup /usr/sbin/dockerd >'$STATE_DIR/dockerd.log' 2>&1 </dev/null &"
  fi
  for _ in $(seq 1 60); do docker_ok && break; sleep 1; done
  if ! docker_ok; then log "Docker engine did not start; see $STATE_DIR/dockerd.log"; tail -5 "$STATE_DIR/dockerd.log" >&2 || true; exit 1; fi
  log "Docker engine answering"
fi

registry_ok() { curl -fsS -o /dev/null "http://$REGISTRY_ADDR/v2/" 2>/dev/null; }
if registry_ok; then
  log "registry answering at $REGISTRY_ADDR"
else
  $SUDO mkdir -p "$STATE_DIR/registry"
  cat <<CONF | $SUDO tee "$STATE_DIR/registry.yml" >/dev/null
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE_DIR/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
CONF
  log "starting docker-registry on $REGISTRY_ADDR (log: $STATE_DIR/registry.log)"
  $SUDO bash -c "setsid nohup /usr/bin/docker-registry serve '$STATE_DIR/registry.yml' >'$STATE_DIR/registry.log' 2>&1 </dev/null &"
  for _ in $(seq 1 30); do registry_ok && break; sleep 1; done
  if ! registry_ok; then log "registry did not start; see $STATE_DIR/registry.log"; tail -5 "$STATE_DIR/registry.log" >&2 || true; exit 1; fi
  log "registry answering at $REGISTRY_ADDR"
fi
