# bench/lib.sh: shell helpers shared by run.sh and demo.sh (sourced).
#
# The caller sets PY (python3), POOL and FAKE (binaries) and CONF (the
# templates); lib_init makes the scratch directory $TMP and arranges for
# every process started with `start` to be stopped on exit.

declare -A PID

lib_init() {
	TMP=$(mktemp -d /tmp/ollama-pool-bench.XXXXXX)
	trap cleanup EXIT
	trap 'exit 130' INT TERM
}

say() { printf '%s  %s\n' "$(date +%T)" "$*" >&2; }

fail() { say "FATAL: $*"; exit 1; }

start() {	# NAME CMD...: background, output in $TMP/NAME.{out,log}
	local name=$1
	shift
	# One process per name: a NAME still running is stopped first.  The
	# last one's output goes before the new process opens its own (in
	# the background), so read_port cannot read the old port.
	stop "$name"
	rm -f "$TMP/$name.out" "$TMP/$name.log"
	"$@" >"$TMP/$name.out" 2>"$TMP/$name.log" </dev/null &
	PID[$name]=$!
}

stop() {	# NAME: TERM (twice, for a draining ollama-pool), then KILL
	local name=$1 p kids i
	p=${PID[$name]:-}
	[ -n "$p" ] || return 0
	kids=$(pgrep -P "$p" 2>/dev/null | tr '\n' ' ')
	kill -TERM "$p" 2>/dev/null
	for i in $(seq 30); do
		kill -0 "$p" 2>/dev/null || break
		[ "$i" = 10 ] && kill -TERM "$p" 2>/dev/null
		sleep 0.1
	done
	kill -KILL "$p" $kids 2>/dev/null
	wait "$p" 2>/dev/null
	unset "PID[$name]"
}

cleanup() {
	local n
	for n in "${!PID[@]}"; do stop "$n"; done
	rm -rf "$TMP"
}

free_port() {
	"$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

listening() { [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

wait_listen() {	# PORT NAME
	local i
	for i in $(seq 100); do
		listening "$1" && return 0
		kill -0 "${PID[$2]}" 2>/dev/null ||
			fail "$2 died: $(tail -5 "$TMP/$2.log")"
		sleep 0.05
	done
	fail "$2 is not listening on $1: $(tail -5 "$TMP/$2.log")"
}

read_port() {	# NAME: the port a server printed on its first line
	local i p
	for i in $(seq 100); do
		p=$(head -n1 "$TMP/$1.out" 2>/dev/null)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.05
	done
	fail "$1 printed no port: $(tail -5 "$TMP/$1.log")"
}

render() {	# TEMPLATE OUT KEY=VALUE...
	local tmpl=$1 out=$2 kv args=()
	shift 2
	for kv in TMP="$TMP" "$@"; do
		args+=(-e "s|@${kv%%=*}@|${kv#*=}|g")
	done
	sed "${args[@]}" "$tmpl" >"$out"
}

start_fake() {	# NAME: sets FAKE_PORT (not in $(...): PID must stay here)
	start "$1" "$FAKE" -l 127.0.0.1:0
	FAKE_PORT=$(read_port "$1")
}

start_pool() {	# NAME PORT UPSTREAM_URL MAXSIZE [CA_FILE]
	local ca=""
	[ -n "${5:-}" ] && ca="ca_file = $5"
	render "$CONF/ollama-pool.conf" "$TMP/$1.conf" POOL_MAXSIZE="$4" \
		POOL_CONNECTIONS="$4" CA_LINE="$ca"
	start "$1" "$POOL" -c "$TMP/$1.conf" -l "127.0.0.1:$2" -u "$3"
	wait_listen "$2" "$1"
}

# A self-signed certificate for 127.0.0.1 and localhost, made per run.
make_cert() {
	[ -f "$TMP/cert.pem" ] && return 0
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 2 \
		-subj /CN=localhost \
		-addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
		>/dev/null 2>&1 || fail "openssl could not make a certificate"
}

median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
