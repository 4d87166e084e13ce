#!/bin/sh
# channels_netns.sh - the data plane across nodes behind NAT, in network namespaces.
#
# Three namespaces joined by veth pairs: "cloud" (runs the controller, which hosts
# the relay, and one producer) and two "edge" nodes whose firewall drops every inbound
# connection (only replies to connections they opened get in). A consumer on edge1
# receives from a producer on cloud and one on edge2; both routes are the tunnel
# through the relay. Mid-transfer edge1's link is cut for 10 s; afterwards every
# message must have arrived, in order per producer, exactly once.
# Namespaces, links and processes are private to this run and removed on exit, also
# on failure. Where namespaces cannot be made, the test says it skipped and why.
set -u
BUILD=${CORRAL_BUILD_DIR:-build}
NODE=$BUILD/tests/ch_netns_node
CORRAL=$BUILD/corral
COUNT=${CH_NETNS_COUNT:-1500}   # per producer, 4 KiB each
RATE=${CH_NETNS_RATE:-100}      # messages per second per producer
CUT_AT=3
CUT_FOR=10
SUITE=channels_netns

result() { echo "CORRAL-RESULT suite=$SUITE passed=$1 failed=$2 skipped=$3"; }
skip() {
    echo "  SKIPPED $SUITE: $1"
    result 0 0 1
    exit 0
}
fail() {
    echo "  FAILED $SUITE: $1"
    result 0 1 0
    exit 1
}

[ -x "$NODE" ] || fail "$NODE is not built"
[ -x "$CORRAL" ] || fail "$CORRAL is not built"
[ "$(id -u)" = 0 ] || skip "creating network namespaces needs root (uid $(id -u))"
command -v ip >/dev/null 2>&1 || skip "ip (iproute2) is not installed"
command -v iptables >/dev/null 2>&1 || skip "iptables is not installed (deploy/install-deps.sh installs it)"

sfx=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
NS_C=chc-$sfx
NS_1=che1-$sfx
NS_2=che2-$sfx
tmp=$(mktemp -d)
pids=""

