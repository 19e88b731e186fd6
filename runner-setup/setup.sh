#!/usr/bin/env bash
# Turn a Debian/Ubuntu KVM host into a firebuild GitHub Actions runner. Idempotent: every step checks
# first and says `ok:` when there is nothing to do, `changed:` when it did something; a second run
# changes nothing. --dry-run prints every step (`would:`) and touches nothing.
#
#   sudo runner-setup/setup.sh --url https://github.com/ORG/REPO --token TOKEN [--ephemeral] [--labels L]
#
# Steps: the project's installer (Debian packages, Docker engine, registry), Firecracker and the jailer
# at a pinned version with sha256 verification, a guest kernel (firebuild kernel build), directories,
# the firebuild profile, CNI networks `machine-builds` (builds) and `machines` (runs), /dev/kvm
# permissions, the GitHub runner as a service with labels and a job-completed hook running
# `firebuild purge`.
set -euo pipefail

# Pinned versions. Their sha256 values come from the releases' published checksums and must be given
# (--firecracker-sha256, --runner-sha256, or the FIRECRACKER_SHA256 / RUNNER_SHA256 variables): this
# repository was written without access to GitHub's release downloads, so it ships no digest it could not
# check, and an install without one is refused rather than done unverified.
FIRECRACKER_VERSION=v1.10.1
FIRECRACKER_SHA256=${FIRECRACKER_SHA256:-}
RUNNER_VERSION=2.321.0
RUNNER_SHA256=${RUNNER_SHA256:-}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROOT=""            # prefix for every path written (tests use a temp dir)
DRY=0
URL="" TOKEN="" LABELS="self-hosted,linux,kvm,firebuild" EPHEMERAL=0 RUNNER_USER=firebuild-runner
SKIP_PACKAGES=0 SKIP_KERNEL=0 SKIP_RUNNER=0 FC_TARBALL=""

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "runner-setup: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --root) ROOT=${2:?}; shift ;;
    --url) URL=${2:?}; shift ;;
    --token) TOKEN=${2:?}; shift ;;
    --labels) LABELS=${2:?}; shift ;;
    --ephemeral) EPHEMERAL=1 ;;
    --runner-user) RUNNER_USER=${2:?}; shift ;;
    --firecracker-tarball) FC_TARBALL=${2:?}; shift ;;
    --firecracker-sha256) FIRECRACKER_SHA256=${2:?}; shift ;;
    --runner-sha256) RUNNER_SHA256=${2:?}; shift ;;
    --skip-packages) SKIP_PACKAGES=1 ;;
    --skip-kernel) SKIP_KERNEL=1 ;;
    --skip-runner) SKIP_RUNNER=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
if [ "$SKIP_RUNNER" = 0 ] && [ "$DRY" = 0 ] && { [ -z "$URL" ] || [ -z "$TOKEN" ]; }; then
  die "--url and --token are needed to register the runner (or pass --skip-runner)"
fi

p() { echo "$ROOT$1"; }
say() { echo "$1: $2"; }
# run DESCRIPTION CMD...: do it, or print it under --dry-run.
run() {
  local what=$1; shift
  if [ "$DRY" = 1 ]; then say would "$what"; return 0; fi
  "$@"
  say changed "$what"
}
# put_file PATH MODE CONTENT: write only when the content or mode differs.
put_file() {
  local f=$1 mode=$2 content=$3
  if [ -f "$f" ] && [ "$(cat "$f")" = "$content" ] && [ "$(stat -c %a "$f")" = "$mode" ]; then say ok "$f"; return 0; fi
  if [ "$DRY" = 1 ]; then say would "write $f"; return 0; fi
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$content" > "$f.tmp.$$" && chmod "$mode" "$f.tmp.$$" && mv "$f.tmp.$$" "$f"
  say changed "$f"
}
put_dir() {
  local d=$1 mode=$2
  if [ -d "$d" ] && [ "$(stat -c %a "$d")" = "$mode" ]; then say ok "$d"; return 0; fi
  run "directory $d ($mode)" install -d -m "$mode" "$d"
}

# 1. Packages and services, by the project's own installer.
if [ "$SKIP_PACKAGES" = 1 ]; then say ok "packages (skipped)"; else run "packages and services (scripts/install-deps.sh)" bash "$repo/scripts/install-deps.sh"; fi

# 2. Firecracker and the jailer, pinned and checksummed.
fc=$(p /usr/local/bin/firecracker)
jailer=$(p /usr/local/bin/jailer)
if [ -x "$fc" ] && [ -x "$jailer" ] && [ "$(cat "$(p /usr/local/lib/firebuild/firecracker.version)" 2>/dev/null)" = "$FIRECRACKER_VERSION" ]; then
  say ok "firecracker $FIRECRACKER_VERSION"
elif [ "$DRY" = 1 ]; then
  say would "install firecracker and jailer $FIRECRACKER_VERSION (sha256 ${FIRECRACKER_SHA256:-<required>})"
