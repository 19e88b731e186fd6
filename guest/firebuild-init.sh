#!/.firebuild/bin/busybox sh
# firebuild's init: PID 1 of every VM firebuild boots. Runs on its own static busybox, so it works in
# images without a shell. Reads the run configuration from the config disk (/dev/vdb, read-only; a build
# step's command never sees it: unmounted before the command starts),
# prepares the system, runs the image's entrypoint as its user, forwards the stop signal, and reports the
# exit code on the console in one fixed line before powering off:
#   FIREBUILD-EXIT code=<n>
BB=/.firebuild/bin/busybox
# This shell is busybox's, built with applets preferred over PATH: `mount`, `ip`, ... below are its own
# applets, run without exec (NOFORK/NOEXEC), which matters under software emulation. The entrypoint is
# resolved against the image's PATH explicitly (resolve_cmd), so it never runs a busybox applet instead.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# mount and umount are busybox's own, always: the image's util-linux mount would record the mounts in
# /run/mount/utab, which a build step would leave in the image.
mount() { "$BB" mount "$@"; }
umount() { "$BB" umount "$@"; }

mnt() { [ -d "$3" ] || mkdir -p "$3" 2>/dev/null; mount -t "$1" "$2" "$3" 2>/dev/null; }
# An initrd (distribution kernels) has already moved /proc, /sys and /dev here: mount what is missing.
[ -e /proc/uptime ] || mnt proc proc /proc
# Kernel uptime when this init began (a builtin read, no process): reported on the start line.
read -r fb_began _ </proc/uptime 2>/dev/null || fb_began=?
[ -d /sys/kernel ] || mnt sysfs sysfs /sys
[ -b /dev/vda ] || mnt devtmpfs devtmpfs /dev
[ -d /dev/pts ] && [ -d /dev/shm ] || mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts 2>/dev/null
[ -d /.firebuild/config ] || mkdir -p /.firebuild/config
if ! mount -t ext4 -o ro /dev/vdb /.firebuild/config 2>/dev/null; then
  echo "firebuild-init: no config disk at /dev/vdb" >/dev/console
  echo "FIREBUILD-EXIT code=125" >/dev/console
  sync; poweroff -f; reboot -f
fi
# run.sh sets: FB_HOSTNAME FB_NET FB_IP FB_GW FB_DNS FB_USER FB_WORKDIR FB_STOPSIGNAL FB_SSH_USER FB_INIT
# FB_HALT FB_BUILD, and the command with `set --`.
. /.firebuild/config/run.sh
export FB_WORKDIR
# A build step (FB_BUILD=1) writes to the image's own /tmp and /run, as a Dockerfile's RUN does: an initrd
# (distribution kernels) has moved its tmpfs onto /run; that one is detached (build_run_dirs).
build_run_dirs() {
  fb_root=$(stat -c %d /)
  for d in /run /tmp; do
    [ "$(stat -c %d "$d" 2>/dev/null)" = "$fb_root" ] || [ ! -d "$d" ] || umount -l "$d" 2>/dev/null
  done
  unset fb_root
}
[ "$FB_BUILD" = 1 ] && build_run_dirs
if [ "$FB_BUILD" != 1 ]; then
  mnt tmpfs tmpfs /run
  mnt tmpfs tmpfs /tmp
  chmod 1777 /tmp
fi
# Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to this init instead of an instant reboot.
echo 0 > /proc/sys/kernel/ctrl-alt-del 2>/dev/null
# busybox's poweroff and reboot write a wtmp record (creating /var/log/wtmp): a build step's goes to a tmpfs.
halt() {
  sync
  [ "$FB_BUILD" = 1 ] && [ -d /var/log ] && mount -t tmpfs tmpfs /var/log 2>/dev/null
  if [ "$FB_HALT" = reboot ]; then reboot -f; else poweroff -f; fi
}

echo "$FB_HOSTNAME" > /proc/sys/kernel/hostname
echo "$FB_HOSTNAME" > /etc/hostname 2>/dev/null
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t%s\n' "$FB_HOSTNAME" > /etc/hosts 2>/dev/null

ip link set lo up
# FB_NET=kernel: the kernel already brought eth0 up with its address and route (ip= on its command line).
if [ "$FB_NET" != kernel ] && [ -e /sys/class/net/eth0 ]; then
  ip link set eth0 up
  if [ "$FB_NET" = static ]; then
    ip addr add "$FB_IP" dev eth0
    [ -n "$FB_GW" ] && ip route add default via "$FB_GW"
  elif [ "$FB_NET" = dhcp ]; then
    udhcpc -i eth0 -q -n -t 10 -s /.firebuild/udhcpc.sh >/dev/null 2>&1
  fi
