#!/usr/bin/env bash
# Runs one example scenario with real processes in a private registry directory and prints TAP:
# each process's exit status is one test. Used by meson test (suite 'examples'), under every
# kernel profile through `abdctl emulate PROFILE --`.
#   run-example.sh SCENARIO EXAMPLES_BUILD_DIR
set -u
scenario=$1
bin=$2
export ABD_REGISTRY
ABD_REGISTRY=$(mktemp -d /dev/shm/abd-example-XXXXXX) || exit 1
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$ABD_REGISTRY"' EXIT
name="example.$scenario.$$"
n=0
fail=0
plan=()

# report WHAT WANT GOT: one TAP line.
report() {
	local what=$1 want=$2 got=$3
	n=$((n + 1))
	if [ "$got" = "$want" ]; then
		plan+=("ok $n - $what: exit $got")
	else
		plan+=("not ok $n - $what: exit $got, expected $want")
		fail=1
	fi
}
# Process output becomes TAP comments.
run_bg() { timeout 60 "$@" > >(sed -u 's/^/# /') 2>&1 & }
run_fg() { timeout 60 "$@" > >(sed -u 's/^/# /') 2>&1; }

case $scenario in
pubsub-c)
	run_bg "$bin/pubsub-subscriber" "$name" 20; sub=$!
	run_bg "$bin/pubsub-publisher" "$name" 20; pub=$!
	wait $sub; report "C subscriber got all 20 messages, then EPIPE" 0 $?
	wait $pub; report "C publisher" 0 $?
	;;
pubsub-cxx)
	run_bg "$bin/pubsub-cxx" sub "$name" 20; sub=$!
	run_bg "$bin/pubsub-cxx" pub "$name" 20; pub=$!
	wait $sub; report "C++ subscriber got all 20 messages" 0 $?
	wait $pub; report "C++ publisher" 0 $?
	# C++ and C interoperate: a C publisher, a C++ subscriber.
	run_bg "$bin/pubsub-publisher" "$name.mixed" 5; pub=$!
	run_bg "$bin/pubsub-cxx" sub "$name.mixed" 5; sub=$!
	wait $sub; report "C++ subscriber of a C publisher" 0 $?
	wait $pub; report "C publisher to a C++ subscriber" 0 $?
	# A typed service (abd::service<sample>) against the C typed-ring, both ways.
	run_bg "$bin/typed-ring" sub "$name.typed1" 500; sub=$!
	run_bg "$bin/pubsub-cxx" typed-pub "$name.typed1" 500; pub=$!
	wait $sub; report "C typed consumer of a C++ abd::service<sample> publisher" 0 $?
	wait $pub; report "C++ typed publisher" 0 $?
	run_bg "$bin/typed-ring" pub "$name.typed2" 500; pub=$!
	run_bg "$bin/pubsub-cxx" typed-sub "$name.typed2" 500; sub=$!
	wait $sub; report "C++ abd::service<sample> consumer of a C typed publisher" 0 $?
	wait $pub; report "C typed publisher" 0 $?
	;;
epoll-embed)
	run_bg "$bin/epoll-embed" "$name" 50; sub=$!
	run_bg "$bin/pubsub-publisher" "$name" 50; pub=$!
	wait $sub; report "epoll loop with the reactor fd embedded got all 50 messages" 0 $?
	wait $pub; report "publisher" 0 $?
	;;
typed)
	run_bg "$bin/typed-ring" pub "$name" 5000; pub=$!
	# Another layout of the same type is refused at open (exit 3 = EPROTOTYPE).
	run_fg "$bin/typed-ring" sub-v2 "$name"
	report "a consumer of another layout is refused with EPROTOTYPE" 3 $?
	run_fg "$bin/typed-ring" sub "$name" 5000
	report "typed consumer got 5000 samples in order, each verified" 0 $?
	wait $pub; report "typed publisher" 0 $?
	;;
latency)
	run_bg "$bin/latency" echo "$name"; echo=$!
	run_fg "$bin/latency" ping "$name" 1
	report "ping: a second of round trips through two services" 0 $?
	wait $echo; report "echo ends when the pinger leaves" 0 $?
	# A crash: the echo process is killed mid-run; the pinger notices (EPIPE), exit 4. Killed
	# once the pinger reports round trips (a fixed delay could kill it before they connect).
	"$bin/latency" echo "$name.kill" > >(sed -u 's/^/# /') 2>&1 & echo=$! # no timeout wrapper: kill it
	pingout=$(mktemp)
	timeout 60 "$bin/latency" ping "$name.kill" 0 > >(tee "$pingout" | sed -u 's/^/# /') 2>&1 & ping=$!
	for _ in $(seq 300); do
		grep -q 'round trips/s' "$pingout" && break
		sleep 0.1
	done
	kill -9 $echo
	wait $ping; report "ping notices the killed echo process (EPIPE)" 4 $?
	rm -f "$pingout"
	;;
