#!/usr/bin/env bash
# Reproduces the load figures of BENCHMARKS.md ("Load and protocol figures (spire-loadgen)").
#
#   cargo build --release -p spire-server -p spire-loadgen
#   crates/spire-loadgen/scripts/bench.sh [p1] [p1sweep] [p2] [p3] [p4] [p5] [p6] [p7]
#                                      (default: p1 p2 p4 p5)
#
# Every figure runs a fresh spire-server (release build) on loopback under a temporary
# directory, drives it with spire-loadgen, and leaves the JSON reports in $OUT
# (default target/bench). P4 starts a private PostgreSQL with pg_stat_statements (needs the
# postgresql server binaries, as scripts/test.sh uses). P5 starts the spire-agent binary found
# in $AGENT_BIN (default target/release/spire-agent, else target/debug/spire-agent).
#
# Knobs (environment): AGENTS (default 1000), WORKLOADS (10), ALIASES (10), CHURN (17 per s: not a divisor of the server's 50 ms change-log poll, so creations sample every phase of it),
# DURATION (30s), ISSUE_AGENTS (8), ISSUE_ROUNDS (12), BATCHES ("1 10 50 100 500", p1sweep),
# P3_ENTRIES (1000000), P3_AGENTS (300000), CACHED ("1000 5000 10000", p5), WL_CLIENTS (1000, p6),
# WL_ROUNDS (5, p6), WL_SPREAD (5s, p6: each round's requests spread over it; a second run
# sends them all at once), SETTLE (30s, p4: wait after the ramp before measuring), PERF (set:
# p6 records a perf profile of the agent during the spread run into $OUT/p6.perf.txt).
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
BATCHES="${BATCHES:-1 10 50 100 500}"
P3_ENTRIES="${P3_ENTRIES:-1000000}"
P3_AGENTS="${P3_AGENTS:-300000}"
CACHED="${CACHED:-1000 5000 10000}"
WL_CLIENTS="${WL_CLIENTS:-1000}"
WL_ROUNDS="${WL_ROUNDS:-5}"
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
	local name="$1" dbtype="$2" conn="$3" level="${4:-WARN}"
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
    log_level = "$level"
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
	START_NS=$t0
	"$REL/spire-server" run -config "$WORK/$name/server.conf" >"$OUT/$name.server.log" 2>&1 &
	SERVER_PID=$!
	for _ in $(seq 1 30000); do
		"$REL/spire-server" healthcheck -socketPath "$SOCK" >/dev/null 2>&1 && break
		kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/$name.server.log" >&2; exit 1; }
		sleep 0.02
	done
	t1=$(date +%s%N)
	HEALTHY_MS=$(( (t1 - t0) / 1000000 ))
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

# P1 against the batch size: the same 48,000-ish SVIDs per run, batch sizes from $BATCHES.
p1sweep() {
	start_server p1sweep sqlite3 "$WORK/p1sweep/data/datastore.sqlite3"
	local b
	for b in $BATCHES; do
		loadgen "p1-batch$b" -agents "$ISSUE_AGENTS" -workloadsPerAgent 500 -batchSize "$b" -issueRounds 4 \
			-jwtPerAgent 0 -noWatch -duration 0s -concurrency "$ISSUE_AGENTS"
	done
	stop_server
}

# P7: bytes per sync against entries changed between syncs. One agent with 600 entries (above
# the 500-entry page, so it gets revisions and then only what changed), polling every 5 s
# without the push stream, while CHURN7 entries/s are created for it: 5 x rate per sync.
p7() {
	start_server p7 sqlite3 "$WORK/p7/data/datastore.sqlite3"
	local c
	for c in ${CHURN7:-0 1 4 20}; do
		loadgen "p7-churn$c" -agents 1 -workloadsPerAgent 600 -noWatch -syncInterval 5s -churn "$c" \
			-churnKeep 100000 -duration 30s -jwtPerAgent 0 -concurrency 1
	done
	loadgen p7-small -agents 1 -workloadsPerAgent 15 -noWatch -syncInterval 5s -churn 1 \
		-churnKeep 100000 -duration 30s -jwtPerAgent 0 -concurrency 1
	stop_server
}

p2() {
	start_server p2 sqlite3 "$WORK/p2/data/datastore.sqlite3"
	loadgen p2 -agents "$AGENTS" -workloadsPerAgent "$WORKLOADS" -aliases "$ALIASES" -workloadsPerAlias 5 \
		-churn "$CHURN" -duration "$DURATION" -concurrency 32
	stop_server
}

