#!/bin/sh
# Builds net_bench (Release) and runs it between two network namespaces: vmmbench-a holds the
# device model's tap and veth0, vmmbench-b holds veth1 (the limit: the same frames over a veth
# pair). Needs root (ip netns) and /dev/net/tun. Extra arguments go to net_bench
# (--seconds S, --size N).
#   tests/vmm/bench/run-net-bench.sh [--seconds 3] [--size 1514]
set -eu
root=$(cd "$(dirname "$0")/../../.." && pwd)
build=${BUILD_DIR:-$root/build-bench}
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C "$build" net_bench
a=vmmbench-a b=vmmbench-b
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add "$a"
ip netns add "$b"
ip -n "$a" tuntap add benchtap0 mode tap vnet_hdr
ip -n "$a" link add veth0 type veth peer name veth1 netns "$b"
for l in benchtap0 veth0; do
  ip -n "$a" link set "$l" up
  echo 1 | ip netns exec "$a" tee /proc/sys/net/ipv6/conf/$l/disable_ipv6 >/dev/null
done
ip -n "$b" link set veth1 up
echo 1 | ip netns exec "$b" tee /proc/sys/net/ipv6/conf/veth1/disable_ipv6 >/dev/null
ip netns exec "$a" "$build/tests/vmm/bench/net_bench" --tap benchtap0 --veth veth0 \
  --peer-ns /run/netns/"$b" --peer veth1 "$@"
