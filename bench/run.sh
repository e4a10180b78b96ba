#!/usr/bin/env bash
# bench/run.sh: ollama-pool side by side with nginx and HAProxy (issue 7).
#
# Starts every server on loopback on free ports, runs the scenarios, stops
# everything it started, and writes bench/results.md, bench/results.png
# and the raw per-run figures bench/results-raw.tsv.  `make bench` runs it.
#
# Needs (Debian): nginx-light haproxy wrk gnuplot-nox python3-requests
# openssl iproute2 (ss) curl strace; it installs nothing itself.  Root is not needed,
# but 10,000 clients need `ulimit -n` of 12,000 or more (it is raised as
# far as the hard limit allows; with less, scenario 5 uses fewer clients
# and says so).
#
# Knobs (environment):
#   BENCH_QUICK=1        a short trial run (fewer runs, smaller loads)
#   BENCH_SCENARIOS="1 2 3 4 5 6 7 8 9 10"   which scenarios to run; the
#                        figures of the others are kept from the
#                        results-raw.tsv already in BENCH_OUT
#   BENCH_RUNS=N         runs per figure (median taken); 5, quick 2
#   BENCH_WRK_SECONDS, BENCH_LAT_SECONDS, BENCH_CALLS, BENCH_IDLE,
#   BENCH_STREAMS, BENCH_UPLOAD (size, e.g. 4g), BENCH_UPLOAD_RUNS,
#   BENCH_CURL_INFLIGHT="20 50"   the bare libcurl client's rows
#   BENCH_SYSCALL_SECONDS  the wrk run under strace -c (0: no syscall row)
#   BENCH_LOAD_MS        scenario 8's model load time (3000, quick 1000)
#   BENCH_TTFB_REQUESTS  scenario 8's requests per target (20, quick 10)
#   BENCH_BATCH          scenario 9's batch (500, quick 200)
#   BENCH_FLEET_MEMBERS  scenario 10's members (32, quick 16; at most 32,
#                        the most addresses evdns 2.1 keeps from an answer)
#   BENCH_FLEET_CONVS    scenario 10's conversations at once (1000, quick 200)
#   BENCH_FLEET_TURNS    turns of each (5)
#   BENCH_FLEET_ROUNDS   membership changes, each a removal and a join (5,
#                        quick 2)
#   BENCH_OUT=DIR        where results go (default: this directory)
#   BENCH_NICE=N         renice the bench and all it starts (e.g. -5 as
#                        root) to damp noise from other work on the machine
#   OLLAMA_POOL_BIN, FAKE_OLLAMA_BIN, BENCHTOOL_BIN, CURLBENCH_BIN
#                        prebuilt binaries

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${BENCH_BUILDDIR:-$SRC}
POOL=${OLLAMA_POOL_BIN:-$BUILD/src/ollama-pool}
FAKE=${FAKE_OLLAMA_BIN:-$BUILD/tests/fake-ollama}
BT=${BENCHTOOL_BIN:-$BUILD/bench/benchtool}
CB=${CURLBENCH_BIN:-$BUILD/bench/curlbench}
OUT=${BENCH_OUT:-$HERE}
PY=${PYTHON:-python3}
CONF=$HERE/conf
. "$HERE/lib.sh"

QUICK=${BENCH_QUICK:-0}
if [ "$QUICK" = 1 ]; then
	d_runs=2 d_wrk=2 d_lat=2 d_calls=15 d_idle=2000 d_streams=200
	d_upload=512m d_upruns=1 d_sys=1 d_load=1000 d_s8n=10 d_batch=200
	d_members=16 d_convs=200 d_rounds=2
else
	d_runs=5 d_wrk=4 d_lat=3 d_calls=30 d_idle=10000 d_streams=1000
	d_upload=4g d_upruns=3 d_sys=3 d_load=3000 d_s8n=20 d_batch=500
	d_members=32 d_convs=1000 d_rounds=5
fi
RUNS=${BENCH_RUNS:-$d_runs}
WRK_S=${BENCH_WRK_SECONDS:-$d_wrk}
LAT_S=${BENCH_LAT_SECONDS:-$d_lat}
CALLS=${BENCH_CALLS:-$d_calls}
IDLE=${BENCH_IDLE:-$d_idle}
STREAMS=${BENCH_STREAMS:-$d_streams}
UPLOAD=${BENCH_UPLOAD:-$d_upload}
UPRUNS=${BENCH_UPLOAD_RUNS:-$d_upruns}
RUNS5=$(( RUNS < 3 ? RUNS : 3 ))	# scenario 5: fresh processes each run
SCENARIOS=${BENCH_SCENARIOS:-1 2 3 4 5 6 7 8 9 10}
CURL_INFLIGHT=${BENCH_CURL_INFLIGHT:-20 50}
SYS_S=${BENCH_SYSCALL_SECONDS:-$d_sys}
LOAD_MS=${BENCH_LOAD_MS:-$d_load}
S8_N=${BENCH_TTFB_REQUESTS:-$d_s8n}
[ "$S8_N" -le 20 ] || fail "BENCH_TTFB_REQUESTS: at most 20"
S9_BATCH=${BENCH_BATCH:-$d_batch}
S9_INTER=10
S9_BUSY_MS=40
S10_MEMBERS=${BENCH_FLEET_MEMBERS:-$d_members}
S10_CONVS=${BENCH_FLEET_CONVS:-$d_convs}
S10_TURNS=${BENCH_FLEET_TURNS:-5}
S10_ROUNDS=${BENCH_FLEET_ROUNDS:-$d_rounds}
[ "$S10_MEMBERS" -ge 2 ] && [ "$S10_MEMBERS" -le 32 ] ||
	fail "BENCH_FLEET_MEMBERS: 2 to 32"
[ "$S10_ROUNDS" -le "$S10_MEMBERS" ] || fail "BENCH_FLEET_ROUNDS: at most the members"
S10_BUSY_MS=200
S10_SLOTS=64
S10_LIGHT=32	# conversations in the light-load affinity run
S10_CHURN=64	# conversations kept going during the membership changes
CLK_TCK=$(getconf CLK_TCK)

