#!/usr/bin/env bash
# Turn a Debian 12 / Ubuntu 24.04 KVM host (x86_64 or aarch64) into a firebuild GitHub Actions runner.
# Idempotent: every step checks first and says `ok:` when there is nothing to do, `changed:` when it did
# something; a second run changes nothing. --dry-run prints every step (`would:`) and touches nothing.
# Refusals are one line `runner-setup: ...`, exit 2, before anything is written. See docs/runner-setup.md.
#
#   runner-setup/setup.sh --url https://github.com/ORG/REPO --token-file FILE [options]   (as root)
#
#   --token-file F|-       the registration token, from a file or stdin (never on the command line)
#   --jitconfig-file F     --ephemeral only: a just-in-time runner config file, read at every start
#   --ephemeral            a systemd unit (Restart=always) that registers afresh and runs one job per start
#   --labels L             runner labels (default self-hosted,linux,kvm,firebuild)
#   --pool pr|release      one of two pools that never share a host: labels self-hosted,linux,kvm,firebuild-POOL
#                          (added to --labels), the marker /etc/firebuild/pool; release: the job-started hook
#                          refuses pull-request events (docs/runner-setup.md, "PR and release pools")
#   --runner-user U        the runner's user (default firebuild-runner), in group kvm only
#   --instances N          N runners on this host (default 1), each with its own user U-1..U-N, runner dir,
#                          store, run cache, port range, cgroup subtree and CNI networks; kernels shared read only
#                          (docs/runner-setup.md, "Several runners per host")
#   --port-base P          --instances > 1: instance i publishes ports P+1000(i-1) .. P+1000i-1 (default 20000)
#   --subnet-base A.B.0.0/16  --instances > 1: instance i's CNI networks take two /24s of it (default 10.217.0.0/16)
#   --with-docker          also put the runner user in group docker (root-equivalent) and install docker.io
#   --privileged-vms       Firecracker + jailer, CNI networks and a sudo rule for firebuild-priv only
#   --runner-version V     with --runner-sha256 H: this actions/runner release (default: the latest)
#   --pr-image-retention N per-PR images (pr/*) the job hooks keep per repository (default 5)
#   --allow-tcg            go on without usable KVM (VMs run under emulation, much slower)
#   --skip-packages --skip-kernel --skip-runner --skip-install   leave that step out
#   --dry-run              print every step, touch nothing
#   --root DIR             write every path under DIR (tests)
#   --kvm-device P --cpuinfo P --sys-dir D --arch A   what the KVM preflight reads (tests; default the host's)
#   --firecracker-tarball F --firecracker-sha256 H    the pinned Firecracker release (--privileged-vms)
#
# Environment (tests): RUNNER_RELEASES_API (the GitHub releases API URL of the latest release),
# RUNNER_DOWNLOAD_URL (template with {version} and {arch}), RUNNER_SETUP_SYSTEM_NODE (the distro's node).
set -euo pipefail

# GitHub refuses to register runners below this version (and jobs to runners far behind the latest).
MIN_RUNNER_VERSION=2.329.0
FIRECRACKER_VERSION=v1.10.1
FIRECRACKER_SHA256=${FIRECRACKER_SHA256:-}
RUNNER_RELEASES_API=${RUNNER_RELEASES_API:-https://api.github.com/repos/actions/runner/releases/latest}
default_download='https://github.com/actions/runner/releases/download/v{version}/actions-runner-linux-{arch}-{version}.tar.gz'
RUNNER_DOWNLOAD_URL=${RUNNER_DOWNLOAD_URL:-$default_download}

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
ROOT="" DRY=0
URL="" TOKEN_FILE="" JIT_FILE="" LABELS="self-hosted,linux,kvm,firebuild" EPHEMERAL=0 RUNNER_USER=firebuild-runner
POOL="" LABELS_GIVEN=0
RUNNER_VERSION="" RUNNER_SHA256="" WITH_DOCKER=0 PRIVILEGED=0 RETENTION=5 ALLOW_TCG=0
SKIP_PACKAGES=0 SKIP_KERNEL=0 SKIP_RUNNER=0 SKIP_INSTALL=0 FC_TARBALL=""
KVM_DEVICE=/dev/kvm CPUINFO=/proc/cpuinfo SYS_DIR=/sys ARCH=$(uname -m)
INSTANCES=1 PORT_BASE=20000 PORTS_PER_INSTANCE=1000 SUBNET_BASE=10.217.0.0/16

usage() { sed -n '2,35p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "runner-setup: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --root) ROOT=${2:?}; shift ;;
    --url) URL=${2:?}; shift ;;
    --token|--token=*) die "--token is refused: a token on the command line is visible to every user (ps, /proc); use --token-file FILE or --token-file - (stdin)" ;;
    --token-file) TOKEN_FILE=${2:?}; shift ;;
    --jitconfig-file) JIT_FILE=${2:?}; shift ;;
    --labels) LABELS=${2:?} LABELS_GIVEN=1; shift ;;
    --pool) POOL=${2:?}; shift ;;
    --ephemeral) EPHEMERAL=1 ;;
    --runner-user) RUNNER_USER=${2:?}; shift ;;
    --instances) INSTANCES=${2:?}; shift ;;
    --port-base) PORT_BASE=${2:?}; shift ;;
    --subnet-base) SUBNET_BASE=${2:?}; shift ;;
    --runner-version) RUNNER_VERSION=${2:?}; shift ;;
    --runner-sha256) RUNNER_SHA256=${2:?}; shift ;;
    --with-docker) WITH_DOCKER=1 ;;
    --privileged-vms) PRIVILEGED=1 ;;
    --pr-image-retention) RETENTION=${2:?}; shift ;;
    --allow-tcg) ALLOW_TCG=1 ;;
    --kvm-device) KVM_DEVICE=${2:?}; shift ;;
    --cpuinfo) CPUINFO=${2:?}; shift ;;
    --sys-dir) SYS_DIR=${2:?}; shift ;;
    --arch) ARCH=${2:?}; shift ;;
    --firecracker-tarball) FC_TARBALL=${2:?}; shift ;;
    --firecracker-sha256) FIRECRACKER_SHA256=${2:?}; shift ;;
    --skip-packages) SKIP_PACKAGES=1 ;;
    --skip-kernel) SKIP_KERNEL=1 ;;
    --skip-runner) SKIP_RUNNER=1 ;;
    --skip-install) SKIP_INSTALL=1 ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done

