#!/usr/bin/env bash
# bench/demo.sh: what ollama-pool does, in one command and no Ollama
# (`make demo`).
#
# A fake Ollama (tests/fake-ollama) sits behind TLS and a simulated 20 ms
# round trip (bench/relay.py), like an Ollama on another machine behind a
# TLS terminator; ollama-pool runs in front of it on loopback.  The same
# Python client, requests.post without a Session as many apps call Ollama,
# makes 30 calls directly and 30 through ollama-pool; the demo prints both
# medians and the speedup, then stops everything it started.
#
# Needs python3-requests and openssl (Debian packages of those names).
# DEMO_CALLS=N changes the number of calls.

set -u -o pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$HERE/.." && pwd)
BUILD=${BENCH_BUILDDIR:-$SRC}
POOL=${OLLAMA_POOL_BIN:-$BUILD/src/ollama-pool}
FAKE=${FAKE_OLLAMA_BIN:-$BUILD/tests/fake-ollama}
PY=${PYTHON:-python3}
CONF=$HERE/conf
CALLS=${DEMO_CALLS:-30}
. "$HERE/lib.sh"

for tool in openssl ss "$PY"; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail "$tool not found (apt-get install python3-requests openssl iproute2)"
done
"$PY" -c 'import requests' 2>/dev/null ||
	fail "python3-requests missing (apt-get install python3-requests)"
if [ ! -x "$POOL" ] || [ ! -x "$FAKE" ]; then
	make -C "$BUILD" src/ollama-pool tests/fake-ollama >/dev/null ||
		fail "make failed"
fi

lib_init
make_cert
start_fake fake
start relay "$PY" "$HERE/relay.py" --to "127.0.0.1:$FAKE_PORT" \
	--delay-ms 10 --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"
FAR=https://127.0.0.1:$(read_port relay)
PORT=$(free_port)
start_pool pool "$PORT" "$FAR" 20 "$TMP/cert.pem"
PROXY=http://127.0.0.1:$PORT

cat <<EOF
ollama-pool demo
  "Ollama": the test fake, behind TLS and a simulated 20 ms round trip,
            at $FAR (self-signed certificate made for this run)
  proxy:    ollama-pool -l 127.0.0.1:$PORT -u $FAR
  client:   requests.post(URL + "/api/generate", json={..., "stream": False})
            without a Session, as many apps do: a new connection per call

EOF

calls() {	# LABEL URL: prints the median and sets MED
	local times
	times=$("$PY" "$HERE/naive.py" --url "$2" --cert "$TMP/cert.pem" \
		--count "$CALLS" --warm "$2") || fail "calls to $2 failed"
	MED=$(tr ' ' '\n' <<<"$times" | median)
	printf '  %-44s %7.1f ms median\n' "$1" "$MED"
}

echo "$CALLS calls each (after one untimed call):"
calls "direct (TCP + TLS handshake every call):" "$FAR"
DIRECT=$MED
calls "through ollama-pool (kept-alive upstream):" "$PROXY"
PROXIED=$MED
awk -v d="$DIRECT" -v p="$PROXIED" 'BEGIN {
	printf "\n  speedup: %.1fx (%.1f ms saved per call)\n", d / p, d - p }'
cat <<EOF

The proxy keeps its TLS connection to the far server open, so each call
pays one round trip instead of three (TCP, TLS, request).  Point an app at
it with OLLAMA_HOST=http://127.0.0.1:11435 (the daemon's default listen
address); \`make bench\` measures it against nginx and HAProxy.
EOF