else
  [ -n "$FIRECRACKER_SHA256" ] || die "no sha256 for firecracker-${FIRECRACKER_VERSION}-x86_64.tgz: pass --firecracker-sha256 (from the release's SHA256SUMS)"
  tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
  tarball=${FC_TARBALL:-$tmp/firecracker.tgz}
  if [ -z "$FC_TARBALL" ]; then
    curl -fsSL -o "$tarball" "https://github.com/firecracker-microvm/firecracker/releases/download/${FIRECRACKER_VERSION}/firecracker-${FIRECRACKER_VERSION}-x86_64.tgz"
  fi
  echo "$FIRECRACKER_SHA256  $tarball" | sha256sum -c --quiet - || die "firecracker tarball checksum mismatch: refusing it"
  tar -xzf "$tarball" -C "$tmp"
  install -D -m 0755 "$tmp/release-${FIRECRACKER_VERSION}-x86_64/firecracker-${FIRECRACKER_VERSION}-x86_64" "$fc"
  install -D -m 0755 "$tmp/release-${FIRECRACKER_VERSION}-x86_64/jailer-${FIRECRACKER_VERSION}-x86_64" "$jailer"
  install -d "$(p /usr/local/lib/firebuild)"
  echo "$FIRECRACKER_VERSION" > "$(p /usr/local/lib/firebuild/firecracker.version)"
  say changed "firecracker and jailer $FIRECRACKER_VERSION"
fi

# 3. Directories.
for d in /var/lib/firebuild /var/lib/firebuild/rootfs /var/lib/firebuild/kernels /var/lib/firebuild/run /srv/jailer; do put_dir "$(p $d)" 700; done

# 4. The profile every job uses (firebuild run --profile default).
profile=$(p /etc/firebuild/profiles/default.json)
if [ -f "$profile" ]; then say ok "$profile"; else
  run "profile $profile" "$repo/bin/firebuild.js" profile-create --profile default --profile-conf-dir "$(p /etc/firebuild/profiles)" \
    --binary-firecracker "$fc" --binary-jailer "$jailer" --chroot-base "$(p /srv/jailer)" \
    --run-cache "$(p /var/lib/firebuild/run)" \
    --storage-provider-property-string "rootfs-storage-root=$(p /var/lib/firebuild/rootfs)" \
    --storage-provider-property-string "kernel-storage-root=$(p /var/lib/firebuild/kernels)"
fi

# 5. A guest kernel.
if [ "$SKIP_KERNEL" = 1 ]; then say ok "kernel (skipped)"
elif [ -f "$(p /var/lib/firebuild/kernels/fc61/metadata.json)" ]; then say ok "kernel fc61"
else run "kernel fc61 (firebuild kernel build --version 6.1, about 7 minutes on 2 cores)" "$repo/bin/firebuild.js" kernel build --id fc61 --version 6.1; fi

# 6. CNI networks: machine-builds for builds, machines for VMs (bridge + host-local + firewall).
conflist() {
  cat <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$1",
  "plugins": [
    { "type": "bridge", "bridge": "$2", "isGateway": true, "ipMasq": true, "ipam": { "type": "host-local", "subnet": "$3" } },
    { "type": "firewall" }
  ]
}
EOF
}
put_file "$(p /etc/cni/conf.d/60-machine-builds.conflist)" 644 "$(conflist machine-builds fcbuild0 192.168.128.0/24)"
put_file "$(p /etc/cni/conf.d/61-machines.conflist)" 644 "$(conflist machines fcrun0 192.168.127.0/24)"

# 7. /dev/kvm for the kvm group, the runner's user in it.
put_file "$(p /etc/udev/rules.d/65-firebuild-kvm.rules)" 644 'KERNEL=="kvm", GROUP="kvm", MODE="0660"'

# 8. The GitHub runner: a service, labels, optional --ephemeral, and the job-completed hook.
hook=$(p /opt/firebuild/job-completed.sh)
put_file "$hook" 755 "#!/bin/sh
# Runs after every job (ACTIONS_RUNNER_HOOK_JOB_COMPLETED): remove VMs whose process is gone.
exec $repo/bin/firebuild.js purge --profile default"
if [ "$SKIP_RUNNER" = 1 ]; then say ok "runner (skipped)"
else
  rdir=$(p /opt/actions-runner)
  if [ -f "$rdir/.runner" ]; then say ok "runner registered ($rdir)"
  elif [ "$DRY" = 1 ]; then say would "register the runner at ${URL:-<url>} with labels $LABELS$([ "$EPHEMERAL" = 1 ] && echo ' (ephemeral)') as a service run by $RUNNER_USER"
  else
    [ -n "$RUNNER_SHA256" ] || die "no sha256 for actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz: pass --runner-sha256 (from the runner release notes)"
    id -u "$RUNNER_USER" >/dev/null 2>&1 || useradd --system --create-home --groups kvm,docker "$RUNNER_USER"
    install -d -o "$RUNNER_USER" "$rdir"
    curl -fsSL -o "$rdir/runner.tgz" "https://github.com/actions/runner/releases/download/v${RUNNER_VERSION}/actions-runner-linux-x64-${RUNNER_VERSION}.tar.gz"
    echo "$RUNNER_SHA256  $rdir/runner.tgz" | sha256sum -c --quiet - || die "runner tarball checksum mismatch: refusing it"
    tar -xzf "$rdir/runner.tgz" -C "$rdir" && rm "$rdir/runner.tgz" && chown -R "$RUNNER_USER" "$rdir"
    sudo -u "$RUNNER_USER" "$rdir/config.sh" --unattended --url "$URL" --token "$TOKEN" --labels "$LABELS" $([ "$EPHEMERAL" = 1 ] && echo --ephemeral)
    echo "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=$hook" >> "$rdir/.env"
    (cd "$rdir" && ./svc.sh install "$RUNNER_USER" && ./svc.sh start)
    say changed "runner registered and started"
  fi
fi
echo "runner-setup: done"