for tool in nginx haproxy wrk gnuplot openssl ss curl strace "$PY"; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail "$tool not found (apt-get install nginx-light haproxy wrk gnuplot-nox python3-requests openssl iproute2 curl strace)"
done
"$PY" -c 'import requests' 2>/dev/null || fail "python3-requests missing"
NGINX=$(command -v nginx)
HAPROXY=$(command -v haproxy)

# Build only what is missing, with the project's own make.
if [ ! -x "$POOL" ] || [ ! -x "$FAKE" ] || [ ! -x "$BT" ] || [ ! -x "$CB" ]; then
	say "building the daemon, the fake Ollama, benchtool and curlbench"
	make -C "$BUILD" src/ollama-pool tests/fake-ollama bench/benchtool \
		bench/curlbench >/dev/null || fail "make failed"
fi

# 10,000 clients plus their upstream side need descriptors.
ulimit -Hn 1048576 2>/dev/null || true	# needs root
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
if [ "$NOFILE" -lt $(( IDLE + 2000 )) ]; then
	IDLE=$(( NOFILE > 3000 ? NOFILE - 2000 : 1000 ))
	say "ulimit -n is $NOFILE: scenario 5 uses $IDLE idle clients"
fi
HAPROXY_MAXCONN=$(( IDLE + 1000 ))
# Scenario 10: benchtool holds a socket per conversation, each replica
# up to one a client and one upstream for half of them.
if [ "$NOFILE" -lt $(( S10_CONVS * 2 + 500 )) ]; then
	S10_CONVS=$(( (NOFILE - 500) / 2 ))
	say "ulimit -n is $NOFILE: scenario 10 runs $S10_CONVS conversations"
fi

if [ -n "${BENCH_NICE:-}" ]; then
	renice -n "$BENCH_NICE" -p $$ >/dev/null || say "renice $BENCH_NICE failed"
fi

lib_init
RAW=$TMP/raw.tsv
: >"$RAW"

rec() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$RAW"; }	# SCEN TARGET METRIC VALUE

# --- servers ----------------------------------------------------------------

start_standin() {	# NAME PORT STATUS_PORT
	render "$CONF/standin-nginx.conf" "$TMP/$1.conf" PORT="$2" \
		STATUS_PORT="$3"
	start "$1" "$NGINX" -p "$TMP" -e "$TMP/$1.err" -c "$TMP/$1.conf"
	wait_listen "$2" "$1"
}

# Connections the stand-in has accepted so far (stub_status), this look
# included: between two looks, a1 - a0 - 1 were opened by others.
standin_accepts() {	# STATUS_PORT
	curl -s "http://127.0.0.1:$1/" | awk 'NR == 3 { print $1 }'
}

# ollama-pool's own count of upstream connections it opened.
pool_opened() {	# PORT
	curl -s "http://127.0.0.1:$1/ollama-pool/metrics" |
		awk '$1 == "ollama_pool_upstream_connections_opened_total" { print $2 }'
}

start_nginx() {	# NAME PORT UPSTREAM_HOSTPORT SCHEME
	render "$CONF/nginx-proxy.conf" "$TMP/$1.conf" NAME="$1" PORT="$2" \
		UPSTREAM="$3" SCHEME="$4"
	start "$1" "$NGINX" -p "$TMP" -e "$TMP/$1.err" -c "$TMP/$1.conf"
	wait_listen "$2" "$1"
}

start_haproxy() {	# NAME PORT UPSTREAM_HOSTPORT NODELAY(0/1) [tls]
	local nd="" so=""
	[ "$4" = 1 ] && nd="option http-no-delay"
	[ "${5:-}" = tls ] &&
		so="ssl verify required ca-file $TMP/cert.pem verifyhost localhost sni str(localhost)"
	render "$CONF/haproxy.cfg" "$TMP/$1.conf" PORT="$2" UPSTREAM="$3" \
		NODELAY="$nd" SERVER_OPTS="$so" MAXCONN="$HAPROXY_MAXCONN"
	start "$1" "$HAPROXY" -db -f "$TMP/$1.conf"
	wait_listen "$2" "$1"
}

pids_of() {	# NAME: the process and its children (nginx's worker)
	local p=${PID[$1]}
	echo "$p" $(pgrep -P "$p" 2>/dev/null)
}

cpu_ticks() {	# NAME: utime + stime (clock ticks) over the process tree
	local p s=0 v
	for p in $(pids_of "$1"); do
		v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{ print $12 + $13 }')
		s=$(( s + ${v:-0} ))
	done
	echo "$s"
}

worker_pid() {	# NAME: the process that does the work (nginx's worker)
	local p=${PID[$1]} w
	w=$(pgrep -P "$p" 2>/dev/null | head -n1)
	echo "${w:-$p}"
}

