#!/usr/bin/env python3
"""Parses Prometheus text exposition with prometheus_client's own parser.

Usage: prom_parse.py URL

Fetches URL (a /metrics endpoint), parses it with
prometheus_client.parser.text_string_to_metric_families (independent of
spire-rs), and prints one JSON array of samples:
[{"family": ..., "type": ..., "name": ..., "labels": {...}, "value": ...}].
Exits 1 with "error: <reason>" on stderr when fetching or parsing fails.
"""

import json
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def main():
    if len(sys.argv) != 2:
        print("usage: prom_parse.py URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=30) as response:
            text = response.read().decode("utf-8")
        samples = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples.append({
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": dict(s.labels),
                    "value": s.value,
                })
    except Exception as e:  # noqa: BLE001 - any failure is reported
        print("error: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
