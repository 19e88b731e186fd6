#!/.firebuild/bin/busybox sh
# firebuild's init: PID 1 of every VM firebuild boots. Runs on its own static busybox, so it works in
# images without a shell. Reads the run configuration from the config disk (/dev/vdb, read-only),
# prepares the system, runs the image's entrypoint as its user, forwards the stop signal, and reports the
# exit code on the console in one fixed line before powering off:
#   FIREBUILD-EXIT code=<n>
BB=/.firebuild/bin/busybox
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

mnt() { $BB mkdir -p "$3" 2>/dev/null; $BB mount -t "$1" "$2" "$3" 2>/dev/null; }
mnt proc proc /proc
mnt sysfs sysfs /sys
mnt devtmpfs devtmpfs /dev
$BB mkdir -p /dev/pts /dev/shm
$BB mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts 2>/dev/null
mnt tmpfs tmpfs /run
mnt tmpfs tmpfs /tmp
$BB chmod 1777 /tmp
$BB mkdir -p /.firebuild/config
if ! $BB mount -t ext4 -o ro /dev/vdb /.firebuild/config 2>/dev/null; then
  echo "firebuild-init: no config disk at /dev/vdb" >/dev/console
  echo "FIREBUILD-EXIT code=125" >/dev/console
  $BB sync; $BB poweroff -f; $BB reboot -f
fi
# run.sh sets: FB_HOSTNAME FB_NET FB_IP FB_GW FB_DNS FB_USER FB_WORKDIR FB_STOPSIGNAL FB_SSH_USER FB_INIT
# FB_HALT, and the command with `set --`.
. /.firebuild/config/run.sh
export FB_WORKDIR
# Ctrl-Alt-Del (Firecracker's SendCtrlAltDel) becomes SIGINT to this init instead of an instant reboot.
echo 0 > /proc/sys/kernel/ctrl-alt-del 2>/dev/null
halt() { $BB sync; if [ "$FB_HALT" = reboot ]; then $BB reboot -f; else $BB poweroff -f; fi; }

$BB hostname "$FB_HOSTNAME"
echo "$FB_HOSTNAME" > /etc/hostname 2>/dev/null
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n127.0.1.1\t%s\n' "$FB_HOSTNAME" > /etc/hosts 2>/dev/null

$BB ip link set lo up
if $BB ip link show eth0 >/dev/null 2>&1; then
  $BB ip link set eth0 up
  if [ "$FB_NET" = static ]; then
    $BB ip addr add "$FB_IP" dev eth0
    [ -n "$FB_GW" ] && $BB ip route add default via "$FB_GW"
  elif [ "$FB_NET" = dhcp ]; then
    $BB udhcpc -i eth0 -q -n -t 10 -s /.firebuild/udhcpc.sh >/dev/null 2>&1
  fi
fi
if [ -n "$FB_DNS" ]; then
  : > /etc/resolv.conf 2>/dev/null
  for ns in $FB_DNS; do echo "nameserver $ns" >> /etc/resolv.conf; done
fi

# The environment: image ENV, then --env-file files in order, then --env (the seed's order).
$BB mkdir -p /etc/profile.d
$BB cp /.firebuild/config/env.sh /etc/profile.d/run-env.sh 2>/dev/null && $BB chmod 0600 /etc/profile.d/run-env.sh
set -a
. /.firebuild/config/env.sh
set +a

if [ -n "$FB_SSH_USER" ] && [ -f /.firebuild/config/authorized_keys ]; then
  home=$($BB awk -F: -v u="$FB_SSH_USER" '$1 == u { print $6 }' /etc/passwd)
  if [ -n "$home" ]; then
    $BB mkdir -p "$home/.ssh"
    $BB cp /.firebuild/config/authorized_keys "$home/.ssh/authorized_keys"
    $BB chown -R "$FB_SSH_USER" "$home/.ssh" 2>/dev/null
    $BB chmod 0700 "$home/.ssh"; $BB chmod 0600 "$home/.ssh/authorized_keys"
  fi
  for sshd in /usr/sbin/sshd /usr/bin/sshd; do
    if [ -x "$sshd" ]; then
      [ -x /usr/bin/ssh-keygen ] && /usr/bin/ssh-keygen -A >/dev/null 2>&1
      $BB mkdir -p /run/sshd && "$sshd"
      break
    fi
  done
fi

cd "${FB_WORKDIR:-/}" 2>/dev/null || cd /
# USER: by name, or by number when /etc/passwd names that number. Busybox su (no password asked of
# root) sets the uid, the user's groups and HOME; -p keeps the environment built above.
runas=
if [ -n "$FB_USER" ]; then
  u=${FB_USER%%:*}
  case "$u" in
    *[!0-9]*) runas=$u ;;
    *) runas=$($BB awk -F: -v id="$u" '$3 == id { print $1; exit }' /etc/passwd) ;;
  esac
  if [ -z "$runas" ] || ! $BB grep -q "^$runas:" /etc/passwd; then
    echo "firebuild-init: user $u not found in /etc/passwd" >/dev/console
    echo "FIREBUILD-EXIT code=126" >/dev/console; halt
  fi
  [ "$runas" = root ] && runas=
fi

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

if [ -z "$runas" ]; then
  "$@" </dev/null >/dev/console 2>&1 &
else
  $BB su -p -s /.firebuild/bin/sh "$runas" -c 'cd "$FB_WORKDIR" 2>/dev/null; exec "$@"' firebuild "$@" </dev/null >/dev/console 2>&1 &
fi
child=$!
echo "FIREBUILD-START pid=$child" >/dev/console
stop() { $BB kill -s "${FB_STOPSIGNAL:-TERM}" "$child" 2>/dev/null; }
trap stop TERM INT
# QEMU's graceful stop: the host writes FIREBUILD-STOP to the console; this reader turns it into SIGINT.
( while read -r line; do case "$line" in *FIREBUILD-STOP*) $BB kill -INT 1; exit 0 ;; esac; done </dev/console ) &
reader=$!
# A trap interrupts `wait` (status 128+n): wait again for the entrypoint's own status once it is gone.
while :; do
  wait "$child"; code=$?
  if ! $BB kill -0 "$child" 2>/dev/null; then
    wait "$child" 2>/dev/null; again=$?
    [ "$again" -ne 127 ] && code=$again
    break
  fi
done
$BB kill "$reader" 2>/dev/null
$BB sync
echo "FIREBUILD-EXIT code=$code" >/dev/console
halt