cleanup() {
    for p in $pids; do kill "$p" 2>/dev/null; done
    sleep 0.2
    for p in $pids; do kill -9 "$p" 2>/dev/null; done
    for ns in $NS_C $NS_1 $NS_2; do ip netns del "$ns" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

if ! err=$(ip netns add "$NS_C" 2>&1); then
    skip "cannot create a network namespace: $err"
fi
ip netns add "$NS_1" || fail "ip netns add $NS_1"
ip netns add "$NS_2" || fail "ip netns add $NS_2"
# Background processes are started with ip netns exec itself (not through x), so
# $! is the process to kill.
x() { ns=$1; shift; ip netns exec "$ns" "$@"; }

# cloud <-> edge1 on 10.77.1.0/24, cloud <-> edge2 on 10.77.2.0/24
ip link add c1$sfx netns "$NS_C" type veth peer name e1$sfx netns "$NS_1" || fail "veth pair 1"
ip link add c2$sfx netns "$NS_C" type veth peer name e2$sfx netns "$NS_2" || fail "veth pair 2"
x "$NS_C" ip addr add 10.77.1.1/24 dev c1$sfx
x "$NS_C" ip addr add 10.77.2.1/24 dev c2$sfx
x "$NS_1" ip addr add 10.77.1.2/24 dev e1$sfx
x "$NS_2" ip addr add 10.77.2.2/24 dev e2$sfx
for ns in $NS_C $NS_1 $NS_2; do x "$ns" ip link set lo up; done
x "$NS_C" ip link set c1$sfx up
x "$NS_C" ip link set c2$sfx up
x "$NS_1" ip link set e1$sfx up
x "$NS_2" ip link set e2$sfx up
x "$NS_1" ip route add default via 10.77.1.1
x "$NS_2" ip route add default via 10.77.2.1

# The edges are behind NAT: nothing may connect in; replies to their own
# connections still arrive.
for ns in $NS_1 $NS_2; do
    x "$ns" iptables -A INPUT -i lo -j ACCEPT || fail "iptables in $ns"
    x "$ns" iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT ||
        fail "iptables conntrack in $ns"
    x "$ns" iptables -A INPUT -j DROP
done

# The relay is the controller's: the real daemon, on its own port; plaintext on a
# network address must be asked for (--insecure): this test is of routes, and
# security.sh is of TLS.
RELAY_PORT=7741
ip netns exec "$NS_C" "$CORRAL" controller --listen 0.0.0.0:$RELAY_PORT --insecure --state "$tmp/ctl" \
    2>"$tmp/relay.log" &
pids="$pids $!"

# Prove the firewall: a listener on edge1 cannot be reached from the cloud,
# while edge1 reaches the cloud's relay.
ip netns exec "$NS_1" "$NODE" relay 0.0.0.0:7742 2>/dev/null &
probe=$!
pids="$pids $probe"
sleep 0.5
tcp_ok() { x "$1" python3 -c "import socket,sys; s=socket.socket(); s.settimeout(1.5); s.connect(('$2',$3))" 2>/dev/null; }
if tcp_ok "$NS_C" 10.77.1.2 7742; then fail "edge1 accepted an inbound connection"; fi
i=0
until tcp_ok "$NS_1" 10.77.1.1 $RELAY_PORT; do
    i=$((i + 1))
    [ $i -lt 20 ] || fail "edge1 cannot reach the controller's relay: $(tail -5 "$tmp/relay.log")"
    sleep 0.25
done
kill $probe 2>/dev/null
echo "edge1 refuses inbound connections; the controller (the relay) is reachable from it"

ip netns exec "$NS_1" "$NODE" consume edge1 10.77.1.1:$RELAY_PORT act "$COUNT" "$tmp/id" >"$tmp/consume.out" 2>"$tmp/consume.log" &
cons=$!
pids="$pids $cons"
i=0
while [ ! -s "$tmp/id" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/id" ] || fail "the consumer did not start: $(cat "$tmp/consume.log")"
cid=$(cat "$tmp/id")

ip netns exec "$NS_C" "$NODE" produce cloud 127.0.0.1:$RELAY_PORT act edge1 "$cid" "$COUNT" "$RATE" >"$tmp/p1.out" 2>"$tmp/p1.log" &
p1=$!
ip netns exec "$NS_2" "$NODE" produce edge2 10.77.2.1:$RELAY_PORT act edge1 "$cid" "$COUNT" "$RATE" >"$tmp/p2.out" 2>"$tmp/p2.log" &
p2=$!
pids="$pids $p1 $p2"

sleep $CUT_AT
echo "cutting edge1's link for ${CUT_FOR} s"
x "$NS_1" ip link set e1$sfx down
sleep $CUT_FOR
x "$NS_1" ip link set e1$sfx up
x "$NS_1" ip route replace default via 10.77.1.1
echo "edge1's link is back"

wait $p1; r1=$?
wait $p2; r2=$?
wait $cons; rc=$?
cat "$tmp/p1.out" "$tmp/p2.out" "$tmp/consume.out"
if [ $r1 -ne 0 ] || [ $r2 -ne 0 ] || [ $rc -ne 0 ]; then
    echo "--- producer cloud"; tail -20 "$tmp/p1.log"
    echo "--- producer edge2"; tail -20 "$tmp/p2.log"
    echo "--- consumer"; tail -20 "$tmp/consume.log"
    echo "--- controller (relay)"; tail -20 "$tmp/relay.log"
    fail "producers exited $r1 and $r2, consumer $rc"
fi
grep -q "reconnects=[1-9]" "$tmp/p1.out" "$tmp/p2.out" || fail "no producer had to reconnect: the cut did not bite"
echo "  PASSED $SUITE: $COUNT x 2 messages through the controller's relay across a ${CUT_FOR} s cut, none lost or duplicated"
result 1 0 0