mem_kib() {	# FIELD NAME: VmRSS or VmHWM summed over the process tree
	local p s=0 v
	for p in $(pids_of "$2"); do
		v=$(awk -v f="$1:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null)
		s=$(( s + ${v:-0} ))
	done
	echo "$s"
}

# The far upstream: fake Ollama <- nginx TLS <- relay (10 ms each way,
# first byte of a connection one round trip later).  Sets FAR_PORT.
start_far() {
	local fp tp
	make_cert
	start_fake far-fake
	fp=$FAKE_PORT
	tp=$(free_port)
	render "$CONF/nginx-tls.conf" "$TMP/far-tls.conf" PORT="$tp" \
		FAKE_PORT="$fp"
	start far-tls "$NGINX" -p "$TMP" -e "$TMP/far-tls.err" -c "$TMP/far-tls.conf"
	wait_listen "$tp" far-tls
	start far-relay "$PY" "$HERE/relay.py" --to "127.0.0.1:$tp" --delay-ms 10
	FAR_PORT=$(read_port far-relay)
	FAR_FAKE_PORT=$fp
}

stop_far() { stop far-relay; stop far-tls; stop far-fake; }

# --- helpers for the measuring clients ---------------------------------------

to_us() {	# wrk's "122.00us" / "1.20ms" / "1.00s" -> microseconds
	awk '{ v = $1 + 0; if ($1 ~ /us$/) print v; else if ($1 ~ /ms$/) print v * 1000; else if ($1 ~ /s$/) print v * 1000000; else print v }' <<<"$1"
}

wrk_run() {	# SECONDS CONNS URL [--latency] -> wrk output; checks errors
	local out
	out=$(wrk -t1 -c"$2" -d"$1s" ${4:-} "$3" 2>&1)
	if grep -qE 'Non-2xx|Socket errors' <<<"$out"; then
		say "  wrk errors against $3: $(grep -E 'Non-2xx|Socket errors' <<<"$out" | tr -s ' ')"
		echo "$out" | grep -E 'Non-2xx|Socket errors' >>"$TMP/wrk-errors"
	fi
	echo "$out"
}

kv() { tr ' ' '\n' <<<"$2" | awk -F= -v k="$1" '$1 == k { print $2 }'; }

# --- scenarios 1 and 2: the stand-in upstream ------------------------------------

# One throughput run of a target: wrk (or the bare libcurl client) for
# WRK_S seconds, with the connections the stand-in accepted meanwhile.
throughput_run() {	# TARGET
	local t=$1 a0 a1 o0 out
	a0=$(standin_accepts "$SSP")
	[ "$t" = pool ] && o0=$(pool_opened "${U[pool]}")
	case $t in
	curl*)
		out=$("$CB" -u "http://127.0.0.1:$SP/api/version" -n "${t#curl}" -d "$WRK_S") ||
			say "  curlbench $t: $out"
		rec 1 "$t" rps "$(kv rps "$out")" ;;
	*)
		out=$(wrk_run "$WRK_S" 50 "http://127.0.0.1:${U[$t]}/api/version")
		rec 1 "$t" rps "$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")" ;;
	esac
	a1=$(standin_accepts "$SSP")
	rec 1 "$t" upstream_opened $(( a1 - a0 - 1 ))
	[ "$t" = pool ] && rec 1 pool pool_opened $(( $(pool_opened "${U[pool]}") - o0 ))
}

# System calls per request: strace -c on the proxy's working process
# during one wrk run, divided by the requests wrk counted.
syscall_run() {	# TARGET
	local t=$1 pid sp out req i
	pid=$(worker_pid "$t")
	strace -c -f -o "$TMP/strace-$t" -p "$pid" 2>"$TMP/strace-$t.err" &
	sp=$!
	for i in $(seq 100); do	# it says so once it has attached
		grep -q attached "$TMP/strace-$t.err" 2>/dev/null && break
		sleep 0.05
	done
	out=$(wrk_run "$SYS_S" 50 "http://127.0.0.1:${U[$t]}/api/version")
	kill -INT "$sp"
	wait "$sp" 2>/dev/null
	for i in $(seq 50); do
		grep -q ' total$' "$TMP/strace-$t" 2>/dev/null && break
		sleep 0.1
	done
	req=$(awk '$2 == "requests" && $3 == "in" { print $1 }' <<<"$out")
	[ -n "$req" ] && [ "$req" -gt 0 ] || { say "  syscalls via $t: no requests"; return; }
	rec 1 "$t" sys_requests "$req"
	awk -v t="$t" -v n="$req" '
		/^-/ || /^%/ || NF < 5 { next }
		{ calls = $4; name = $NF
		  if (name == "total") printf "1\t%s\tsys_total\t%.3f\n", t, calls / n
		  else printf "1s\t%s\t%s\t%.3f\n", t, name, calls / n }' \
		"$TMP/strace-$t" >>"$RAW"
}

scen_local() {
	local pp np hp r t url out SP SSP
	SP=$(free_port); SSP=$(free_port); start_standin standin "$SP" "$SSP"
	pp=$(free_port); start_pool pool "$pp" "http://127.0.0.1:$SP" 32
	np=$(free_port); start_nginx nginx "$np" "127.0.0.1:$SP" http
	hp=$(free_port); start_haproxy haproxy "$hp" "127.0.0.1:$SP" 0
	declare -A U=([direct]=$SP [pool]=$pp [nginx]=$np [haproxy]=$hp)
	for t in direct pool nginx haproxy; do	# fill the pools
		wrk_run 1 50 "http://127.0.0.1:${U[$t]}/api/version" >/dev/null
	done
	if [[ " $SCENARIOS " == *" 1 "* ]]; then
		say "scenario 1: keep-alive throughput on /api/version, 50 connections, and the bare libcurl client ($CURL_INFLIGHT in flight), ${WRK_S}s x $RUNS runs"
		for r in $(seq "$RUNS"); do
			for t in direct pool nginx haproxy $(printf 'curl%s ' $CURL_INFLIGHT); do
				throughput_run "$t"
			done
		done
		if [ "$SYS_S" != 0 ]; then
			say "scenario 1: system calls per request (strace -c), ${SYS_S}s each"
			for t in pool nginx haproxy; do syscall_run "$t"; done
		fi
	fi
	if [[ " $SCENARIOS " == *" 2 "* ]]; then
		say "scenario 2: latency at one connection, ${LAT_S}s x $RUNS runs"
		for r in $(seq "$RUNS"); do
			for t in direct pool nginx haproxy; do
				out=$(wrk_run "$LAT_S" 1 "http://127.0.0.1:${U[$t]}/api/version" --latency)
				rec 2 "$t" p50_us "$(to_us "$(awk '$1 == "50%" { print $2 }' <<<"$out")")"
				rec 2 "$t" p99_us "$(to_us "$(awk '$1 == "99%" { print $2 }' <<<"$out")")"
				rec 2 "$t" rps "$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")"
			done
		done
	fi
	rec 0 pool rss_kib_after "$(mem_kib VmRSS pool)"
	stop pool; stop nginx; stop haproxy; stop standin
}

# --- scenario 3: naive clients against a far upstream -------------------------

naive() {	# URL [args] -> median ms of the calls
	"$PY" "$HERE/naive.py" --url "$1" --cert "$TMP/cert.pem" --count "$CALLS" "${@:2}" |
		tr ' ' '\n' | median
}

