#!/bin/sh
# Runs the daemon under valgrind for make check-valgrind: the harness
# starts $OLLAMA_POOL_BIN, so this script stands in for the binary.
#
# VALGRIND_DAEMON is the real daemon; VALGRIND_LOG_DIR gets one log per
# process (valgrind-PID.log), which check-valgrind reads afterwards: the
# tests only see the exit status, and a daemon stopped by SIGTERM exits
# before it could fail one.  exec keeps the PID the harness signals and
# reads /proc of the daemon's own.
: "${VALGRIND_DAEMON:?set VALGRIND_DAEMON to the ollama-pool binary}"
: "${VALGRIND_LOG_DIR:=tests/logs}"
mkdir -p "$VALGRIND_LOG_DIR" || exit 1
exec valgrind --error-exitcode=99 --leak-check=full \
	--errors-for-leak-kinds=definite --show-leak-kinds=definite \
	--log-file="$VALGRIND_LOG_DIR/valgrind-%p.log" \
	"$VALGRIND_DAEMON" "$@"