# start_pg <name>: a private PostgreSQL (fsync off) with pg_stat_statements; sets PG_URL.
start_pg() {
	local bin
	bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r | head -n1)"
	if [[ -z "$bin" || ! -x "$bin/initdb" ]] || ! command -v psql >/dev/null; then
		log "$1: PostgreSQL not installed; skipped"
		return 1
	fi
	local dir="$WORK/pg-$1" port
	mkdir -p "$dir/sock"
	[[ "$(id -u)" == 0 ]] && chown -R postgres "$dir"
	as_postgres "$bin/initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$OUT/$1.initdb.log" 2>&1
	port="$(free_port)"
	as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all" \
		start >/dev/null
	PG_STOP="as_postgres '$bin/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null 2>&1"
	PG_URL="postgres://postgres@127.0.0.1:$port/postgres"
	psql "$PG_URL" -XAtqc 'create extension if not exists pg_stat_statements' >/dev/null
}

stop_pg() {
	[[ -n "$PG_STOP" ]] && eval "$PG_STOP"
	PG_STOP=""
}

# P3: cold start with P3_ENTRIES entries and P3_AGENTS agents in PostgreSQL. The schema comes
# from a first server start; the rows from `spire-loadgen -bulkEntries` (SQL generated
# server-side by PostgreSQL); then a fresh server start is timed to the local API answering
# and to the agent port accepting (it binds after the authorized-entry index is loaded).
p3() {
	start_pg p3 || return 0
	local url="$PG_URL" t0 t1 port_ms
	start_server p3-schema postgres "$url?sslmode=disable"
	stop_server
	t0=$(date +%s%N)
	"$REL/spire-loadgen" -trustDomain "$TD" -bulkEntries "$P3_ENTRIES" -bulkAgents "$P3_AGENTS" 2>"$OUT/p3.bulk.log" |
		psql "$url" -XAtq -v ON_ERROR_STOP=1 >/dev/null
	t1=$(date +%s%N)
	log "P3: bulk data ($(cat "$OUT/p3.bulk.log")) in $(( (t1 - t0) / 1000000 )) ms"
	psql "$url" -XAtc "select (select count(*) from registered_entries), (select count(*) from attested_nodes), pg_size_pretty(pg_database_size('postgres'))" \
		| tee "$OUT/p3.counts.txt" >&2
	start_server p3 postgres "$url?sslmode=disable" INFO
	local perf_pid=""
	if [[ -n "${PERF:-}" ]] && command -v perf >/dev/null; then
		# Profile of the index load (PERF=1): from the local API answering to the agent port.
		perf record -F 499 -g -p "$SERVER_PID" -o "$OUT/p3.perf.data" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	for _ in $(seq 1 60000); do
		(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
		kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$OUT/p3.server.log" >&2; exit 1; }
		sleep 0.02
	done
	port_ms=$(( ($(date +%s%N) - START_NS) / 1000000 ))
	if [[ -n "$perf_pid" ]]; then
		kill -INT "$perf_pid" 2>/dev/null || true
		wait "$perf_pid" 2>/dev/null || true
		perf report -i "$OUT/p3.perf.data" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | grep '%' | head -n 40 >"$OUT/p3.perf.txt" || true
	fi
	{
		echo "{"
		echo "  \"entries\": $(cut -d'|' -f1 "$OUT/p3.counts.txt"),"
		echo "  \"agents\": $(cut -d'|' -f2 "$OUT/p3.counts.txt"),"
		echo "  \"local_api_healthy_ms\": $HEALTHY_MS,"
		echo "  \"agent_port_ready_ms\": $port_ms,"
		echo "  \"rss_kb_at_ready\": $(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status"),"
		echo "  \"hwm_kb_at_ready\": $(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status")"
		echo "}"
	} | tee "$OUT/p3.json" >&2
	grep -E 'index loaded' "$OUT/p3.server.log" >&2 || true
	stop_server
	stop_pg
}

p4() {
	start_pg p4 || return 0
	local url="$PG_URL"
	start_server p4 postgres "$url?sslmode=disable"
	# Steady state without churn: what the agents' syncs cost the database.
	loadgen p4 -agents "$AGENTS" -workloadsPerAgent "$WORKLOADS" -aliases "$ALIASES" -workloadsPerAlias 5 \
		-duration "$DURATION" -settle "${SETTLE:-30s}" -pgStatURL "$url" -concurrency 32
	psql "$url" -XAtc "select calls, round(total_exec_time::numeric,1) as ms, left(regexp_replace(query, '\s+', ' ', 'g'), 110) from pg_stat_statements order by calls desc limit 12" \
		>"$OUT/p4.top-statements.txt"
	stop_server
	stop_pg
}

