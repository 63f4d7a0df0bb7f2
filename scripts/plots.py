#!/usr/bin/env python3
"""Renders the BENCHMARKS.md figures (PNG) from spire-loadgen's `-output json` reports.

Inputs (committed, copied from target/bench/ by `scripts/plots.sh --collect`) and outputs
both live in docs/bench/:
  p2.json                      -> p2-propagation-cdf.png   (P2 latency CDF)
  p6.json                      -> p6-workload-cdf.png      (P6 latency CDF)
  p1-batch<N>.json             -> p1-batch-size.png        (P1 issuance against batch size)
  p5.json                      -> p5-agent-rss.png         (P5 agent RSS against cached SVIDs)
A missing input skips its plot. Needs matplotlib (scripts/plots.sh installs it into
target/pyenv).
"""

import glob
import json
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "bench")


def load(name):
    path = os.path.join(DIR, name)
    if not os.path.exists(path):
        print(f"skip: {name} not found", file=sys.stderr)
        return None
    with open(path) as f:
        return json.load(f)


def save(fig, name):
    out = os.path.join(DIR, name)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    print(f"wrote {os.path.relpath(out)}")


def cdf_plot(cdf_ms, title, goal_ms, label, name, note):
    pct = [i for i in range(len(cdf_ms))]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(cdf_ms, pct, drawstyle="steps-post", label=label)
    ax.axvline(goal_ms, color="red", linestyle="--", label=f"goal p99 < {goal_ms:g} ms")
    ax.axhline(99, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel(f"latency (ms); {note}")
    ax.set_ylabel("percentile")
    ax.set_ylim(0, 100.5)
    ax.set_title(title)
    ax.legend(loc="center right")
    ax.grid(alpha=0.3)
    save(fig, name)


def p2():
    r = load("p2.json")
    if not r:
        return
    cdf = r["propagation"].get("to_svid_cdf_ms") or []
    if not cdf:
        print("skip: p2.json has no to_svid_cdf_ms", file=sys.stderr)
        return
    c = r["config"]
    cdf_plot(
        cdf,
        "P2: entry created -> SVID at the owning agent",
        250,
        f"{r['propagation']['samples']} entries, {c['agents']} agents",
        "p2-propagation-cdf.png",
        f"churn {c['churn_per_second']:g}/s, {c['duration_seconds']:g} s",
    )


def p6():
    r = load("p6.json")
    if not r:
        return
    cdf = r.get("first_message_cdf_ms") or []
    if not cdf:
        return
    cdf_plot(
        cdf,
        "P6: Workload API FetchX509SVID, first message",
        2,
        f"{r['clients']} concurrent clients x {r['rounds']} rounds",
        "p6-workload-cdf.png",
        f"{r['first_messages']} of {r['requests']} answered",
    )


def p1():
    pts = []
    for path in glob.glob(os.path.join(DIR, "p1-batch*.json")):
        m = re.search(r"p1-batch(\d+)\.json$", path)
        with open(path) as f:
            r = json.load(f)
        ph = r["x509"].get("issue_phase")
        if m and ph:
            pts.append((int(m.group(1)), ph["per_server_cpu_second"], ph["per_second"]))
    if not pts:
        print("skip: no p1-batch*.json", file=sys.stderr)
        return
    pts.sort()
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [p[0] for p in pts]
    ax.plot(xs, [p[1] for p in pts], marker="o", label="SVIDs per server CPU-second")
    ax.plot(xs, [p[2] for p in pts], marker="s", label="SVIDs per wall second (2 vCPU, shared)")
    ax.axhline(15000, color="red", linestyle="--", label="goal 15,000/s/core")
    ax.axhline(6300, color="grey", linestyle=":", label="SPIRE ~6,300/s/core")
    ax.set_xscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("CSRs per BatchNewX509SVID call")
    ax.set_ylabel("X.509-SVIDs per second")
    ax.set_ylim(0, None)
    ax.set_title("P1: issuance throughput against batch size")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "p1-batch-size.png")


def p5():
    r = load("p5.json")
    if not r:
        return
    pts = sorted((p["cached_svids"], p["vmrss_kb"] / 1024, p["rss_anon_kb"] / 1024) for p in r["points"])
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [p[0] for p in pts]
    ax.plot(xs, [p[1] for p in pts], marker="o", label="VmRSS")
    ax.plot(xs, [p[2] for p in pts], marker="s", label="anonymous (heap, stacks)")
    ax.axhline(15, color="red", linestyle="--", label="goal idle < 15 MB")
    ax.set_xlabel("cached X.509-SVIDs")
    ax.set_ylabel("agent memory (MiB)")
    ax.set_ylim(0, None)
    ax.set_title("P5: spire-agent resident memory against cached SVIDs")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    save(fig, "p5-agent-rss.png")


if __name__ == "__main__":
    p1()
    p2()
    p5()
    p6()
