#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md ("Load and protocol figures (spire-loadgen)").
#
#   cargo build --release -p spire-server -p spire-loadgen
#   crates/spire-loadgen/scripts/bench.sh [p1] [p2] [p4] [p5]     (default: all four)
#
# Every figure runs a fresh spire-server (release build) on loopback under a temporary
# directory, drives it with spire-loadgen, and leaves the JSON reports in $OUT
# (default target/bench). P4 starts a private PostgreSQL with pg_stat_statements (needs the
# postgresql server binaries, as scripts/test.sh uses). P5 starts the spire-agent binary found
# in $AGENT_BIN (default target/release/spire-agent, else target/debug/spire-agent).
#
# Knobs (environment): AGENTS (default 1000), WORKLOADS (10), ALIASES (10), CHURN (17 per s: not a divisor of the server's 50 ms change-log poll, so creations sample every phase of it),
# DURATION (30s), ISSUE_AGENTS (8), ISSUE_ROUNDS (12).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../../.." && pwd)"
REL="${REL:-$ROOT/target/release}"
OUT="${OUT:-$ROOT/target/bench}"
AGENTS="${AGENTS:-1000}"
WORKLOADS="${WORKLOADS:-10}"
ALIASES="${ALIASES:-10}"
CHURN="${CHURN:-17}"
DURATION="${DURATION:-30s}"
ISSUE_AGENTS="${ISSUE_AGENTS:-8}"
ISSUE_ROUNDS="${ISSUE_ROUNDS:-12}"
TD="example.org"
if [[ -z "${AGENT_BIN:-}" ]]; then
	AGENT_BIN="$REL/spire-agent"
	[[ -x "$AGENT_BIN" ]] || AGENT_BIN="$ROOT/target/debug/spire-agent"
fi

for b in spire-server spire-loadgen; do
	[[ -x "$REL/$b" ]] || { echo "missing $REL/$b: cargo build --release -p spire-server -p spire-loadgen" >&2; exit 1; }