# p5 [p6]: a real spire-agent; P5 measures its memory idle and against cached SVIDs, P6 (with
# the argument p6, on a fresh server and agent) its Workload API under concurrent clients.
p5() {
	local mode="${1:-p5}"
	start_server "$mode" sqlite3 "$WORK/$mode/data/datastore.sqlite3"
	local token
	token="$("$REL/spire-server" token generate -socketPath "$SOCK" -spiffeID "spiffe://$TD/bench-node" | awk '/^Token:/ {print $2}')"
	"$REL/spire-server" bundle show -socketPath "$SOCK" >"$WORK/$mode/bundle.pem"
	mkdir -p "$WORK/$mode/agent"
	cat >"$WORK/$mode/agent.conf" <<CONF
agent {
    data_dir = "$WORK/$mode/agent"
    log_level = "WARN"
    server_address = "127.0.0.1"
    server_port = "$PORT"
    socket_path = "$WORK/$mode/agent/api.sock"
    trust_bundle_path = "$WORK/$mode/bundle.pem"
    trust_domain = "$TD"
    x509_svid_cache_max_size = 20000
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
	"$AGENT_BIN" run -config "$WORK/$mode/agent.conf" -joinToken "$token" >"$OUT/$mode.agent.log" 2>&1 &
	AGENT_PID=$!
	for _ in $(seq 1 300); do
		[[ -S "$WORK/$mode/agent/api.sock" ]] && break
		sleep 0.05
	done
	# Idle: attested, no workload entries, nothing connected. Let it settle.
	sleep 10
	{
		echo "binary: $AGENT_BIN ($(stat -c %s "$AGENT_BIN") bytes)"
		grep -E '^(VmRSS|VmHWM|RssAnon|RssFile|RssShmem|Threads)' "/proc/$AGENT_PID/status"
	} | tee "$OUT/$mode.agent-rss.txt" >&2
	local points=() rss anon
	rss_point() {
		rss=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
		anon=$(awk '/^RssAnon/ {print $2}' "/proc/$AGENT_PID/status")
		points+=("{\"cached_svids\": $1, \"vmrss_kb\": $rss, \"rss_anon_kb\": $anon}")
		log "P5: $1 cached SVIDs: VmRSS $rss kB, RssAnon $anon kB"
	}
	rss_point 0
	if [[ "$mode" == p6 ]]; then
		p6_clients
		kill "$AGENT_PID" 2>/dev/null || true
		wait "$AGENT_PID" 2>/dev/null || true
		AGENT_PID=""
		stop_server
		return 0
	fi


	# P5 against cached SVIDs: entries parented to the agent (uids nobody runs as), in steps.
	local have=1 want i
	for want in $CACHED; do
		python3 - "$have" "$want" "$TD" >"$WORK/$mode/entries.json" <<'PY'
import json, sys
have, want, td = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
print(json.dumps({"entries": [
    {"spiffe_id": "spiffe://%s/bench/cached/%d" % (td, i),
     "parent_id": "spiffe://%s/bench-node" % td,
     "selectors": [{"type": "unix", "value": "uid:%d" % (200000 + i)}]}
    for i in range(have, want)]}))
PY
		"$REL/spire-server" entry create -socketPath "$SOCK" -data "$WORK/$mode/entries.json" >/dev/null
		have=$want
		# Wait for the agent to sync and sign (5 s sync interval), then for RSS to settle.
		local prev=0 cur
		for i in $(seq 1 30); do
			sleep 2
			cur=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT_PID/status")
			[[ $i -ge 5 && $cur -eq $prev ]] && break
			prev=$cur
		done
		rss_point "$want"
	done
	{
		echo "{\"binary\": \"$AGENT_BIN\", \"binary_bytes\": $(stat -c %s "$AGENT_BIN"), \"points\": ["
		local IFS=,
		echo "${points[*]}"
		echo "]}"
	} >"$OUT/p5.json"
	kill "$AGENT_PID" 2>/dev/null || true
	wait "$AGENT_PID" 2>/dev/null || true
	AGENT_PID=""
	stop_server
}

# The agent's CPU ticks (user, system) and context switches (voluntary, involuntary, all threads).
agent_cost() {
	local utime stime vol=0 invol=0 f
	read -r utime stime < <(awk '{print $14, $15}' "/proc/$AGENT_PID/stat")
	for f in /proc/"$AGENT_PID"/task/*/status; do
		vol=$((vol + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$f")))
		invol=$((invol + $(awk '/^nonvoluntary_ctxt_switches/ {print $2}' "$f")))
	done
	echo "$utime $stime $vol $invol"
}

p6_clients() {
	# P6: one entry for this uid, then WL_CLIENTS concurrent FetchX509SVID clients.
	"$REL/spire-server" entry create -socketPath "$SOCK" -parentID "spiffe://$TD/bench-node" \
		-spiffeID "spiffe://$TD/bench-workload" -selector "unix:uid:$(id -u)" >/dev/null
	ulimit -n 65536 2>/dev/null || ulimit -n 4096 2>/dev/null || true
	for _ in $(seq 1 100); do
		"$REL/spire-loadgen" -workloadSocket "$WORK/$mode/agent/api.sock" -workloadClients 1 -workloadTimeout 1s -output json 2>/dev/null |
			grep -q '"first_messages": 1' && break
		sleep 0.2
	done
	log "P6: $WL_CLIENTS concurrent Workload API clients x $WL_ROUNDS rounds (spread over ${WL_SPREAD:-5s}, then all at once)"
	local name spread
	for name in p6:${WL_SPREAD:-5s} p6-burst:0s; do
		spread="${name#*:}"
		name="${name%%:*}"
		local perf_pid=""
		if [[ -n "${PERF:-}" && "$name" == p6 ]] && command -v perf >/dev/null; then
			# Flat profile of the agent while it serves the spread run (PERF=1).
			perf record -F 999 -g -p "$AGENT_PID" -o "$OUT/p6.perf.data" >/dev/null 2>&1 &
			perf_pid=$!
		fi
		local before after load
		before=$(agent_cost)
		load=$(cut -d' ' -f1-3 /proc/loadavg)
		"$REL/spire-loadgen" -workloadSocket "$WORK/$mode/agent/api.sock" -workloadClients "$WL_CLIENTS" \
			-workloadRounds "$WL_ROUNDS" -workloadSpread "$spread" -output json >"$OUT/$name.json"
		after=$(agent_cost)
		# The agent's own cost per request holds up under load, where latency percentiles do not.
		python3 - "$before" "$after" "$((WL_CLIENTS * WL_ROUNDS))" "$name" "$load" "$(getconf CLK_TCK)" <<'PY' | tee "$OUT/$name.agent-cost.txt" >&2
import sys
b, a = (list(map(int, x.split())) for x in sys.argv[1:3])
n = int(sys.argv[3])
ms = ((a[0] + a[1]) - (b[0] + b[1])) * 1000.0 / int(sys.argv[6])
switches = (a[2] + a[3]) - (b[2] + b[3])
print("%s: load %s; agent CPU %.0f ms = %.3f ms per request; %d context switches = %.2f per request"
      % (sys.argv[4], sys.argv[5], ms, ms / n, switches, switches / n))
PY
		if [[ -n "$perf_pid" ]]; then
			kill -INT "$perf_pid" 2>/dev/null || true
			wait "$perf_pid" 2>/dev/null || true
			perf report -i "$OUT/p6.perf.data" --no-children --sort symbol --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40 >"$OUT/p6.perf.txt" || true
		fi
		python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); p=r["first_message_latency"]; print("%s (spread %ss): %d/%d first messages, p50 %.3f ms p90 %.3f ms p99 %.3f ms max %.3f ms" % (sys.argv[2], r["spread_seconds"], r["first_messages"], r["requests"], p["p50_ms"], p["p90_ms"], p["p99_ms"], p["max_ms"]))' "$OUT/$name.json" "$name" >&2
	done
	rss_point 1
}

machine
steps=("$@")
[[ ${#steps[@]} -eq 0 ]] && steps=(p1 p2 p4 p5)
for s in "${steps[@]}"; do
	case "$s" in
	p1 | p1sweep | p2 | p3 | p4 | p5 | p7) "$s" ;;
	p6) p5 p6 ;;
	*) echo "unknown step $s (p1 p1sweep p2 p3 p4 p5 p6 p7)" >&2; exit 2 ;;
	esac
done
log "reports in $OUT"