scen_far() {
	local pp np hp r far fake
	start_far
	[[ " $SCENARIOS " == *" 3 "* ]] &&
		say "scenario 3: naive requests.post against a TLS upstream 20 ms away, $CALLS calls x $RUNS runs"
	far=https://127.0.0.1:$FAR_PORT
	fake=http://127.0.0.1:$FAR_FAKE_PORT
	pp=$(free_port); start_pool pool "$pp" "$far" 32 "$TMP/cert.pem"
	np=$(free_port); start_nginx nginx "$np" "127.0.0.1:$FAR_PORT" https
	hp=$(free_port); start_haproxy haproxy "$hp" "127.0.0.1:$FAR_PORT" 0 tls
	[[ " $SCENARIOS " == *" 3 "* ]] && for r in $(seq "$RUNS"); do
		rec 3 direct ms "$(naive "$far" --warm "$far")"
		rec 3 session ms "$(naive "$far" --session --warm "$far")"
		rec 3 pool ms "$(naive "http://127.0.0.1:$pp" --warm "http://127.0.0.1:$pp")"
		rec 3 nginx ms "$(naive "http://127.0.0.1:$np" --warm "http://127.0.0.1:$np")"
		rec 3 haproxy ms "$(naive "http://127.0.0.1:$hp" --warm "http://127.0.0.1:$hp")"
		rec 3 local ms "$(naive "$fake" --warm "$fake")"
	done
	stop pool; stop nginx; stop haproxy

	if [[ " $SCENARIOS " == *" 7 "* ]]; then
		say "scenario 7: cold start, first call after the proxy starts, x $RUNS starts"
		local t times port
		for r in $(seq "$RUNS"); do
			for t in pool nginx haproxy; do
				port=$(free_port)
				case $t in
				pool) start_pool pool "$port" "$far" 32 "$TMP/cert.pem" ;;
				nginx) start_nginx nginx "$port" "127.0.0.1:$FAR_PORT" https ;;
				haproxy) start_haproxy haproxy "$port" "127.0.0.1:$FAR_PORT" 0 tls ;;
				esac
				# The untimed warm-up call goes to the fake directly:
				# it warms the client, not the proxy.
				times=$("$PY" "$HERE/naive.py" --url "http://127.0.0.1:$port" \
					--count 11 --warm "$fake")
				rec 7 "$t" first_ms "$(awk '{ print $1 }' <<<"$times")"
				rec 7 "$t" warm_ms "$(cut -d' ' -f2- <<<"$times" | tr ' ' '\n' | median)"
				stop "$t"
			done
		done
	fi
	stop_far
}

# --- scenario 4: streaming ------------------------------------------------------

scen_stream() {
	local tp pp np hp h0 r t out fp fpp
	say "scenario 4: 1,000 NDJSON lines 2 ms apart, x $RUNS runs"
	start ts "$BT" tsource -p 0 -n 1000 -i 2000
	tp=$(read_port ts)
	pp=$(free_port); start_pool pool "$pp" "http://127.0.0.1:$tp" 32
	np=$(free_port); start_nginx nginx "$np" "127.0.0.1:$tp" http
	hp=$(free_port); start_haproxy haproxy "$hp" "127.0.0.1:$tp" 1
	h0=$(free_port); start_haproxy haproxy0 "$h0" "127.0.0.1:$tp" 0
	declare -A U=([direct]=$tp [pool]=$pp [nginx]=$np [haproxy]=$hp [haproxy_default]=$h0)
	for r in $(seq "$RUNS"); do
		for t in direct pool nginx haproxy haproxy_default; do
			out=$("$BT" stream -c "127.0.0.1:${U[$t]}" -n 1000) ||
				{ say "  stream via $t failed"; continue; }
			for k in delay_p50_us delay_p99_us lines reads multi_line_reads max_lines_per_read; do
				rec 4 "$t" "$k" "$(kv "$k" "$out")"
			done
		done
	done
	stop pool; stop nginx; stop haproxy; stop haproxy0; stop ts
	# The same through ollama-pool with the test fake as the upstream: it
	# carries no timestamps, so this checks lines and reads only.
	start_fake s4-fake
	fp=$FAKE_PORT
	fpp=$(free_port); start_pool pool "$fpp" "http://127.0.0.1:$fp" 32
	for t in direct pool; do
		[ "$t" = direct ] && out=$("$BT" stream -c "127.0.0.1:$fp" -n 1000)
		[ "$t" = pool ] && out=$("$BT" stream -c "127.0.0.1:$fpp" -n 1000)
		for k in lines reads multi_line_reads gap_p50_us; do
			rec 4f "$t" "$k" "$(kv "$k" "$out")"
		done
	done
	stop pool; stop s4-fake
}

# --- scenario 5: connections ------------------------------------------------------

scen_conns() {
	local fp r t port out i c0 c1
	say "scenario 5: $IDLE idle keep-alive clients and $STREAMS concurrent streams, x $RUNS5 runs"
	start_fake s5-fake
	fp=$FAKE_PORT
	for r in $(seq "$RUNS5"); do
		out=$("$BT" streams -c "127.0.0.1:$fp" -n "$STREAMS" -l 40 -i 50)
		rec 5 direct streams_ok "$(kv completed "$out")"
		for t in pool nginx haproxy; do
			port=$(free_port)
			case $t in
			pool) start_pool pool "$port" "http://127.0.0.1:$fp" 1000 ;;
			nginx) start_nginx nginx "$port" "127.0.0.1:$fp" http ;;
			haproxy) start_haproxy haproxy "$port" "127.0.0.1:$fp" 1 ;;
			esac
			rec 5 "$t" rss_start_kib "$(mem_kib VmRSS "$t")"
			start idle "$BT" idle -c "127.0.0.1:$port" -n "$IDLE" -w 600
			for i in $(seq 600); do
				grep -q ready "$TMP/idle.out" 2>/dev/null && break
				kill -0 "${PID[idle]}" 2>/dev/null || break
				sleep 0.1
			done
			sleep 0.5
			out=$(cat "$TMP/idle.out")
			rec 5 "$t" idle_ok "$(kv ok "${out#ready }")"
			rec 5 "$t" rss_idle_kib "$(mem_kib VmRSS "$t")"
			stop idle
			sleep 0.5
			c0=$(cpu_ticks "$t")
			out=$("$BT" streams -c "127.0.0.1:$port" -n "$STREAMS" -l 40 -i 50)
			c1=$(cpu_ticks "$t")
			rec 5 "$t" streams_ok "$(kv completed "$out")"
			rec 5 "$t" streams_inflight "$(kv max_in_flight "$out")"
			rec 5 "$t" stream_lines "$(kv lines "$out")"
			rec 5 "$t" stream_cpu_s "$(awk -v c=$(( c1 - c0 )) -v k="$CLK_TCK" 'BEGIN { print c / k }')"
			stop "$t"
		done
	done
	stop s5-fake
}

