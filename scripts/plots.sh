#!/usr/bin/env bash
# Regenerates the PNG plots of BENCHMARKS.md in docs/bench/ from the committed JSON reports.
#
#   scripts/plots.sh              # render docs/bench/*.png from docs/bench/*.json
#   scripts/plots.sh --collect    # first copy the reports of the last bench run
#                                 # (target/bench/{p1-batch*,p2,p5,p6}.json) into docs/bench/
#
# matplotlib is installed into the project venv target/pyenv (made by scripts/test.sh, or
# here) on first use; it is not part of the test path.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/target/pyenv"
if [[ "${1:-}" == "--collect" ]]; then
	for f in "$ROOT"/target/bench/p1-batch*.json "$ROOT"/target/bench/p2.json \
		"$ROOT"/target/bench/p3.json "$ROOT"/target/bench/p4.json \
		"$ROOT"/target/bench/p5.json "$ROOT"/target/bench/p6.json; do
		[[ -f "$f" ]] && cp "$f" "$ROOT/docs/bench/"
	done
fi
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q matplotlib
exec "$VENV/bin/python" "$ROOT/scripts/plots.py"