camera)
	# tools/examples/camera.c: 4 MiB frames broadcast in place to three subscribers of
	# different speeds; one of them is killed mid-run and costs the others nothing.
	run_bg "$bin/camera" sub "$name" 0 200; fast=$!
	run_bg "$bin/camera" sub "$name" 30 200; slow=$!
	"$bin/camera" sub "$name" 2 > >(sed -u 's/^/# /') 2>&1 & doomed=$! # no timeout wrapper: kill it
	run_bg "$bin/camera" pub "$name" 200 3; pub=$!
	sleep 1
	kill -9 $doomed
	{ wait $doomed; } 2>/dev/null; report "the subscriber killed mid-run" 137 $?
	wait $pub; report "camera published 200 frames of 4 MiB, never held back" 0 $?
	wait $fast; report "fast subscriber: frames intact, received + lost = 200" 0 $?
	wait $slow; report "slow subscriber: frames intact, received + lost = 200" 0 $?
	;;
rpc)
	# tools/examples/rpc-calc.c: three callers, 4 calls in flight each, of one server; then a
	# server killed while a caller waits: the caller gets EPIPE at once (exit 4).
	run_bg "$bin/rpc-calc" serve "$name" 300; srv=$!
	run_bg "$bin/rpc-calc" call "$name" 100; c1=$!
	run_bg "$bin/rpc-calc" call "$name" 100; c2=$!
	run_bg "$bin/rpc-calc" call "$name" 100; c3=$!
	wait $c1; report "caller 1: 100 answers, each its own" 0 $?
	wait $c2; report "caller 2: 100 answers, each its own" 0 $?
	wait $c3; report "caller 3: 100 answers, each its own" 0 $?
	wait $srv; report "server answered 300 calls and withdrew" 0 $?
	"$bin/rpc-calc" serve "$name.kill" 0 > >(sed -u 's/^/# /') 2>&1 & srv=$! # no timeout wrapper: kill it
	callout=$(mktemp)
	timeout 60 "$bin/rpc-calc" call "$name.kill" 0 > >(tee "$callout" | sed -u 's/^/# /') 2>&1 & cl=$!
	for _ in $(seq 300); do
		grep -q 'calls answered' "$callout" && break
		sleep 0.1
	done
	kill -9 $srv
	wait $cl; report "the caller notices the killed server (EPIPE)" 4 $?
	rm -f "$callout"
	;;
pubsub-python)
	# tools/examples/pubsub.py (PYTHONPATH and ABD_LIBRARY: set by meson) with itself and C.
	py=${ABD_PYTHON:-python3}
	src=$(dirname "$0")
	out=$(mktemp)
	# A mixed pair starts its C side once the Python side is up: an interpreter may take
	# seconds to start (ci/vm's emulated CPU), and the C programs wait 10 s for their peer.
	start_py() { # start_py TEXT ARGS...: run pubsub.py ARGS in the background, wait for TEXT
		local text=$1; shift
		: >"$out"
		timeout 60 "$py" "$src/pubsub.py" "$@" > >(tee -a "$out" | sed -u 's/^/# /') 2>&1 &
		pypid=$!
		for _ in $(seq 600); do
			grep -q "$text" "$out" && break
			sleep 0.1
		done
	}
	run_bg "$py" "$src/pubsub.py" sub "$name" 20; sub=$!
	run_bg "$py" "$src/pubsub.py" pub "$name" 20; pub=$!
	wait $sub; report "Python asyncio subscriber got all 20 messages, then EPIPE" 0 $?
	wait $pub; report "Python publisher" 0 $?
	start_py "waiting for" sub "$name.c-pub" 7; sub=$pypid
	run_bg "$bin/pubsub-publisher" "$name.c-pub" 7; pub=$!
	wait $sub; report "Python subscriber of a C publisher" 0 $?
	wait $pub; report "C publisher to a Python subscriber" 0 $?
	start_py "published" pub "$name.py-pub" 7; pub=$pypid
	run_bg "$bin/pubsub-subscriber" "$name.py-pub" 7; sub=$!
	wait $sub; report "C subscriber of a Python publisher" 0 $?
	wait $pub; report "Python publisher to a C subscriber" 0 $?
	rm -f "$out"
	;;
*)
	echo "Bail out! unknown scenario $scenario"
	exit 1
	;;
esac

echo "1..$n"
printf '%s\n' "${plan[@]}"
exit $fail