# --- scenario 6: upload -------------------------------------------------------------

scen_upload() {
	local digest r t fp port out c0 c1
	say "scenario 6: $UPLOAD chunked blob upload into a counting sink, x $UPRUNS runs"
	# The sink reads and counts every byte and answers the count, which
	# upload checks; it hashes nothing, so the proxy is the limit.
	digest=$(printf '%064d' 0)
	start sink "$BT" sink -p 0
	fp=$(read_port sink)
	for r in $(seq "$UPRUNS"); do
		for t in direct pool nginx haproxy; do
			# A fresh proxy each time: a clean peak RSS.
			port=$fp
			if [ "$t" != direct ]; then
				port=$(free_port)
				case $t in
				pool) start_pool pool "$port" "http://127.0.0.1:$fp" 32 ;;
				nginx) start_nginx nginx "$port" "127.0.0.1:$fp" http ;;
				haproxy) start_haproxy haproxy "$port" "127.0.0.1:$fp" 0 ;;
				esac
			fi
			c0=$(cpu_ticks "${t/direct/sink}")
			out=$("$BT" upload -c "127.0.0.1:$port" -s "$UPLOAD" -d "$digest") ||
				say "  upload via $t: $out"
			c1=$(cpu_ticks "${t/direct/sink}")
			rec 6 "$t" mib_s "$(kv mib_per_s "$out")"
			rec 6 "$t" status "$(kv status "$out")"
			rec 6 "$t" received "$(kv received "$out")"
			rec 6 "$t" cpu_s "$(awk -v c=$(( c1 - c0 )) -v k="$CLK_TCK" 'BEGIN { print c / k }')"
			[ "$t" != direct ] && { rec 6 "$t" hwm_kib "$(mem_kib VmHWM "$t")"; stop "$t"; }
		done
	done
	stop sink
}

# --- scenarios 8 and 9: a fleet ----------------------------------------------------

start_pool_conf() {	# NAME PORT TEMPLATE KEY=VALUE...: ollama-pool from a template
	local name=$1 port=$2 tmpl=$3
	shift 3
	render "$tmpl" "$TMP/$name.conf" "$@"
	start "$name" "$POOL" -c "$TMP/$name.conf" -l "127.0.0.1:$port"
	wait_listen "$port" "$name"
}

# Until every backend of the pool on PORT is up with a model loaded (its
# first /api/ps probe came back): placement knows what each one has.
wait_fleet() {	# PORT BACKENDS [TOKEN]
	local i auth=()
	[ -n "${3:-}" ] && auth=(-H "Authorization: Bearer $3")
	for i in $(seq 100); do
		curl -s "${auth[@]}" "http://127.0.0.1:$1/ollama-pool/stats" | "$PY" -c '
import json, sys
b = json.load(sys.stdin)["backends"]
sys.exit(0 if len(b) == int(sys.argv[1]) and all(
    x["state"] == "up" and x["models_loaded"] for x in b) else 1)' "$2" \
			2>/dev/null && return 0
		sleep 0.05
	done
	fail "the pool on $1 has not probed its $2 backends"
}

fake_stat() {	# PORT KEY: one number from the fake's /_fake/stats
	curl -s "http://127.0.0.1:$1/_fake/stats" |
		"$PY" -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}

# Two fakes that both have m1 and m2 and hold one loaded at a time,
# fake1 with m1 loaded, fake2 with m2.  Sets F1 and F2 (their ports).
start_pair() {
	start s8-fake1 "$FAKE" -l 127.0.0.1:0 -n fake1 -T m1,m2 -P m1 \
		-D "$LOAD_MS" -M 1
	F1=$(read_port s8-fake1)
	start s8-fake2 "$FAKE" -l 127.0.0.1:0 -n fake2 -T m1,m2 -P m2 \
		-D "$LOAD_MS" -M 1
	F2=$(read_port s8-fake2)
}

stop_pair() { stop s8-fake1; stop s8-fake2; }

# Round robin sends request i where request i-2 went, so a request pays
# a load when its model differs from the one two before it.  Strictly
# alternating models keep HAProxy in phase with them (no load, or one
# per backend when it starts out of phase); requests in a mixed order (a
# fixed shuffle, 10 of each, as independent clients send them) pay one
# half the time.  The first two are the same model: one of them pays
# whichever backend round robin starts with.
S8_MIXED="m1 m1 m1 m2 m1 m2 m2 m1 m2 m2 m2 m2 m1 m2 m2 m1 m1 m1 m2 m1"

scen_fleet_ttfb() {
	local order seq t port out i k e1 e2
	say "scenario 8: time to first byte over two backends with one model loaded each (load ${LOAD_MS} ms), $S8_N sequential generates"
	for order in alt mixed; do
		if [ "$order" = alt ]; then
			seq=$(for i in $(seq "$S8_N"); do echo "m$(( 2 - i % 2 ))"; done)
		else
			seq=$(tr ' ' '\n' <<<"$S8_MIXED" | head -n "$S8_N")
		fi
		seq=$(echo $seq | tr ' ' ',')
		for t in pool haproxy; do
			start_pair	# fresh, so both targets meet the same state
			port=$(free_port)
			case $t in
			pool)
				start_pool_conf pool "$port" "$CONF/ollama-pool-fleet.conf" \
					UPSTREAM1="127.0.0.1:$F1" UPSTREAM2="127.0.0.1:$F2"
				wait_fleet "$port" 2 ;;
			haproxy)
				render "$CONF/haproxy-rr.cfg" "$TMP/haproxy.conf" \
					PORT="$port" MAXCONN="$HAPROXY_MAXCONN" \
					UPSTREAM1="127.0.0.1:$F1" UPSTREAM2="127.0.0.1:$F2"
				start haproxy "$HAPROXY" -db -f "$TMP/haproxy.conf"
				wait_listen "$port" haproxy ;;
			esac
			out=$("$BT" ttfb -c "127.0.0.1:$port" -m "$seq" -L "$LOAD_MS" \
				-w $(( LOAD_MS / 1000 * 4 + 30 ))) ||
				say "  ttfb via $t ($order): $out"
			for k in ok failed ttfb_p50_ms ttfb_p95_ms ttfb_max_ms loads; do
				rec 8 "$t" "${order}_$k" "$(kv "$k" "$out")"
			done
			e1=$(fake_stat "$F1" evictions)
			e2=$(fake_stat "$F2" evictions)
			[ -n "$e1" ] && [ -n "$e2" ] &&
				rec 8 "$t" "${order}_evictions" $(( e1 + e2 ))
			say "  $t, $order order: $(kv loads "$out") loads; TTFB ms $(kv ttfb_ms "$out")"
			stop "$t"
			stop_pair
		done
	done
}

