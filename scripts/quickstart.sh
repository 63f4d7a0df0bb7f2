#!/usr/bin/env bash
# The spire-rs quickstart, end to end on this machine:
#   a server on embedded SQLite, an agent attested with a join token, a registration entry for the
#   current user, then an X.509-SVID and a JWT-SVID fetched over the Workload API and shown.
# Everything runs under a temporary directory on loopback and is cleaned up on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
echo "==> building spire-server and spire-agent"
cargo build --quiet --bin spire-server --bin spire-agent
BIN="$(pwd)/target/debug"
TD="example.org"

WORK="$(mktemp -d /tmp/spire-rs-quickstart.XXXXXX)"
SERVER_PID=""
AGENT_PID=""
cleanup() {
  [ -n "$AGENT_PID" ] && kill "$AGENT_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
fail() {
  echo "quickstart failed: $*" >&2
  echo "--- server log ---" >&2; cat "$WORK/server.log" >&2 || true
  echo "--- agent log ---" >&2; cat "$WORK/agent.log" >&2 || true
  exit 1
}

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
SERVER_SOCK="$WORK/server/api.sock"
AGENT_SOCK="$WORK/agent/public/api.sock"
mkdir -p "$WORK/server" "$WORK/agent"

cat > "$WORK/server.conf" <<CONF
server {
    bind_address = "127.0.0.1"
    bind_port = "$PORT"
    socket_path = "$SERVER_SOCK"
    trust_domain = "$TD"
    data_dir = "$WORK/server"
    log_level = "INFO"
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = "$WORK/server/datastore.sqlite3"
        }
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = "$WORK/server/keys.json"
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
}
CONF

echo "==> starting spire-server (trust domain $TD, port $PORT)"
"$BIN/spire-server" run -config "$WORK/server.conf" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do
  "$BIN/spire-server" healthcheck -socketPath "$SERVER_SOCK" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || fail "spire-server exited"
  sleep 0.1
done
"$BIN/spire-server" healthcheck -socketPath "$SERVER_SOCK" || fail "spire-server is not healthy"

echo "==> generating a join token and the bootstrap bundle"
TOKEN="$("$BIN/spire-server" token generate -socketPath "$SERVER_SOCK" -spiffeID "spiffe://$TD/myagent" | awk '/^Token:/ {print $2}')"
[ -n "$TOKEN" ] || fail "no join token"
"$BIN/spire-server" bundle show -socketPath "$SERVER_SOCK" >"$WORK/bundle.pem"

cat > "$WORK/agent.conf" <<CONF
agent {
    data_dir = "$WORK/agent"
    log_level = "INFO"
    server_address = "127.0.0.1"
    server_port = "$PORT"
    socket_path = "$AGENT_SOCK"
    trust_bundle_path = "$WORK/bundle.pem"
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

echo "==> starting spire-agent (join token attestation)"
"$BIN/spire-agent" run -config "$WORK/agent.conf" -joinToken "$TOKEN" >"$WORK/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 1 100); do
  "$BIN/spire-agent" healthcheck -socketPath "$AGENT_SOCK" >/dev/null 2>&1 && break
  kill -0 "$AGENT_PID" 2>/dev/null || fail "spire-agent exited"
  sleep 0.1
done
"$BIN/spire-agent" healthcheck -socketPath "$AGENT_SOCK" || fail "spire-agent is not healthy"

echo "==> registering spiffe://$TD/myservice for unix:uid:$(id -u)"
"$BIN/spire-server" entry create -socketPath "$SERVER_SOCK" \
  -parentID "spiffe://$TD/myagent" \
  -spiffeID "spiffe://$TD/myservice" \
  -selector "unix:uid:$(id -u)"

echo "==> fetching an X.509-SVID"
mkdir -p "$WORK/svid"
ok=""
for _ in $(seq 1 50); do
  if "$BIN/spire-agent" api fetch x509 -socketPath "$AGENT_SOCK" -write "$WORK/svid" >"$WORK/fetch.out" 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { cat "$WORK/fetch.out" >&2; fail "no X.509-SVID"; }
cat "$WORK/fetch.out"
openssl x509 -in "$WORK/svid/svid.0.pem" -noout -subject -ext subjectAltName -dates
openssl verify -CAfile "$WORK/svid/bundle.0.pem" "$WORK/svid/svid.0.pem"

echo "==> fetching a JWT-SVID for audience 'quickstart'"
"$BIN/spire-agent" api fetch jwt -socketPath "$AGENT_SOCK" -audience quickstart

echo "==> done; cleaning up"
