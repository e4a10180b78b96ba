#!/usr/bin/env bash
# bench/profile.sh: where ollama-pool's instructions go on the keep-alive
# hot path.  `make bench-profile` runs it.
#
# Runs the daemon under valgrind --tool=callgrind in front of the nginx
# stand-in of bench/run.sh, warms it, zeroes the counters, drives it with
# wrk (50 connections, GET /api/version) for BENCH_PROFILE_SECONDS
# (default 10), stops it (callgrind writes its counts at exit) and has
# bench/profile.py sum the instructions by shared object (ollama-pool,
# libcurl, libc, libevent, ...), the share inside libcurl, and the
# costliest functions.  Instructions, not time: the
# kernel's share (the system calls) is not in it; bench/results.md has
# the system calls per request.  Writes bench/profile.md (BENCH_OUT).
#
# Needs valgrind, nginx and wrk.

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${BENCH_BUILDDIR:-$SRC}
POOL=${OLLAMA_POOL_BIN:-$BUILD/src/ollama-pool}
OUT=${BENCH_OUT:-$HERE}
PY=${PYTHON:-python3}
CONF=$HERE/conf
SECS=${BENCH_PROFILE_SECONDS:-10}
. "$HERE/lib.sh"

for tool in valgrind callgrind_control nginx wrk "$PY"; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail "$tool not found (apt-get install valgrind nginx-light wrk)"
done
[ -x "$POOL" ] || make -C "$BUILD" src/ollama-pool >/dev/null ||
	fail "make failed"

lib_init

sp=$(free_port)
ssp=$(free_port)
render "$CONF/standin-nginx.conf" "$TMP/standin.conf" PORT="$sp" \
	STATUS_PORT="$ssp"
start standin "$(command -v nginx)" -p "$TMP" -e "$TMP/standin.err" \
	-c "$TMP/standin.conf"
wait_listen "$sp" standin

pp=$(free_port)
render "$CONF/ollama-pool.conf" "$TMP/pool.conf" POOL_MAXSIZE=32 \
	POOL_CONNECTIONS=32 CA_LINE=""
start pool valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" \
	"$POOL" -c "$TMP/pool.conf" -l "127.0.0.1:$pp" -u "http://127.0.0.1:$sp"
for i in $(seq 600); do	# valgrind starts slowly
	listening "$pp" && break
	kill -0 "${PID[pool]}" 2>/dev/null ||
		fail "ollama-pool under valgrind died: $(tail -5 "$TMP/pool.log")"
	sleep 0.1
done
listening "$pp" || fail "ollama-pool under valgrind does not listen"

say "profile: warming up, then ${SECS}s of wrk with 50 connections under callgrind"
wrk -t1 -c50 -d3s "http://127.0.0.1:$pp/api/version" >/dev/null 2>&1
callgrind_control -z "${PID[pool]}" >/dev/null || fail "callgrind_control -z failed"
out=$(wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$pp/api/version" 2>&1)
req=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
# The counts are written when the daemon exits: a dump taken while the
# loop runs charges the frames still active (main, the dispatch loop)
# with everything.  Its drain and exit add a few thousand instructions.
kill -TERM "${PID[pool]}"
for i in $(seq 300); do
	kill -0 "${PID[pool]}" 2>/dev/null || break
	sleep 0.1
done
stop pool
stop standin
dump=$TMP/cg.out
[ -s "$dump" ] || fail "callgrind wrote no counts"

mkdir -p "$OUT"
"$PY" "$HERE/profile.py" "$dump" "$req" \
	"$(valgrind --version) $("$POOL" -V 2>&1 | head -n1)" >"$OUT/profile.md" ||
	fail "profile.py failed"
cat "$OUT/profile.md"
say "profile: $OUT/profile.md"