fi
if [ -n "$FB_DNS" ]; then
  : > /etc/resolv.conf 2>/dev/null
  for ns in $FB_DNS; do echo "nameserver $ns" >> /etc/resolv.conf; done
fi

# The environment: image ENV, then --env-file files in order, then --env (the seed's order).
if [ "$FB_BUILD" != 1 ]; then
  [ -d /etc/profile.d ] || mkdir -p /etc/profile.d
  umask 077
  cat /.firebuild/config/env.sh > /etc/profile.d/run-env.sh 2>/dev/null
  umask 022
fi
# HOME comes from the image's ENV, else from /etc/passwd below (as Docker), never the kernel's HOME=/.
unset HOME
set -a
. /.firebuild/config/env.sh
set +a

if [ -n "$FB_SSH_USER" ] && [ -f /.firebuild/config/authorized_keys ]; then
  home=$(awk -F: -v u="$FB_SSH_USER" '$1 == u { print $6 }' /etc/passwd)
  if [ -n "$home" ]; then
    mkdir -p "$home/.ssh"
    cp /.firebuild/config/authorized_keys "$home/.ssh/authorized_keys"
    chown -R "$FB_SSH_USER" "$home/.ssh" 2>/dev/null
    chmod 0700 "$home/.ssh"; chmod 0600 "$home/.ssh/authorized_keys"
  fi
  for sshd in /usr/sbin/sshd /usr/bin/sshd; do
    if [ -x "$sshd" ]; then
      [ -x /usr/bin/ssh-keygen ] && /usr/bin/ssh-keygen -A >/dev/null 2>&1
      mkdir -p /run/sshd && "$sshd"
      break
    fi
  done
fi

cd "${FB_WORKDIR:-/}" 2>/dev/null || cd /