# ---------------------------------------------------------------------------------------------------
# Input checks: every refusal happens here, before anything is written.
[ "$(id -u)" = 0 ] || die "run it as root (it creates a user, installs packages and root-owned files)"
[[ "$RETENTION" =~ ^[0-9]{1,6}$ ]] || die "malformed --pr-image-retention '$RETENTION': give a number of images"
case "$POOL" in
  "") ;;
  pr|release)
    other=firebuild-pr; [ "$POOL" = release ] || other=firebuild-release
    [ "$LABELS_GIVEN" = 1 ] || LABELS=self-hosted,linux,kvm
    case ",$LABELS," in *",$other,"*|*,firebuild,*) die "--labels '$LABELS' has $other or firebuild: a --pool $POOL runner takes neither (jobs for the other pool, or for any pool, would land on it)" ;; esac
    case ",$LABELS," in *",firebuild-$POOL,"*) ;; *) LABELS="$LABELS,firebuild-$POOL" ;; esac ;;
  *) die "unknown --pool '$POOL': use pr (untrusted pull requests) or release (trusted pushes, tags and releases)" ;;
esac
[[ "$RUNNER_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "malformed --runner-user '$RUNNER_USER': a lower-case user name"
case "$ARCH" in
  x86_64|amd64) ARCH=x86_64 RUNNER_ARCH=x64 ;;
  aarch64|arm64) ARCH=aarch64 RUNNER_ARCH=arm64 ;;
  *) die "unsupported architecture '$ARCH': x86_64 and aarch64 are supported" ;;