scen_fleet_queue() {
	local t port out fp c0 c1 n k
	say "scenario 9: $S9_BATCH batch requests at once, then $S9_INTER interactive ones, one model with 4 slots, busy ${S9_BUSY_MS} ms"
	n=$(( S9_BATCH + S9_INTER ))
	for t in pool haproxy; do
		start s9-fake "$FAKE" -l 127.0.0.1:0 -T m -P m -B "$S9_BUSY_MS" -N 4
		fp=$(read_port s9-fake)
		port=$(free_port)
		case $t in
		pool)
			start_pool_conf pool "$port" "$CONF/ollama-pool-queue.conf" \
				UPSTREAM="127.0.0.1:$fp" SLOTS=4 TOKENS="tokA tokB"
			wait_fleet "$port" 1 tokA ;;
		haproxy)
			render "$CONF/haproxy-queue.cfg" "$TMP/haproxy.conf" \
				PORT="$port" MAXCONN="$HAPROXY_MAXCONN" \
				UPSTREAM="127.0.0.1:$fp" SLOTS=4
			start haproxy "$HAPROXY" -db -f "$TMP/haproxy.conf"
			wait_listen "$port" haproxy ;;
		esac
		c0=$(cpu_ticks "$t")
		out=$("$BT" queue -c "127.0.0.1:$port" -n "$S9_BATCH" -k "$S9_INTER" \
			-d 200 -m m -a tokA -b tokB -w 300) ||
			say "  queue via $t: $out"
		c1=$(cpu_ticks "$t")
		for k in batch_ok batch_failed makespan_s batch_p50_s inter_ok \
			inter_failed inter_p50_ms inter_max_ms inter_mean_ms \
			inter_first_ms inter_total_ms unfinished; do
			rec 9 "$t" "$k" "$(kv "$k" "$out")"
		done
		rec 9 "$t" cpu_us_per_req "$(awk -v c=$(( c1 - c0 )) -v k="$CLK_TCK" \
			-v n="$n" 'BEGIN { print c / k / n * 1e6 }')"
		rec 9 "$t" hwm_kib "$(mem_kib VmHWM "$t")"
		rec 9 "$t" upstream_max_concurrent "$(fake_stat "$fp" max_concurrent)"
		say "  $t: $out"
		stop "$t"
		stop s9-fake
	done
}

# --- scenario 10: a simulated fleet from DNS -----------------------------------

# Member I (1, 2, ...) of the simulated fleet: 127.0.0.(I+1), all on one
# port, as pods behind one headless Service.
member_addr() { echo "127.0.0.$(( $1 + 1 ))"; }

# Until the fake NAME printed its port (0) or died (1): a bind that
# failed, as when another process holds the port on that address.
fake_up() {	# NAME
	local i
	for i in $(seq 200); do
		[ -s "$TMP/$1.out" ] && return 0
		kill -0 "${PID[$1]}" 2>/dev/null || return 1
		sleep 0.02
	done
	return 1
}

# Members FIRST..LAST on one port, each with m loaded, each generation
# S10_BUSY_MS long.  Sets S10_PORT; a port taken somewhere is tried again
# with another, three times at most.
start_members() {	# FIRST LAST
	local try i ok
	for try in 1 2 3; do
		S10_PORT=$(free_port)
		ok=1
		for i in $(seq "$1" "$2"); do
			start "s10-m$i" "$FAKE" -l "$(member_addr "$i"):$S10_PORT" \
				-n "m$i" -T m -P m -B "$S10_BUSY_MS" -N "$S10_SLOTS"
		done
		for i in $(seq "$1" "$2"); do
			fake_up "s10-m$i" || { ok=0; break; }
		done
		[ "$ok" = 1 ] && return 0
		say "  port $S10_PORT is taken on $(member_addr "$i"): another"
		for i in $(seq "$1" "$2"); do stop "s10-m$i"; done
	done
	fail "no port free on all of 127.0.0.2 to $(member_addr "$2")"
}

# The DNS table: pods.test answers with the members named, changed at
# once (a rename) for the stand-in's next query.
s10_table() {	# MEMBER...
	local i
	for i in "$@"; do echo "pods.test $(member_addr "$i")"; done \
		>"$TMP/s10-table.new"
	mv "$TMP/s10-table.new" "$TMP/s10-table"
}

# Until the replica on PORT lists N members of pods, each up with m
# loaded: it has looked the name up and probed every member.
wait_members() {	# PORT N
	local i
	for i in $(seq 200); do
		curl -s "http://127.0.0.1:$1/ollama-pool/stats" | "$PY" -c '
import json, sys
b = json.load(sys.stdin)["backends"]
m = b[0].get("members", []) if len(b) == 1 else []
sys.exit(0 if len(m) == int(sys.argv[1]) and all(
    x["state"] == "up" and x["models_loaded"] for x in m) else 1)' "$2" \
			2>/dev/null && return 0
		sleep 0.05
	done
	fail "the replica on $1 does not list $2 members up"
}

# Model-routed requests a member has had (its fake's by_model, summed).
member_requests() {	# MEMBER
	curl -s "http://$(member_addr "$1"):$S10_PORT/_fake/stats" |
		grep -o '"by_model":{[^}]*}' | grep -o ':[0-9]*' |
		awk -F: '{ s += $2 } END { print s + 0 }'
}

now_ms() { date +%s%3N; }