done
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/spire-rs-bench.XXXXXX)"
# PostgreSQL (P4) runs as the postgres user and must reach its data directory.
chmod 755 "$WORK"
SERVER_PID=""
AGENT_PID=""
PG_STOP=""
cleanup() {
	[[ -n "$AGENT_PID" ]] && kill "$AGENT_PID" 2>/dev/null || true
	[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
	wait 2>/dev/null || true
	[[ -n "$PG_STOP" ]] && eval "$PG_STOP" || true
	rm -rf "$WORK"
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
as_postgres() { if [[ "$(id -u)" == 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }

machine() {
	{
		echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
		echo "cpu: $(lscpu | awk -F: '/Model name/ {gsub(/^ +/,"",$2); print $2; exit}') x $(nproc)"
		echo "memory: $(free -m | awk '/Mem:/ {print $2}') MiB"
		echo "kernel: $(uname -r)"
		echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
		echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
	} | tee "$OUT/machine.txt" >&2
}

# start_server <name> <database_type> <connection_string>
start_server() {
	local name="$1" dbtype="$2" conn="$3"
	PORT="$(free_port)"
	SOCK="$WORK/$name/api.sock"
	mkdir -p "$WORK/$name/data"
	cat >"$WORK/$name/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port = "$PORT"
    socket_path = "$SOCK"
    trust_domain = "$TD"
    data_dir = "$WORK/$name/data"
    log_level = "WARN"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    ratelimit {
        attestation = false
        signing = false
    }
}
plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "$dbtype"
            connection_string = "$conn"
        }
    }
    KeyManager "memory" {
        plugin_data {}
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
CONF
	local t0 t1
	t0=$(date +%s%N)
	"$REL/spire-server" run -config "$WORK/$name/server.conf" >"$OUT/$name.server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 300); do
		"$REL/spire-server" healthcheck -socketPath "$SOCK" >/dev/null 2>&1 && break
		kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/$name.server.log" >&2; exit 1; }
		sleep 0.02
	done
	t1=$(date +%s%N)
	log "$name: spire-server pid $SERVER_PID on 127.0.0.1:$PORT ($dbtype), healthy after $(( (t1 - t0) / 1000000 )) ms"
}

stop_server() {
	[[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
	wait "$SERVER_PID" 2>/dev/null || true
	SERVER_PID=""
}

# loadgen <name> <flags...>: JSON report in $OUT/<name>.json, progress in $OUT/<name>.progress.log
loadgen() {
	local name="$1"
	shift
	log "$name: spire-loadgen $*"
	"$REL/spire-loadgen" -serverAddress "127.0.0.1:$PORT" -socketPath "$SOCK" -trustDomain "$TD" \
		-serverPid "$SERVER_PID" -output json "$@" >"$OUT/$name.json" 2> >(tee "$OUT/$name.progress.log" >&2)
}

p1() {
	log "P1: openssl speed ecdsap256 (one thread, 3 s per operation)"
	openssl speed -seconds 3 ecdsap256 2>/dev/null | tee "$OUT/p1.openssl.txt" | tail -n 3 >&2
	start_server p1 sqlite3 "$WORK/p1/data/datastore.sqlite3"
	# ISSUE_AGENTS agents x 500 entries: one BatchNewX509SVID of 500 CSRs per agent per round.
	loadgen p1 -agents "$ISSUE_AGENTS" -workloadsPerAgent 500 -batchSize 500 -issueRounds "$ISSUE_ROUNDS" \
		-jwtPerAgent 0 -noWatch -duration 0s -concurrency "$ISSUE_AGENTS"
	stop_server
}

p2() {
	start_server p2 sqlite3 "$WORK/p2/data/datastore.sqlite3"
	loadgen p2 -agents "$AGENTS" -workloadsPerAgent "$WORKLOADS" -aliases "$ALIASES" -workloadsPerAlias 5 \
		-churn "$CHURN" -duration "$DURATION" -concurrency 32
	stop_server
}

p4() {
	local bin
	bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -n1)"
	if [[ -z "$bin" || ! -x "$bin/initdb" ]] || ! command -v psql >/dev/null; then
		log "P4: PostgreSQL not installed; skipped"
		return 0
	fi
	local dir="$WORK/pg" port url
	mkdir -p "$dir/sock"
	[[ "$(id -u)" == 0 ]] && chown -R postgres "$dir"
	as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$OUT/p4.initdb.log" 2>&1
	port="$(free_port)"
	as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
		start >/dev/null
	PG_STOP="as_postgres '$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null 2>&1"
	url="postgres://postgres@127.0.0.1:$port/postgres"
	psql "$url" -XAtqc 'create extension if not exists pg_stat_statements' >/dev/null
	start_server p4 postgres "$url?sslmode=disable"
	# Steady state without churn: what the agents' syncs cost the database.
	loadgen p4 -agents "$AGENTS" -workloadsPerAgent "$WORKLOADS" -aliases "$ALIASES" -workloadsPerAlias 5 \
		-duration "$DURATION" -pgStatURL "$url" -concurrency 32
	psql "$url" -XAtc "select calls, round(total_exec_time::numeric,1) as ms, left(regexp_replace(query, '\s+', ' ', 'g'), 110) from pg_stat_statements order by calls desc limit 12" \
		>"$OUT/p4.top-statements.txt"
	stop_server
	eval "$PG_STOP"
	PG_STOP=""
}

p5() {
	start_server p5 sqlite3 "$WORK/p5/data/datastore.sqlite3"
	local token
	token="$("$REL/spire-server" token generate -socketPath "$SOCK" -spiffeID "spiffe://$TD/bench-node" | awk '/^Token:/ {print $2}')"
	"$REL/spire-server" bundle show -socketPath "$SOCK" >"$WORK/p5/bundle.pem"
	mkdir -p "$WORK/p5/agent"
	cat >"$WORK/p5/agent.conf" <<CONF
agent {
    data_dir = "$WORK/p5/agent"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "$PORT"
    socket_path = "$WORK/p5/agent/api.sock"
    trust_bundle_path = "$WORK/p5/bundle.pem"
    trust_domain = "$TD"
}
plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "memory" {
        plugin_data {}
    }
    WorkloadAttestor "unix" {
        plugin_data {}
    }
}
CONF
	"$AGENT_BIN" run -config "$WORK/p5/agent.conf" -joinToken "$token" >"$OUT/p5.agent.log" 2>&1 &
	AGENT_PID=$!
	for _ in $(seq 1 300); do
		[[ -S "$WORK/p5/agent/api.sock" ]] && break
		sleep 0.05
	done
	# Idle: attested, no workload entries, nothing connected. Let it settle.
	sleep 10
	{
		echo "binary: $AGENT_BIN ($(stat -c %s "$AGENT_BIN") bytes)"
		grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)' "/proc/$AGENT_PID/status"
	} | tee "$OUT/p5.agent-rss.txt" >&2
	kill "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" 2>/dev/null || true
	AGENT_PID=""
	stop_server
}

machine
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(p1 p2 p4 p5)
for s in "${steps[@]}"; do
	case "$s" in
	p1 | p2 | p4 | p5) "$s" ;;
	*) echo "unknown step $s (p1 p2 p4 p5)" >&2; exit 2 ;;
	esac
done
log "reports in $OUT"