# The command's program, looked up in the image's PATH as execvp would (not among busybox's applets).
resolve_cmd() {
  case "$1" in */*) [ -x "$1" ] && echo "$1"; return ;; esac
  old_ifs=$IFS; IFS=:
  for d in $PATH; do
    if [ -f "${d:-.}/$1" ] && [ -x "${d:-.}/$1" ]; then IFS=$old_ifs; echo "${d:-.}/$1"; return 0; fi
  done
  IFS=$old_ifs
  return 1
}
# USER: by name, or by number when /etc/passwd names that number. Busybox su (no password asked of
# root) sets the uid, the user's groups and HOME; -p keeps the environment built above.
runas=
if [ -n "$FB_USER" ]; then
  u=${FB_USER%%:*}
  case "$u" in
    *[!0-9]*) runas=$u ;;
    *) runas= ;;
  esac
  # /etc/passwd read with builtins: a name must be listed, a number names its first user.
  found=
  while IFS=: read -r pw_name _ pw_uid _ _ pw_home _; do
    if [ "$pw_name" = "$runas" ] || { [ -z "$runas" ] && [ "$pw_uid" = "$u" ]; }; then found=$pw_name; break; fi
  done </etc/passwd
  runas=$found
  [ -n "$found" ] && [ -z "${HOME:-}" ] && export HOME="${pw_home:-/}"
  if [ -z "$runas" ]; then
    echo "firebuild-init: user $u not found in /etc/passwd" >/dev/console
    echo "FIREBUILD-EXIT code=126" >/dev/console; halt
  fi
  [ "$runas" = root ] && runas=
fi
[ -n "${HOME:-}" ] || export HOME=/root

# --init=image: the setup above is done; the image's own init system takes over as PID 1.
if [ "$FB_INIT" = image ]; then
  for init in /sbin/init /lib/systemd/systemd /usr/lib/systemd/systemd; do
    if [ -x "$init" ]; then
      echo "FIREBUILD-START pid=1 init=$init" >/dev/console
      exec "$init" </dev/console >/dev/console 2>&1
    fi
  done
  echo "firebuild-init: --init=image but the image has no /sbin/init" >/dev/console
  echo "FIREBUILD-EXIT code=127" >/dev/console; halt
fi

# RUN --mount=type=secret (secrets.sh: one `fb_secret N TARGET MODE UID GID ENV` a secret, its value in
# secrets/N): each value goes on a tmpfs of its own with the mode and owner asked, which is then made
# read-only and bound at the target (a missing mount point is made as a last resort: the host made those
# in the image); ENV gets the value in the command's environment. The staging mount is detached after.
secret_fail() {
  echo "firebuild-init: cannot $1 the secret at $2" >/dev/console
  echo "FIREBUILD-EXIT code=125" >/dev/console; halt
}
# RUN --mount=type=cache|bind|tmpfs (mounts.sh: one `fb_mount KIND DEV SOURCE TARGET ro|rw SIZE|file` a
# mount): an ext4 drive is mounted on a private staging directory and its SOURCE subpath bound at TARGET
# (sealed read-only for ro); a tmpfs is mounted at TARGET. Before the secrets: a secret may go inside a mount.
mount_fail() {
  echo "firebuild-init: cannot $1 the mount at $2" >/dev/console
  echo "FIREBUILD-EXIT code=125" >/dev/console; halt
}
setup_mounts() {
  fb_mstage=/dev/.firebuild-mounts
  fb_n=0
  mkdir -p -m 0700 "$fb_mstage" && mount -t tmpfs -o mode=0700,nosuid,nodev,noexec tmpfs "$fb_mstage" || mount_fail stage "$fb_mstage"
  fb_mount() {
    fb_n=$((fb_n + 1))
    if [ ! -e "$4" ] && [ ! -L "$4" ]; then
      if [ "$6" = file ]; then { [ -n "${4%/*}" ] && mkdir -p "${4%/*}"; : > "$4"; }; else mkdir -p "$4"; fi
    fi
    if [ "$1" = tmpfs ]; then
      if [ "$6" != 0 ]; then fb_o="mode=1777,size=$6"; else fb_o=mode=1777; fi
      mount -t tmpfs -o "nosuid,nodev,$fb_o" tmpfs "$4" || mount_fail mount "$4"
      return
    fi
    mkdir -p "$fb_mstage/$fb_n"
    if [ "$5" = ro ]; then fb_o=ro,noload; else fb_o=rw; fi
    mount -t ext4 -o "$fb_o" "/dev/$2" "$fb_mstage/$fb_n" || mount_fail attach "$4"
    if [ "$3" = / ]; then fb_src=$fb_mstage/$fb_n; else fb_src=$fb_mstage/$fb_n$3; fi
    mount -o bind "$fb_src" "$4" || mount_fail mount "$4"
    if [ "$5" = ro ]; then mount -o remount,bind,ro "$4" || mount_fail seal "$4"; fi
  }
  . /.firebuild/config/mounts.sh
  umount -l "$fb_mstage"; rmdir "$fb_mstage"
  unset -f fb_mount; unset fb_mstage fb_n fb_o fb_src
}
[ -f /.firebuild/config/mounts.sh ] && setup_mounts

if [ -f /.firebuild/config/secrets.sh ]; then
  fb_stage=/dev/.firebuild-secrets
  fb_secret() {
    if [ "$fb_pass" = stage ]; then
      if [ -n "$2" ]; then
        cat "/.firebuild/config/secrets/$1" > "$fb_stage/$1" && chown "$4:$5" "$fb_stage/$1" && chmod "$3" "$fb_stage/$1" || secret_fail stage "$2"
      fi
      if [ -n "$6" ]; then
        # The value exactly, trailing newlines included.
        fb_v=$(cat "/.firebuild/config/secrets/$1"; echo .) || secret_fail read "$6"
        export "$6=${fb_v%.}"
        unset fb_v
      fi
    elif [ -n "$2" ]; then
      if [ ! -e "$2" ] && [ ! -L "$2" ]; then
        [ -n "${2%/*}" ] && mkdir -p "${2%/*}"
        : > "$2"
      fi
      mount -o bind "$fb_stage/$1" "$2" || secret_fail mount "$2"
      mount -o remount,bind,ro,nosuid,nodev,noexec "$2" || secret_fail seal "$2"
    fi
  }
  mkdir -p -m 0700 "$fb_stage" && mount -t tmpfs -o mode=0700,nosuid,nodev,noexec tmpfs "$fb_stage" || secret_fail stage "$fb_stage"
  umask 077
  fb_pass=stage; . /.firebuild/config/secrets.sh
  umask 022
  mount -o remount,ro "$fb_stage" || secret_fail seal "$fb_stage"
  fb_pass=bind; . /.firebuild/config/secrets.sh
  umount -l "$fb_stage"; rmdir "$fb_stage"
  unset -f fb_secret; unset fb_pass fb_stage
fi

# RUN --mount=type=ssh (ssh.sh: one `fb_ssh_agent CHANNEL TARGET MODE UID GID` an agent) needs the compiled
# init's relay (guest/init.c setup_ssh_agent): busybox cannot pass whole agent messages over the channel.
if [ -f /.firebuild/config/ssh.sh ]; then
  echo "firebuild-init: RUN --mount=type=ssh needs firebuild's compiled guest init, which this installation lacks: install a C compiler and static libc (build-essential) and run npm run build" >/dev/console
  echo "FIREBUILD-EXIT code=125" >/dev/console; halt
fi

argv0=$1
if ! prog=$(resolve_cmd "$1"); then
  echo "firebuild-init: $1: executable file not found in \$PATH ($PATH)" >/dev/console
  echo "FIREBUILD-EXIT code=127" >/dev/console; halt
fi
shift
set -- "$prog" "$@"

# Everything is read: a build step's command never sees the config disk (nor its secrets' files).
[ "$FB_BUILD" = 1 ] && umount -l /.firebuild/config 2>/dev/null

# A build step's command writes to a pipe, as under Docker (no terminal): a FIFO opened here as fd 5 (write)
# and fd 6 (read) and unlinked before the command starts; a relay copies it to the console.
fb_pipe=
if [ "$FB_BUILD" = 1 ] && mkfifo -m 0600 /dev/.firebuild-out 2>/dev/null; then
  exec 4<>/dev/.firebuild-out
  exec 5>/dev/.firebuild-out 6</dev/.firebuild-out
  exec 4>&-
  rm -f /dev/.firebuild-out
  fb_pipe=1
fi
# argv[0] stays the name the command was given by (as docker run does), the program is the resolved path.
# Every su option before `--`: su's getopt would otherwise also parse the command's own `-c`.
if [ -z "$runas" ] && [ -n "$fb_pipe" ]; then
  (exec -a "$argv0" "$@") </dev/null >&5 2>&5 6<&- &
elif [ -z "$runas" ]; then
  (exec -a "$argv0" "$@") </dev/null >/dev/console 2>&1 &
elif [ -n "$fb_pipe" ]; then
  su -p -s /.firebuild/bin/sh -c 'cd "$FB_WORKDIR" 2>/dev/null; exec -a "$0" "$@"' -- "$runas" "$argv0" "$@" </dev/null >&5 2>&5 6<&- &
else
  su -p -s /.firebuild/bin/sh -c 'cd "$FB_WORKDIR" 2>/dev/null; exec -a "$0" "$@"' -- "$runas" "$argv0" "$@" </dev/null >/dev/console 2>&1 &
fi
child=$!
read -r fb_now _ </proc/uptime 2>/dev/null || fb_now=?
echo "FIREBUILD-START pid=$child init-began=$fb_began uptime=$fb_now" >/dev/console
relay=
if [ -n "$fb_pipe" ]; then
  cat <&6 >/dev/console 5>&- &
  relay=$!
  exec 5>&- 6<&-
fi
stop() { kill -s "${FB_STOPSIGNAL:-TERM}" "$child" 2>/dev/null; }
trap stop TERM INT
# QEMU's graceful stop: the host writes FIREBUILD-STOP to the console; this reader turns it into SIGINT.
( while read -r line; do case "$line" in *FIREBUILD-STOP*) kill -INT 1; exit 0 ;; esac; done </dev/console ) &
reader=$!
# A trap interrupts `wait` (status 128+n): wait again for the entrypoint's own status once it is gone.
while :; do
  wait "$child"; code=$?
  if ! kill -0 "$child" 2>/dev/null; then
    wait "$child" 2>/dev/null; again=$?
    [ "$again" -ne 127 ] && code=$again
    break
  fi
done
# The relay ends when every writer has gone; a daemon the command left holding the pipe gets 2 s.
if [ -n "$relay" ]; then
  ( sleep 2; kill "$relay" ) 2>/dev/null &
  fb_killer=$!
  wait "$relay" 2>/dev/null
  kill "$fb_killer" 2>/dev/null
fi
kill "$reader" 2>/dev/null
sync
echo "FIREBUILD-EXIT code=$code" >/dev/console
halt
