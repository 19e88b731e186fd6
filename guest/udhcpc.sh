#!/.firebuild/bin/busybox sh
# udhcpc hook: apply the lease to eth0 and /etc/resolv.conf.
BB=/.firebuild/bin/busybox
case "$1" in
  bound|renew)
    $BB ip addr flush dev "$interface"
    $BB ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && $BB ip route add default via "${router%% *}" dev "$interface"
    if [ -n "$dns" ]; then : > /etc/resolv.conf; for ns in $dns; do echo "nameserver $ns" >> /etc/resolv.conf; done; fi
    ;;
esac