# The time (ms since the epoch) of the first line of NAME's log holding
# TEXT, from the line's own time stamp; nothing when there is none.
log_ms() {	# NAME TEXT
	local t
	t=$(grep -m1 -F "$2" "$TMP/$1.log" | cut -d' ' -f1)
	[ -n "$t" ] && date -u -d "$t" +%s%3N
}

# Until both replicas' logs hold TEXT (10 s at most); the later line's
# time minus T0, in ms.
both_logged() {	# T0 TEXT
	local i a b
	for i in $(seq 1000); do
		a=$(log_ms s10-a "$2") && b=$(log_ms s10-b "$2") && {
			echo $(( (a > b ? a : b) - $1 ))
			return 0
		}
		sleep 0.01
	done
	return 1
}

# Where the fakes saw the requests tagged PREFIX<C>.<T>: requests per
# member (min, max, population stddev, mean over the members given),
# the turns after the first that reached their conversation's first
# member, conversations held by one member throughout, and tags that
# arrived more than once (an attempt retried elsewhere).
s10_placement() {	# PREFIX MEMBER...
	local p=$1 i urls=()
	shift
	for i in "$@"; do
		urls+=("http://$(member_addr "$i"):$S10_PORT/_fake/stats")
	done
	"$PY" - "$p" "${urls[@]}" <<'PYEOF'
import collections, json, statistics, sys, urllib.request
prefix, urls = sys.argv[1], sys.argv[2:]
per, turns, seen = [], collections.defaultdict(dict), collections.Counter()
for u in urls:
    arr = json.load(urllib.request.urlopen(u, timeout=10))["arrivals"]
    n = 0
    for a in arr:
        tag = a.get("tag", "")
        if not tag.startswith(prefix) or "." not in tag:
            continue
        c, t = tag[len(prefix):].split(".", 1)
        n += 1
        seen[tag] += 1
        turns[c].setdefault(int(t), u)
    per.append(n)
later = hit = whole = 0
for c, by in turns.items():
    if 1 not in by:
        continue
    same = [by[t] == by[1] for t in by if t > 1]
    later += len(same)
    hit += sum(same)
    whole += all(same)
print("spread_min=%d spread_max=%d spread_sd=%.2f spread_mean=%.2f "
      "affinity_hit=%.4f affinity_whole=%.4f conversations_seen=%d "
      "retried=%d" % (min(per), max(per), statistics.pstdev(per),
                      statistics.mean(per), hit / later if later else 0,
                      whole / len(turns) if turns else 0, len(turns),
                      sum(v - 1 for v in seen.values())))
PYEOF
}

scen_fleet_dns() {
	local m=$S10_MEMBERS pa pb out k c0 c1 n r victim newcomer t0 t1 i
	local cur gone_at=() victims=()
	say "scenario 10: $m members from DNS behind two replicas, $S10_CONVS conversations of $S10_TURNS turns at once, $S10_ROUNDS membership changes"
	: >"$TMP/s10-table"
	start s10-dns "$BT" dns -f "$TMP/s10-table"
	S10_DNS=$(read_port s10-dns)
	start_members 1 $(( m + S10_ROUNDS ))
	cur=$(seq "$m")
	s10_table $cur
	pa=$(free_port); pb=$(free_port)
	start_pool_conf s10-a "$pa" "$CONF/ollama-pool-pods.conf" \
		DNS_PORT="$S10_DNS" PORT="$S10_PORT" SLOTS="$S10_SLOTS"
	start_pool_conf s10-b "$pb" "$CONF/ollama-pool-pods.conf" \
		DNS_PORT="$S10_DNS" PORT="$S10_PORT" SLOTS="$S10_SLOTS"
	wait_members "$pa" "$m"
	wait_members "$pb" "$m"

	# Light load first: one conversation a member on average.
	out=$("$BT" fleet -c "127.0.0.1:$pa" -c "127.0.0.1:$pb" \
		-n "$S10_LIGHT" -t "$S10_TURNS" -p l -w 60) ||
		say "  light run: $out"
	rec 10 pool light_failed "$(kv failed "$out")"
	out=$(s10_placement l $cur)
	rec 10 pool light_affinity_hit "$(kv affinity_hit "$out")"
	say "  light, $S10_LIGHT conversations: $out"

	c0=$(( $(cpu_ticks s10-a) + $(cpu_ticks s10-b) ))
	out=$("$BT" fleet -c "127.0.0.1:$pa" -c "127.0.0.1:$pb" \
		-n "$S10_CONVS" -t "$S10_TURNS" -p c -w 100) ||
		say "  fleet run: $out"
	c1=$(( $(cpu_ticks s10-a) + $(cpu_ticks s10-b) ))
	say "  $out"
	for k in requests ok failed unfinished max_in_flight seconds \
		turn_p50_ms turn_p99_ms turn_max_ms; do
		rec 10 pool "$k" "$(kv "$k" "$out")"
	done
	n=$(kv requests "$out")
	rec 10 pool cpu_us_per_req "$(awk -v c=$(( c1 - c0 )) -v k="$CLK_TCK" \
		-v n="${n:-0}" 'BEGIN { print n ? c / k / n * 1e6 : "nan" }')"
	out=$(s10_placement c $cur)
	say "  placement: $out"
	for k in spread_min spread_max spread_sd spread_mean affinity_hit \
		affinity_whole retried; do
		rec 10 pool "$k" "$(kv "$k" "$out")"
	done

	# Membership changes under a steady load of new conversations: each
	# round drops the last member from the answer, then adds a new one,
	# each change at a random point of the replicas' 1 s lookup cycle.
	start s10-churn "$BT" fleet -c "127.0.0.1:$pa" -c "127.0.0.1:$pb" \
		-n "$S10_CHURN" -t 1 -p s -D 90 -w 100
	for i in $(seq 200); do
		grep -q running "$TMP/s10-churn.out" 2>/dev/null && break
		kill -0 "${PID[s10-churn]}" 2>/dev/null || break
		sleep 0.05
	done
	for r in $(seq "$S10_ROUNDS"); do
		victim=$(( m - r + 1 ))
		newcomer=$(( m + r ))
		rm_ms=— join_ms=— t1=
		sleep "0.$(printf '%03d' $(( RANDOM % 1000 )))"
		cur=$(tr ' ' '\n' <<<"$cur" | grep -vx "$victim")
		s10_table $cur
		t0=$(now_ms)
		if rm_ms=$(both_logged "$t0" "member $(member_addr "$victim") is gone"); then
			rec 10 pool remove_ms "$rm_ms"
		else
			say "  member $(member_addr "$victim") not gone after 10 s"
		fi
		victims+=("$victim")
		gone_at+=("$(member_requests "$victim")")
		sleep "0.$(printf '%03d' $(( RANDOM % 1000 )))"
		cur=$(printf '%s\n' $cur "$newcomer")
		s10_table $cur
		t0=$(now_ms)
		for i in $(seq 1000); do
			[ "$(member_requests "$newcomer")" -gt 0 ] && break
			sleep 0.01
		done
		if [ "$(member_requests "$newcomer")" -gt 0 ]; then
			join_ms=$(( $(now_ms) - t0 ))
			rec 10 pool join_ms "$join_ms"
		else
			say "  member $(member_addr "$newcomer") served nothing after 10 s"
		fi
		t1=$(both_logged "$t0" "member $(member_addr "$newcomer") joined") &&
			rec 10 pool joined_ms "$t1"
		say "  round $r: $(member_addr "$victim") gone from both replicas after $rm_ms ms, $(member_addr "$newcomer") joined both after ${t1:-—} ms, served after $join_ms ms"
	done
	stop s10-churn
	out=$(cat "$TMP/s10-churn.out" | tail -n1)
	say "  during the changes: $out"
	rec 10 pool churn_requests "$(kv requests "$out")"
	rec 10 pool churn_failed "$(kv failed "$out")"
	n=0
	for i in "${!victims[@]}"; do
		n=$(( n + $(member_requests "${victims[$i]}") - ${gone_at[$i]} ))
	done
	rec 10 pool after_gone "$n"
	rec 10 pool hwm_kib "$(( $(mem_kib VmHWM s10-a) > $(mem_kib VmHWM s10-b) ? $(mem_kib VmHWM s10-a) : $(mem_kib VmHWM s10-b) ))"
	stop s10-a; stop s10-b
	for i in $(seq $(( m + S10_ROUNDS ))); do stop "s10-m$i"; done
	stop s10-dns
}