esac
[ -z "$JIT_FILE" ] || [ "$EPHEMERAL" = 1 ] || die "--jitconfig-file needs --ephemeral (a just-in-time config registers one single-job runner)"
[ -z "$JIT_FILE" ] || [ -z "$TOKEN_FILE" ] || die "give --token-file or --jitconfig-file, not both"
[ -z "$RUNNER_SHA256" ] || [[ "$RUNNER_SHA256" =~ ^[0-9a-f]{64}$ ]] || die "malformed --runner-sha256: 64 hex digits"
[ -z "$RUNNER_VERSION" ] || [ -n "$RUNNER_SHA256" ] || die "--runner-version needs --runner-sha256 (the release notes' linux-$RUNNER_ARCH checksum)"
[ -z "$RUNNER_SHA256" ] || [ -n "$RUNNER_VERSION" ] || die "--runner-sha256 needs --runner-version"
[ -z "$RUNNER_VERSION" ] || [[ "$RUNNER_VERSION" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "malformed --runner-version '$RUNNER_VERSION': give X.Y.Z, e.g. 2.329.0"
# Several runners per host: each instance's port range and CNI subnets, checked before anything is written.
{ [[ "$INSTANCES" =~ ^[0-9]{1,2}$ ]] && [ "$INSTANCES" -ge 1 ] && [ "$INSTANCES" -le 32 ]; } || die "malformed --instances '$INSTANCES': give a number of runner instances from 1 to 32"
[ "$INSTANCES" = 1 ] || [ "${#RUNNER_USER}" -le 28 ] || die "--runner-user '$RUNNER_USER' is too long for --instances: at most 28 characters (the users are $RUNNER_USER-1 .. $RUNNER_USER-$INSTANCES)"
subnet_prefix=""
if [ "$INSTANCES" -gt 1 ]; then
  [[ "$PORT_BASE" =~ ^[0-9]{1,5}$ ]] || die "malformed --port-base '$PORT_BASE': give a port number, e.g. 20000"
  port_top=$(( PORT_BASE + INSTANCES * PORTS_PER_INSTANCE - 1 ))
  { [ "$PORT_BASE" -ge 1024 ] && [ "$port_top" -le 65535 ]; } || die "--port-base $PORT_BASE with --instances $INSTANCES gives ports $PORT_BASE-$port_top: they must lie in 1024-65535 ($PORTS_PER_INSTANCE per instance)"
  # Ports the kernel hands out to outgoing connections would be taken from under the VMs' published ports.
  eph_low="" eph_high=""
  read -r eph_low eph_high < /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  if [ -n "$eph_low" ] && [ "$PORT_BASE" -le "$eph_high" ] && [ "$eph_low" -le "$port_top" ]; then
    die "the port ranges $PORT_BASE-$port_top (--port-base $PORT_BASE, $PORTS_PER_INSTANCE per instance) overlap the kernel's ephemeral ports $eph_low-$eph_high (net.ipv4.ip_local_port_range), which outgoing connections take: pick a --port-base whose ranges end below $eph_low"
  fi
  [[ "$SUBNET_BASE" =~ ^(10\.(25[0-5]|2[0-4][0-9]|1?[0-9]?[0-9])|172\.(1[6-9]|2[0-9]|3[01])|192\.168)\.0\.0/16$ ]] \
    || die "malformed --subnet-base '$SUBNET_BASE': give a private /16 as A.B.0.0/16 (10.x, 172.16-31 or 192.168), e.g. 10.217.0.0/16; each instance takes two /24s of it"
  subnet_prefix=${SUBNET_BASE%.0.0/16}
  # A /16 the host already routes (a LAN, docker's bridges) would make the VMs' networks unreachable or worse.
  taken=$(ip -4 -o route show 2>/dev/null | awk '{print $1, $3}' | grep -E "^${subnet_prefix//./\\.}\.[0-9]+\.[0-9]+(/[0-9]+)? " | grep -vE ' (fcrun|fcbuild)[0-9]+$' | head -1 || true)
  [ -z "$taken" ] || die "--subnet-base $SUBNET_BASE overlaps the host's route ${taken%% *} (dev ${taken##* }): pick another private /16"
fi

p() { echo "$ROOT$1"; }
say() { echo "$1: $2"; }
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

runner_present() { [ -x "$rdir/config.sh" ] && [ -x "$rdir/run.sh" ]; }
registered() { [ -f "$rdir/.runner" ]; }
instance_rdir() { p "/opt/actions-runner$([ "$INSTANCES" = 1 ] || echo "-$1")"; }

# The secret (registration token or JIT config), read once, from a file or stdin; never argv.
SECRET=""
needs_secret=0 runner_missing=0
for ((i = 1; i <= INSTANCES; i++)); do
  rdir=$(instance_rdir "$i")
  if [ "$SKIP_RUNNER" = 0 ] && { [ "$EPHEMERAL" = 1 ] || ! registered; }; then needs_secret=1; fi
  runner_present || runner_missing=1
done
read_secret() {
  local f=$1 what=$2
  if [ "$f" = - ]; then SECRET=$(cat); else
    [ -r "$f" ] || die "cannot read the $what file $f"
    SECRET=$(cat "$f")
  fi
  SECRET=${SECRET%$'\n'}
  [ -n "$SECRET" ] || die "the $what from ${f/#-/stdin} is empty"
}
if [ -n "$TOKEN_FILE" ]; then read_secret "$TOKEN_FILE" "registration token"; fi
if [ -n "$JIT_FILE" ]; then read_secret "$JIT_FILE" "JIT config"; fi
if [ "$needs_secret" = 1 ] && [ "$DRY" = 0 ]; then
  if [ -z "$JIT_FILE" ] && { [ -z "$URL" ] || [ -z "$TOKEN_FILE" ]; }; then
    die "--url and --token-file are needed to register the runner (or --ephemeral --jitconfig-file, or --skip-runner)"
  fi
fi

# ---------------------------------------------------------------------------------------------------
# 1. KVM preflight, on the real host (or the paths given for tests), before anything else.
kvm_problems=()
if [ ! -e "$KVM_DEVICE" ]; then kvm_problems+=("$KVM_DEVICE is missing")
elif [ ! -c "$KVM_DEVICE" ]; then kvm_problems+=("$KVM_DEVICE is not a character device")
else
  kvm_group=$(stat -c %G "$KVM_DEVICE") kvm_mode=$(stat -c %a "$KVM_DEVICE")
  # The runner user is in group kvm only: the device must be read-write for that group (or for all).
  if ! { [ "$kvm_group" = kvm ] && [ $(( 8#$kvm_mode & 8#060 )) = $(( 8#060 )) ]; } && [ $(( 8#$kvm_mode & 8#006 )) != $(( 8#006 )) ]; then
    kvm_problems+=("$KVM_DEVICE is $(stat -c %U "$KVM_DEVICE"):$kvm_group mode $kvm_mode, not read-write for group kvm (chgrp kvm $KVM_DEVICE; chmod 660 $KVM_DEVICE; the udev rule this writes keeps it so)")
  fi
fi
if [ "$ARCH" = x86_64 ]; then
  if ! grep -qwE 'vmx|svm' "$CPUINFO" 2>/dev/null; then
    hint="the CPU shows no vmx/svm flag (virtualization off in the firmware?)"
    # A guest of a cloud hypervisor sees the flag only when the provider enables nested virtualization.
    if grep -qw hypervisor "$CPUINFO" 2>/dev/null; then hint="the CPU shows no vmx/svm flag and this host is itself a VM: enable nested virtualization for it at the cloud provider (or use a bare-metal instance)"; fi
    kvm_problems+=("$hint")
  else
    say ok "cpu virtualization ($(grep -owE 'vmx|svm' "$CPUINFO" | head -1))"
  fi
fi
for m in kvm_intel kvm_amd; do
  f=$SYS_DIR/module/$m/parameters/nested
  [ -r "$f" ] && say ok "$m nested virtualization: $(cat "$f") (VMs inside firebuild's VMs need Y; builds do not)"
done
if [ "${#kvm_problems[@]}" -gt 0 ]; then
  msg=$(printf '%s; ' "${kvm_problems[@]}"); msg=${msg%; }
  [ "$ALLOW_TCG" = 1 ] || die "no usable KVM: $msg; pass --allow-tcg to run VMs under emulation (much slower)"
  say warn "no usable KVM: $msg; going on (--allow-tcg): VMs run under TCG emulation"
else
  say ok "$KVM_DEVICE ($(stat -c '%U:%G %a' "$KVM_DEVICE"))"
fi

# ---------------------------------------------------------------------------------------------------
# 2. The OS and its package names (from $ROOT/etc/os-release).
osr() { sed -n "s/^$1=//p" "$(p /etc/os-release)" 2>/dev/null | head -1 | tr -d '"'"'"; }
OS=""
if [ "$SKIP_PACKAGES" = 0 ]; then
  os_id=$(osr ID) os_like=$(osr ID_LIKE) os_ver=$(osr VERSION_ID) os_codename=$(osr UBUNTU_CODENAME)
  if [ "$os_id" = ubuntu ] && [ "$os_ver" = 24.04 ]; then OS=ubuntu-24.04
  elif [ "$os_id" != ubuntu ] && [[ " $os_like " == *" ubuntu "* ]] && [ "$os_codename" = noble ]; then OS=ubuntu-24.04
  elif { [ "$os_id" = debian ] || { [[ " $os_like " == *" debian "* ]] && [[ " $os_like " != *" ubuntu "* ]]; }; } && [ "${os_ver%%.*}" = 12 ]; then OS=debian-12
  else die "unsupported OS '${os_id:-unknown} ${os_ver:-?}' (from $(p /etc/os-release)): Debian 12 and Ubuntu 24.04 are supported (or pass --skip-packages)"
  fi
  packages=(ca-certificates curl git tar xz-utils zstd e2fsprogs busybox-static qemu-utils slirp4netns iproute2 procps util-linux openssl nodejs npm)
  if [ "$ARCH" = x86_64 ]; then packages+=(qemu-system-x86); else packages+=(qemu-system-arm); fi
  # The actions runner's own needs (its bin/installdependencies.sh): the library names differ.
  if [ "$OS" = debian-12 ]; then packages+=(libicu72 libkrb5-3 zlib1g libssl3 liblttng-ust1)
  else packages+=(libicu74 libkrb5-3 zlib1g libssl3t64 liblttng-ust1t64); fi
  if [ "$SKIP_KERNEL" = 0 ] && [ "$ARCH" = x86_64 ]; then
    packages+=(build-essential bc bison flex libelf-dev libssl-dev)
    if [ "$OS" = debian-12 ]; then packages+=(linux-source-6.1); else packages+=(linux-source-6.8.0); fi
  fi
  [ "$PRIVILEGED" = 0 ] || packages+=(containernetworking-plugins iptables sudo)
  [ "$WITH_DOCKER" = 0 ] || packages+=(docker.io)
fi

# ---------------------------------------------------------------------------------------------------
# 3. The actions/runner release: resolved now, so a refusal comes before anything is written.
if [ "$SKIP_RUNNER" = 0 ] && [ "$runner_missing" = 1 ]; then
  if [ -z "$RUNNER_VERSION" ]; then
    release=$(curl -fsSL --max-time 60 -H 'Accept: application/vnd.github+json' "$RUNNER_RELEASES_API" 2>/dev/null) \
      || die "cannot read the latest actions/runner release from $RUNNER_RELEASES_API: pass --runner-version and --runner-sha256"
    # GitHub may escape < and > in JSON strings; the notes carry one checksum per platform between markers.
    release=$(printf '%s' "$release" | sed 's/\\u003c/</g; s/\\u003e/>/g')
    RUNNER_VERSION=$(printf '%s' "$release" | grep -oE '"tag_name" *: *"v[0-9]+\.[0-9]+\.[0-9]+"' | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1 || true)
    RUNNER_SHA256=$(printf '%s' "$release" | grep -oE "<!-- BEGIN SHA linux-$RUNNER_ARCH -->[0-9a-f]{64}<!-- END SHA linux-$RUNNER_ARCH -->" | grep -oE '[0-9a-f]{64}' | head -1 || true)
    [ -n "$RUNNER_VERSION" ] || die "the release from $RUNNER_RELEASES_API has no vX.Y.Z tag_name: pass --runner-version and --runner-sha256"
    [ -n "$RUNNER_SHA256" ] || die "the notes of actions/runner v$RUNNER_VERSION publish no linux-$RUNNER_ARCH sha256: pass --runner-version and --runner-sha256"
  fi
  version_ge "$RUNNER_VERSION" "$MIN_RUNNER_VERSION" || die "actions/runner $RUNNER_VERSION is below $MIN_RUNNER_VERSION, the oldest GitHub registers: pick a newer release (or leave --runner-version out for the latest)"
fi

# ---------------------------------------------------------------------------------------------------
# Helpers for the steps that write.
run() {
  local what=$1; shift
  if [ "$DRY" = 1 ]; then say would "$what"; return 0; fi
  "$@"
  say changed "$what"
}
# put_file PATH MODE CONTENT [OWNER]: write only when the content, mode or owner differs.
put_file() {
  local f=$1 mode=$2 content=$3 owner=${4:-0:0}
  if [ -f "$f" ] && [ "$(cat "$f")" = "$content" ] && [ "$(stat -c %a "$f")" = "$mode" ] && [ "$(stat -c %u:%g "$f")" = "$owner" ]; then say ok "$f"; return 0; fi
  if [ "$DRY" = 1 ]; then say would "write $f"; return 0; fi
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$content" > "$f.tmp.$$" && chmod "$mode" "$f.tmp.$$" && chown "$owner" "$f.tmp.$$" && mv "$f.tmp.$$" "$f"
  say changed "$f"
}
put_dir() {
  local d=$1 mode=$2 owner=${3:-0:0}
  if [ -d "$d" ] && [ "$(stat -c %a "$d")" = "$mode" ] && [ "$(stat -c %u:%g "$d")" = "$owner" ]; then say ok "$d"; return 0; fi
  run "directory $d ($mode)" install -d -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$d"
}
# put_line FILE LINE: the line is in the file (appended when missing; a line with the same KEY= replaced).
put_line() {
  local f=$1 line=$2 key=${2%%=*}
  if [ -f "$f" ] && grep -qxF -- "$line" "$f"; then say ok "$f: $key"; return 0; fi
  if [ "$DRY" = 1 ]; then say would "set $key in $f"; return 0; fi
  touch "$f"
  { grep -v "^$key=" "$f" || true; echo "$line"; } > "$f.tmp.$$" && cat "$f.tmp.$$" > "$f" && rm -f "$f.tmp.$$"
  say changed "$f: $key"
}
passwd_field() { awk -F: -v u="$1" -v f="$2" '$1 == u { print $f }' "$(p /etc/passwd)" 2>/dev/null || true; }
group_gid() { awk -F: -v g="$1" '$1 == g { print $3 }' "$(p /etc/group)" 2>/dev/null || true; }
user_groups() { { awk -F: -v u="$1" '{ n = split($4, m, ","); for (i = 1; i <= n; i++) if (m[i] == u) print $1 }' "$(p /etc/group)" 2>/dev/null || true; } | sort | paste -sd, -; }
prefix_args=(); [ -z "$ROOT" ] || prefix_args=(--prefix "$ROOT")
# One instance's names: with --instances 1 today's (no suffix); else suffixed -1..-N. The per-user parts
# (uid, gid, home) are read from the passwd file each time (the user may have been made since).
SHARED_KERNELS=/var/lib/firebuild-shared/kernels
select_instance() {
  I=$1
  SFX=""; [ "$INSTANCES" = 1 ] || SFX="-$I"
  RUSER=$RUNNER_USER$SFX
  rdir=$(instance_rdir "$I")
  priv=$(p "/usr/local/libexec/firebuild-priv$SFX")
  uid=$(passwd_field "$RUSER" 3)
  home=$(passwd_field "$RUSER" 6); home=${home:-/home/$RUSER}
  gid=$(passwd_field "$RUSER" 4)
  owner="${uid:-0}:${gid:-0}"
  # The instance's own port range, cgroup subtree and CNI networks (two /24s of --subnet-base).
  PORT_LOW=$(( PORT_BASE + (I - 1) * PORTS_PER_INSTANCE )) PORT_HIGH=$(( PORT_BASE + I * PORTS_PER_INSTANCE - 1 ))
  CGROUP_PARENT=firebuild/runner-$I
  RUN_NET=machines$SFX BUILD_NET=machine-builds$SFX RUN_BRIDGE=fcrun$I BUILD_BRIDGE=fcbuild$I
  RUN_SUBNET=$subnet_prefix.$(( 2 * (I - 1) )).0/24 BUILD_SUBNET=$subnet_prefix.$(( 2 * I - 1 )).0/24
}
# KEY=value lines of an instance's environment (its runner's .env, its hooks): none with --instances 1.
instance_env() {
  [ "$INSTANCES" = 1 ] && return 0
  cat <<EOF
FIREBUILD_HOME=$(p "$home")/.local/share/firebuild
FIREBUILD_PROFILE_CONF_DIR=$(p "$home")/.config/firebuild/profiles
FIREBUILD_PORT_RANGE=$PORT_LOW-$PORT_HIGH
FIREBUILD_CGROUP_PARENT=$CGROUP_PARENT
FIREBUILD_CNI_NETWORK_ALIASES=machines=$RUN_NET,machine-builds=$BUILD_NET
FIREBUILD_SHARED_KERNELS=$(p $SHARED_KERNELS)
EOF
}
# Temporary paths of this run, removed however it ends.
cleanup_paths=()
trap 'rm -rf "${cleanup_paths[@]}"' EXIT

# The instances and what each has of its own (printed also under --dry-run).
if [ "$INSTANCES" -gt 1 ]; then
  for ((i = 1; i <= INSTANCES; i++)); do
    select_instance "$i"
    echo "instance $I: user $RUSER, runner $rdir, store and run cache $(p "$home")/.local/share/firebuild, ports $PORT_LOW-$PORT_HIGH, cgroup $CGROUP_PARENT, CNI $RUN_NET ($RUN_BRIDGE $RUN_SUBNET) and $BUILD_NET ($BUILD_BRIDGE $BUILD_SUBNET), kernels shared from $(p $SHARED_KERNELS) (read only)"
  done
fi

# ---------------------------------------------------------------------------------------------------
# 4. Packages.
if [ "$SKIP_PACKAGES" = 1 ]; then say ok "packages (skipped)"
else
  missing=()
  for pk in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pk" 2>/dev/null | grep -q "install ok installed" || missing+=("$pk")
  done
  if [ "$DRY" = 1 ]; then say would "packages for $OS $ARCH: ${packages[*]}"
  elif [ "${#missing[@]}" = 0 ]; then say ok "packages for $OS $ARCH (${#packages[@]})"
  else
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    say changed "packages for $OS $ARCH: ${missing[*]}"
  fi
fi

# ---------------------------------------------------------------------------------------------------
# 5. The runner user: group kvm; docker only when asked (membership of docker is root on this host).
want_groups=kvm; [ "$WITH_DOCKER" = 0 ] || want_groups=docker,kvm
if [ -z "$(group_gid kvm)" ]; then run "group kvm" groupadd "${prefix_args[@]}" --system kvm; fi
if [ "$WITH_DOCKER" = 1 ] && [ -z "$(group_gid docker)" ]; then run "group docker" groupadd "${prefix_args[@]}" --system docker; fi
# Steps 5 and 6 for each instance (the loop's body is not indented, as in steps 8 and 11: it holds file contents).
for ((i = 1; i <= INSTANCES; i++)); do
select_instance "$i"
if [ -z "$uid" ]; then
  run "user $RUSER (groups $want_groups, home $home)" useradd "${prefix_args[@]}" --system --user-group --create-home --home-dir "$home" --shell /bin/bash --groups "$want_groups" "$RUSER"
  select_instance "$i"
else
  have=$(user_groups "$RUSER")
  # Converge on the wanted groups: kvm added, docker removed unless --with-docker; others kept.
  target=$( { echo "$have" | tr , '\n' | grep -vxE 'docker|kvm' || true; echo "$want_groups" | tr , '\n'; } | grep -v '^$' | sort -u | paste -sd, -)
  if [ "$have" = "$target" ]; then say ok "user $RUSER (groups $have)"
  else run "user $RUSER groups $have -> $target" usermod "${prefix_args[@]}" -G "$target" "$RUSER"; fi
fi
# Its own store, run cache and profiles: firebuild's defaults for a non-root user.
put_dir "$(p "$home")" 750 "$owner"
for d in .config .config/firebuild .config/firebuild/profiles .local .local/share .local/share/firebuild; do put_dir "$(p "$home/$d")" 700 "$owner"; done


# 6. The runner's files (before firebuild: its bundled node may be the one firebuild runs with).
if [ "$SKIP_RUNNER" = 1 ]; then say ok "runner (skipped)"
elif runner_present; then say ok "runner present in $rdir (it updates itself)"
else
  pv='{version}' pa='{arch}'; url=${RUNNER_DOWNLOAD_URL//"$pv"/$RUNNER_VERSION}; url=${url//"$pa"/$RUNNER_ARCH}
  if [ "$DRY" = 1 ]; then say would "install actions/runner $RUNNER_VERSION linux-$RUNNER_ARCH (sha256 $RUNNER_SHA256) from $url into $rdir"
  else
    mkdir -p "$(dirname "$rdir")"
    stage=$(mktemp -d "$(dirname "$rdir")/.actions-runner.XXXXXX"); cleanup_paths+=("$stage")
    curl -fsSL --max-time 600 -o "$stage/runner.tgz" "$url" || die "cannot download $url"
    echo "$RUNNER_SHA256  $stage/runner.tgz" | sha256sum -c --quiet - >/dev/null 2>&1 || die "actions/runner $RUNNER_VERSION tarball checksum mismatch: refusing it"
    mkdir "$stage/runner" && tar -xzf "$stage/runner.tgz" -C "$stage/runner"
    chown -R "$owner" "$stage/runner" && chmod 755 "$stage/runner"
    mv "$stage/runner" "$rdir"
    say changed "actions/runner $RUNNER_VERSION linux-$RUNNER_ARCH in $rdir (sha256 verified; auto-update on)"
  fi
fi
done
select_instance 1

# /dev/kvm read-write for group kvm (Debian's default; hosts that differ get it from this rule at boot).
put_file "$(p /etc/udev/rules.d/65-firebuild-kvm.rules)" 644 'KERNEL=="kvm", GROUP="kvm", MODE="0660", OPTIONS+="static_node=kvm"'

# ---------------------------------------------------------------------------------------------------
# 7. firebuild itself, root-owned, from this checkout's tracked files; `firebuild` on PATH.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
NODE="" system_node=${RUNNER_SETUP_SYSTEM_NODE:-$(command -v node || true)}
if [ -n "$system_node" ] && [ "$(node_major "$system_node")" -ge 20 ]; then NODE=$system_node
else
  for n in "$rdir/externals/node24/bin/node" "$rdir/externals/node20/bin/node"; do
    if [ -x "$n" ] && [ "$(node_major "$n")" -ge 20 ]; then NODE=$n; break; fi
  done
fi
if [ -z "$NODE" ]; then
  if [ "$DRY" = 1 ]; then NODE="$rdir/externals/node20/bin/node"; say would "run firebuild with the runner's bundled $NODE (the distro's node is older than 20)"
  else die "no Node.js >= 20: the distro's is older and the runner's bundled node is not there (leave out --skip-runner)"; fi
fi
install_dir=$(p /opt/firebuild)
if [ "$SKIP_INSTALL" = 1 ]; then
  fb_main="$repo/bin/firebuild.js"
  say ok "firebuild install (skipped: the wrapper runs the checkout $repo)"
else
  fb_main="$install_dir/bin/firebuild.js"
  git -C "$repo" rev-parse --git-dir >/dev/null 2>&1 || die "$repo is not a git checkout: clone firebuild and run this from the clone"
  # The tracked files as they are in the working tree: their fingerprint says whether to reinstall.
  source_sum=$(cd "$repo" && git ls-files -z | xargs -0 -r sha256sum 2>/dev/null | sha256sum | cut -c1-64)
  if [ "$(cat "$install_dir/.source-sha256" 2>/dev/null)" = "$source_sum" ] && [ -f "$install_dir/lib/cli/main.js" ]; then say ok "firebuild in $install_dir"
  elif [ "$DRY" = 1 ]; then say would "install firebuild from $repo into $install_dir (npm ci --ignore-scripts, npm run build, as root; node $NODE)"
  else
    npm_cli=""
    for c in "$(dirname "$NODE")/../lib/node_modules/npm/bin/npm-cli.js" /usr/share/nodejs/npm/bin/npm-cli.js /usr/lib/node_modules/npm/bin/npm-cli.js "$(readlink -f "$(command -v npm || echo /nonexistent)")"; do
      if [ -f "$c" ]; then npm_cli=$c; break; fi
    done
    [ -n "$npm_cli" ] || die "no npm found (install the npm package)"
    mkdir -p "$(dirname "$install_dir")"
    new=$(mktemp -d "$(dirname "$install_dir")/.firebuild.XXXXXX"); cleanup_paths+=("$new")
    (cd "$repo" && git ls-files -z | tar --null --ignore-failed-read -T - -cf - 2>/dev/null) | tar -C "$new" -xf - --no-same-owner
    # No dependency's install script runs as root (--ignore-scripts); the build is firebuild's own.
    (cd "$new" && PATH="$(dirname "$NODE"):$PATH" "$NODE" "$npm_cli" ci --prefer-offline --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null \
      && PATH="$(dirname "$NODE"):$PATH" "$NODE" "$npm_cli" run build --silent >/dev/null) || die "npm ci / npm run build failed in $new"
    echo "$source_sum" > "$new/.source-sha256"
    chown -R 0:0 "$new" && chmod -R go-w "$new" && chmod 755 "$new"
    rm -rf "$install_dir.old"; [ ! -e "$install_dir" ] || mv "$install_dir" "$install_dir.old"
    mv "$new" "$install_dir" && rm -rf "$install_dir.old"
    say changed "firebuild from $repo in $install_dir"
  fi
fi
fb=$(p /usr/local/bin/firebuild)
put_file "$fb" 755 "#!/bin/sh
# firebuild, installed by runner-setup. Node.js >= 20: $NODE when it is there, else the first new enough
# of the distro's and the runner's bundled ones (a runner update may replace its externals).
main=$fb_main
if [ -x $NODE ]; then exec $NODE --no-preserve-symlinks-main \"\$main\" -- \"\$@\"; fi
for n in /usr/bin/node /usr/local/bin/node $rdir/externals/node24/bin/node $rdir/externals/node20/bin/node; do
  if [ -x \"\$n\" ] && [ \"\$(\"\$n\" -p 'process.versions.node.split(\".\")[0]')\" -ge 20 ] 2>/dev/null; then exec \"\$n\" --no-preserve-symlinks-main \"\$main\" -- \"\$@\"; fi
done
echo 'firebuild: no Node.js >= 20 found (run runner-setup again)' >&2
exit 2"

# ---------------------------------------------------------------------------------------------------
# 8. What needs root, only with --privileged-vms: Firecracker and the jailer, CNI networks, cgroups,
#    all through one root-owned entry point (firebuild-priv) the runner user may sudo, nothing else.
sudoers=$(p /etc/sudoers.d/firebuild)
priv_conf=$(p /etc/firebuild/priv)
if [ "$PRIVILEGED" = 1 ]; then
  fc=$(p /usr/local/bin/firecracker) jailer=$(p /usr/local/bin/jailer)
  if [ -x "$fc" ] && [ -x "$jailer" ] && [ "$(cat "$(p /usr/local/lib/firebuild/firecracker.version)" 2>/dev/null)" = "$FIRECRACKER_VERSION" ]; then
    say ok "firecracker $FIRECRACKER_VERSION"
  elif [ "$DRY" = 1 ]; then
    say would "install firecracker and jailer $FIRECRACKER_VERSION $ARCH (sha256 ${FIRECRACKER_SHA256:-<required>})"
  else
    [ -n "$FIRECRACKER_SHA256" ] || die "no sha256 for firecracker-${FIRECRACKER_VERSION}-${ARCH}.tgz: pass --firecracker-sha256 (from the release's SHA256SUMS)"
    fctmp=$(mktemp -d); cleanup_paths+=("$fctmp")
    tarball=${FC_TARBALL:-$fctmp/firecracker.tgz}
    if [ -z "$FC_TARBALL" ]; then
      curl -fsSL -o "$tarball" "https://github.com/firecracker-microvm/firecracker/releases/download/${FIRECRACKER_VERSION}/firecracker-${FIRECRACKER_VERSION}-${ARCH}.tgz"
    fi
    echo "$FIRECRACKER_SHA256  $tarball" | sha256sum -c --quiet - >/dev/null 2>&1 || die "firecracker tarball checksum mismatch: refusing it"
    tar -xzf "$tarball" -C "$fctmp"
    install -D -m 0755 "$fctmp/release-${FIRECRACKER_VERSION}-${ARCH}/firecracker-${FIRECRACKER_VERSION}-${ARCH}" "$fc"
    install -D -m 0755 "$fctmp/release-${FIRECRACKER_VERSION}-${ARCH}/jailer-${FIRECRACKER_VERSION}-${ARCH}" "$jailer"
    install -d "$(p /usr/local/lib/firebuild)"
    echo "$FIRECRACKER_VERSION" > "$(p /usr/local/lib/firebuild/firecracker.version)"
    say changed "firecracker and jailer $FIRECRACKER_VERSION"
  fi
  for d in /var/lib/firebuild /srv/jailer; do put_dir "$(p $d)" 700; done
  put_dir "$(p /etc/firebuild)" 755
  put_dir "$priv_conf" 700
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
  sudoers_rules=""
  for ((i = 1; i <= INSTANCES; i++)); do
  select_instance "$i"
  put_dir "$(p "/var/lib/firebuild/run$SFX")" 700
  if [ "$INSTANCES" = 1 ]; then
    put_file "$(p /etc/cni/conf.d/60-machine-builds.conflist)" 644 "$(conflist machine-builds fcbuild0 192.168.128.0/24)"
    put_file "$(p /etc/cni/conf.d/61-machines.conflist)" 644 "$(conflist machines fcrun0 192.168.127.0/24)"
    instance_keys=""
  else
    # Each instance its own networks (names, bridges, /24s), port range and cgroup subtree; the kernels
    # the instances share (root's, read only) after its own.
    put_file "$(p "/etc/cni/conf.d/60-$BUILD_NET.conflist")" 644 "$(conflist "$BUILD_NET" "$BUILD_BRIDGE" "$BUILD_SUBNET")"
    put_file "$(p "/etc/cni/conf.d/61-$RUN_NET.conflist")" 644 "$(conflist "$RUN_NET" "$RUN_BRIDGE" "$RUN_SUBNET")"
    instance_keys=",
  \"port-range\": \"$PORT_LOW-$PORT_HIGH\",
  \"cgroup-parent\": \"$CGROUP_PARENT\",
  \"cni-network-aliases\": { \"machines\": \"$RUN_NET\", \"machine-builds\": \"$BUILD_NET\" }"
  fi
  shared_key=""; [ "$INSTANCES" = 1 ] || shared_key=",
    \"shared-kernel-storage-root\": \"$(p $SHARED_KERNELS)\""
  # Root's own run cache; images are read from the runner user's store (what its builds made).
  put_file "$priv_conf/privileged$SFX.json" 600 "{
  \"schema-version\": 1,
  \"name\": \"privileged\",
  \"binary-firecracker\": \"$fc\",
  \"binary-jailer\": \"$jailer\",
  \"chroot-base\": \"$(p /srv/jailer)\",
  \"run-cache\": \"$(p "/var/lib/firebuild/run$SFX")\",
  \"storage-provider\": \"directory\",
  \"storage-provider-property-string\": {
    \"rootfs-storage-root\": \"$(p "$home")/.local/share/firebuild/rootfs\",
    \"kernel-storage-root\": \"$(p "$home")/.local/share/firebuild/kernels\"$shared_key
  }$instance_keys
}"
  put_file "$priv" 755 "#!/bin/sh
# firebuild-priv: the runner user's only way to root (/etc/sudoers.d/firebuild allows this script, nothing
# else). It runs the root-owned firebuild with the root profile for the VM subcommands only, and refuses
# every flag that would let the caller choose a binary, a profile or a host file root then reads.
# FIREBUILD_ACTING_UID is the store's owner ($RUSER, uid ${uid:-?}), whoever calls this: root then
# reads that store without following a symlink and only files of that uid or root (docs/runner-setup.md).
set -eu
sub=\${1:-}
case \"\$sub\" in
  run|kill|purge|ls|inspect|logs) ;;
  *) echo \"firebuild-priv: '\$sub' is not allowed (allowed: run kill purge ls inspect logs)\" >&2; exit 2 ;;
esac
shift
# Every argument, even after --: commander takes a -- as the value of an option that needs one and
# goes on reading options after it (run --wait-http-body -- --binary-jailer X).
for a in \"\$@\"; do
  case \"\$a\" in
    --profile|--profile=*|--profile-conf-dir*|--binary-*|--chroot-base*|--run-cache*|--storage-provider*|--cni-conf-dir*|--cni-bin-dir*|--env-file*|--identity-file*|--jailer-uid*|--jailer-gid*|--tracing-*|--port-range*|--cgroup-parent*|--cni-network-alias*)
      echo \"firebuild-priv: \${a%%=*} is not allowed: the root profile $priv_conf/privileged$SFX.json decides it\" >&2; exit 2 ;;
  esac
done
[ \"\$(id -u)\" = 0 ] || { echo 'firebuild-priv: run it as sudo -n $priv' >&2; exit 2; }
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root FIREBUILD_HOME=$(p /var/lib/firebuild) FIREBUILD_ACTING_UID=${uid:-}
exec $fb \"\$sub\" --profile-conf-dir $priv_conf --profile privileged$SFX \"\$@\""
  sudoers_rules="$sudoers_rules
Defaults!$priv env_reset
$RUSER ALL=(root) NOPASSWD: $priv"
  done
  select_instance 1
  sudoers_text="# Written by firebuild's runner-setup (--privileged-vms): the runner user may run firebuild-priv as root,
# and nothing else; the script allows only firebuild's VM subcommands with the root profile.$sudoers_rules"
  if [ -f "$sudoers" ] && [ "$(cat "$sudoers")" = "$sudoers_text" ] && [ "$(stat -c %a "$sudoers")" = 440 ]; then say ok "$sudoers"
  elif [ "$DRY" = 1 ]; then say would "write $sudoers (NOPASSWD for $(p /usr/local/libexec)/firebuild-priv$([ "$INSTANCES" = 1 ] || echo '-<instance>') only)"
  else
    mkdir -p "$(dirname "$sudoers")"
    printf '%s\n' "$sudoers_text" > "$sudoers.tmp.$$"; chmod 440 "$sudoers.tmp.$$"
    # A broken sudoers file would lock root out of sudo: validate before it goes in place.
    if command -v visudo >/dev/null 2>&1 && ! visudo -cqf "$sudoers.tmp.$$" >/dev/null 2>&1; then rm -f "$sudoers.tmp.$$"; die "the sudoers rule for firebuild-priv does not validate (visudo -cf): not installed"; fi
    mv "$sudoers.tmp.$$" "$sudoers"
    say changed "$sudoers"
  fi
else
  # Unprivileged: no Firecracker, no CNI, no sudo rule (one left by an earlier --privileged-vms goes).
  privs=()
  for ((i = 1; i <= INSTANCES; i++)); do select_instance "$i"; [ ! -e "$priv" ] || privs+=("$priv"); done
  select_instance 1
  if [ -e "$sudoers" ] || [ "${#privs[@]}" -gt 0 ]; then run "remove $sudoers and ${privs[*]:-firebuild-priv} (no --privileged-vms)" rm -f "$sudoers" "${privs[@]}"
  else say ok "no sudo rule (unprivileged: QEMU, user-mode networking, the store under $home)"; fi
fi

# ---------------------------------------------------------------------------------------------------
# 9. A guest kernel in the runner user's store; with --instances > 1 one kernel for all of them, root's, in
#    a directory every instance reads (FIREBUILD_SHARED_KERNELS) and none can write.
# Run a command as the runner user (its uid may exist only under --root: setpriv needs no passwd entry).
as_runner() {
  local gids groups=(--clear-groups)
  gids=$(for g in $(user_groups "$RUSER" | tr , ' '); do group_gid "$g"; done | paste -sd, -)
  [ -z "$gids" ] || groups=(--groups="$gids")
  (export HOME="$(p "$home")" USER="$RUSER" LOGNAME="$RUSER" && exec setpriv --reuid="$uid" --regid="$gid" "${groups[@]}" -- "$@")
}
# The kernel's builder: the runner user into its store; with instances root into the shared directory.
as_builder() {
  if [ "$INSTANCES" = 1 ]; then as_runner "$@"; else (export FIREBUILD_HOME="$(dirname "$(p $SHARED_KERNELS)")" && exec "$@"); fi
}
kernel_dir=$(p "$home")/.local/share/firebuild/kernels
if [ "$INSTANCES" -gt 1 ]; then
  kernel_dir=$(p $SHARED_KERNELS)
  put_dir "$(dirname "$kernel_dir")" 755
  put_dir "$kernel_dir" 755
fi
debian_kernel() { (cd "$(dirname "$kernel_dir")" && as_builder "$fb" kernel build --id default --version 6.1); }
ubuntu_kernel() {
  # Ubuntu ships its kernel source as a .tar.bz2 in a directory: unpacked once, built out of tree.
  local src; src=$(p /var/cache/firebuild-runner/linux-source-6.8.0)
  [ -f "$src/Makefile" ] || { mkdir -p "$src" && tar -xjf /usr/src/linux-source-6.8.0/linux-source-6.8.0.tar.bz2 -C "$src" --strip-components=1; }
  (cd "$(dirname "$kernel_dir")" && as_builder "$fb" kernel build --id default --source "$src")
}
if [ "$SKIP_KERNEL" = 1 ]; then say ok "kernel (skipped)"
elif [ "$ARCH" != x86_64 ]; then say warn "no kernel built: firebuild's kernel build is x86_64 only; import one with 'firebuild kernel import' as $RUSER"
elif [ -f "$kernel_dir/default/metadata.json" ]; then say ok "kernel default"
elif [ "$OS" = ubuntu-24.04 ]; then run "kernel default (Ubuntu's linux-source-6.8.0, about 7 minutes on 2 cores)" ubuntu_kernel
else run "kernel default (Debian's linux-source-6.1, about 7 minutes on 2 cores)" debian_kernel; fi

# ---------------------------------------------------------------------------------------------------
# 10. Job hooks: before and after every job, nothing of an earlier job is left.
hooks=$(p /usr/local/libexec/firebuild)
hook_text() {
  cat <<EOF
#!/bin/bash
# firebuild's job $1 hook (ACTIONS_RUNNER_HOOK_JOB_${1^^} in $rdir/.env), written by runner-setup.
# Whatever the job left (it may have been cancelled, or a step may have escaped the runner's process
# tree): every VM firebuild owns, running or not, build VMs included, with their jails, network
# namespaces, taps and work dirs; the builds still running; per-PR images beyond the newest $RETENTION.
set -u
rc=0
EOF
  # An instance's hooks act on its own store, run cache and cgroups only, whatever the job's environment.
  instance_env | sed 's/^/export /' 
  # The release pool never runs a pull request's job, whatever labels its workflow asks for (a PR can
  # edit runs-on): a failing job-started hook fails the job before any step runs.
  if [ "$1" = started ] && [ "$POOL" = release ]; then cat <<'EOF'
case "${GITHUB_EVENT_NAME:-}" in
  pull_request|pull_request_target|pull_request_review|pull_request_review_comment)
    echo "::error title=firebuild release pool::this runner is in the release pool and refuses '$GITHUB_EVENT_NAME' jobs: run pull requests on the PR pool (runs-on: [self-hosted, linux, kvm, firebuild-pr])"
    exit 1 ;;
esac
EOF
  fi
  cat <<EOF
$fb purge --all || rc=1
$fb image prune --match 'pr/*' --keep $RETENTION >/dev/null || rc=1
EOF
  [ "$PRIVILEGED" = 0 ] || echo "sudo -n $priv purge --all || rc=1"
  echo 'exit $rc'
}
put_dir "$hooks" 755
for ((i = 1; i <= INSTANCES; i++)); do
  select_instance "$i"
  put_file "$hooks/job-started$SFX.sh" 755 "$(hook_text started)"
  put_file "$hooks/job-completed$SFX.sh" 755 "$(hook_text completed)"
done
# The pool marker: what the release workflow's first step checks (root-owned; a job cannot change it).
if [ -n "$POOL" ]; then put_dir "$(p /etc/firebuild)" 755; put_file "$(p /etc/firebuild/pool)" 644 "$POOL"
elif [ -e "$(p /etc/firebuild/pool)" ]; then run "remove $(p /etc/firebuild/pool) (no --pool)" rm -f "$(p /etc/firebuild/pool)"; fi

# ---------------------------------------------------------------------------------------------------
# 11. Registration and the service, for each instance.
for ((i = 1; i <= INSTANCES; i++)); do
select_instance "$i"
if [ "$SKIP_RUNNER" = 1 ]; then say ok "registration (skipped)"
else
  name=${RUNNER_NAME:-$(hostname -s 2>/dev/null || hostname)}$SFX
  # The hooks, in the runner's .env (read by run.sh at every start; config.sh keeps what is there).
  if runner_present || [ "$DRY" = 0 ]; then
    put_line "$rdir/.env" "ACTIONS_RUNNER_HOOK_JOB_STARTED=$hooks/job-started$SFX.sh"
    put_line "$rdir/.env" "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=$hooks/job-completed$SFX.sh"
    # An instance's jobs see its own store, run cache, port range, cgroup subtree and CNI networks.
    while IFS= read -r line; do put_line "$rdir/.env" "$line"; done < <(instance_env)
    if [ "$DRY" = 0 ]; then chown "$owner" "$rdir/.env"; fi
  else say would "set ACTIONS_RUNNER_HOOK_JOB_STARTED and ACTIONS_RUNNER_HOOK_JOB_COMPLETED$([ "$INSTANCES" = 1 ] || echo ' and the instance settings (FIREBUILD_HOME, FIREBUILD_PORT_RANGE, FIREBUILD_CGROUP_PARENT, FIREBUILD_CNI_NETWORK_ALIASES, FIREBUILD_SHARED_KERNELS)') in $rdir/.env"; fi
  if [ "$EPHEMERAL" = 1 ]; then
    # The secret in a root-only file; systemd hands it to the service (LoadCredential) at every start.
    cred_name=token; [ -z "$JIT_FILE" ] || cred_name=jitconfig
    cred=$(p /etc/firebuild/runner/$cred_name)
    put_dir "$(p /etc/firebuild)" 755
    put_dir "$(p /etc/firebuild/runner)" 700
    if [ -n "$SECRET" ]; then put_file "$cred" 600 "$SECRET"
    elif [ -f "$cred" ]; then say ok "$cred"
    else say would "write $cred (give --token-file or --jitconfig-file)"; fi
    put_file "$hooks/runner-ephemeral$SFX.sh" 755 "#!/bin/sh
# One job per start (the unit restarts it): a fresh registration, one job, exit. Started by systemd as
# $RUSER with the secret in \$CREDENTIALS_DIRECTORY; it goes to the runner in its environment
# (ACTIONS_RUNNER_INPUT_*, which the runner reads and clears), never on a command line.
set -eu
cd $rdir
cred=\${CREDENTIALS_DIRECTORY:?started without systemd credentials}
# The last job's registration is spent: start from none.
rm -f .runner .credentials .credentials_rsaparams
if [ -f \"\$cred/jitconfig\" ]; then
  ACTIONS_RUNNER_INPUT_JITCONFIG=\$(cat \"\$cred/jitconfig\"); export ACTIONS_RUNNER_INPUT_JITCONFIG
  exec ./run.sh
fi
ACTIONS_RUNNER_INPUT_TOKEN=\$(cat \"\$cred/token\"); export ACTIONS_RUNNER_INPUT_TOKEN
./config.sh --unattended --ephemeral --replace --url '$URL' --labels '$LABELS' --name \"$name-\$(date +%s)\"
unset ACTIONS_RUNNER_INPUT_TOKEN
exec ./run.sh"
    unit=$(p "/etc/systemd/system/firebuild-runner$SFX.service")
    put_file "$unit" 644 "[Unit]
Description=GitHub Actions runner for firebuild (ephemeral: one job per registration, restarted for the next)
After=network-online.target
Wants=network-online.target

[Service]
User=$RUSER
WorkingDirectory=$rdir
LoadCredential=$cred_name:$cred
ExecStartPre=$hooks/job-completed$SFX.sh
ExecStart=$hooks/runner-ephemeral$SFX.sh
Restart=always
RestartSec=5
KillSignal=SIGINT
TimeoutStopSec=5min

[Install]
WantedBy=multi-user.target"
    svc=firebuild-runner$SFX.service
    if [ -n "$ROOT" ] || ! command -v systemctl >/dev/null 2>&1; then say ok "service start (left to systemctl enable --now ${svc%.service}: no systemd here or --root)"
    elif systemctl is-enabled --quiet "$svc" 2>/dev/null; then say ok "$svc enabled"
    else run "enable and start $svc" sh -c "systemctl daemon-reload && systemctl enable --now $svc"; fi
  elif registered; then say ok "runner registered ($rdir)"
  elif [ "$DRY" = 1 ]; then say would "register the runner at ${URL:-<url>} with labels $LABELS as $RUSER (token from ${TOKEN_FILE:-<--token-file>}, passed in the environment) and install its service (svc.sh)"
  else
    (export ACTIONS_RUNNER_INPUT_TOKEN=$SECRET; cd "$rdir" && as_runner ./config.sh --unattended --url "$URL" --labels "$LABELS" --name "$name" --replace) >/dev/null \
      || die "config.sh could not register the runner at $URL (is the token valid and unexpired?)"
    (cd "$rdir" && ./svc.sh install "$RUSER" && ./svc.sh start) >/dev/null || die "svc.sh could not install the runner's service"
    say changed "runner registered at $URL and its service started"
  fi
fi
done
echo "runner-setup: done"