# --- main -------------------------------------------------------------------------

T0=$(date +%s)
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
say "ollama-pool benchmarks: runs=$RUNS quick=$QUICK scenarios: $SCENARIOS (tmp $TMP)"
if [[ " $SCENARIOS " == *" 1 "* || " $SCENARIOS " == *" 2 "* ]]; then scen_local; fi
if [[ " $SCENARIOS " == *" 3 "* || " $SCENARIOS " == *" 7 "* ]]; then scen_far; fi
if [[ " $SCENARIOS " == *" 4 "* ]]; then scen_stream; fi
if [[ " $SCENARIOS " == *" 5 "* ]]; then scen_conns; fi
if [[ " $SCENARIOS " == *" 6 "* ]]; then scen_upload; fi
if [[ " $SCENARIOS " == *" 8 "* ]]; then scen_fleet_ttfb; fi
if [[ " $SCENARIOS " == *" 9 "* ]]; then scen_fleet_queue; fi
if [[ " $SCENARIOS " == *" 10 "* ]]; then scen_fleet_dns; fi
T1=$(date +%s)

mkdir -p "$OUT"
cat >"$TMP/meta" <<EOF
cores	$(nproc)
cpu	$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
date	$(date -u +%Y-%m-%dT%H:%MZ)
runs	$RUNS
runs5	$RUNS5
upruns	$UPRUNS
calls	$CALLS
idle	$IDLE
streams	$STREAMS
upload	$UPLOAD
wrk_s	$WRK_S
lat_s	$LAT_S
quick	$QUICK
nice	$(nice)
seconds	$(( T1 - T0 ))
load_before	$LOAD0
load_after	$(cut -d' ' -f1-3 /proc/loadavg)
pool_version	$("$POOL" -V 2>&1 | head -n1)
nginx_version	$("$NGINX" -v 2>&1 | head -n1)
haproxy_version	$("$HAPROXY" -v 2>&1 | head -n1 | cut -d' ' -f1-3)
wrk_version	$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2)
wrk_errors	$(cat "$TMP/wrk-errors" 2>/dev/null | wc -l)
curl_inflight	$CURL_INFLIGHT
sys_s	$SYS_S
scenarios	$SCENARIOS
load_ms	$LOAD_MS
s8_requests	$S8_N
batch	$S9_BATCH
inter	$S9_INTER
busy_ms	$S9_BUSY_MS
s10_members	$S10_MEMBERS
s10_convs	$S10_CONVS
s10_turns	$S10_TURNS
s10_rounds	$S10_ROUNDS
s10_busy_ms	$S10_BUSY_MS
s10_slots	$S10_SLOTS
s10_light	$S10_LIGHT
s10_churn	$S10_CHURN
curl_version	$("$CB" -V | cut -d" " -f1)
EOF
# results-raw.tsv: the run's settings as "#" lines, then one figure per
# line and run; report.py can remake results.md from it alone.  The
# figures of the scenarios not run this time stay, each with the settings
# of the run that made it (report.py --merge).
{
	echo "# ollama-pool bench/run.sh raw figures: scenario, target, metric, value (one line per run)"
	sed 's/^/#\t/' "$TMP/meta"
	cat "$RAW"
} >"$TMP/run-raw.tsv"
"$PY" "$HERE/report.py" --merge "$TMP/run-raw.tsv" "$OUT/results-raw.tsv" \
	"$TMP/merged-raw.tsv" || fail "merging the raw figures failed"
cp "$TMP/merged-raw.tsv" "$OUT/results-raw.tsv"
"$PY" "$HERE/report.py" "$OUT/results-raw.tsv" "$OUT/results.md" "$TMP/chart.dat" ||
	fail "report failed"
if grep -q '^"' "$TMP/chart.dat"; then
	gnuplot -e "datafile='$TMP/chart.dat'; outfile='$OUT/results.png'" \
		"$HERE/results.gp" || say "gnuplot failed: no chart"
else
	say "no chart rows in this selection of scenarios: no chart"
fi
say "done in $(( T1 - T0 )) s: $OUT/results.md $OUT/results.png"
