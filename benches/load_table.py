#!/usr/bin/env python3
"""Prints the table of a benches/load.sh run: one row per transport, mode and concurrency, each proxy beside
direct.

usage: load_table.py RESULTS_DIR

Reads RESULTS_DIR/runs/<target>_<transport>_<mode>_c<C>_r<R>.json (oha JSON) and .proc.json (process samples)
for the targets direct, nginx and tollgate (http), or tollgate-h1 / tollgate-h2 (https: tollgate speaking
HTTP/1.1 or HTTP/2 to the upstream; one row each, beside the same direct and nginx runs). Runs named
<target>_<mode>_c<C>_r<R>.json (from before transports) are http. Figures are means over repetitions; peak RSS
is the maximum.
"""
import glob
import json
import os
import re
import statistics
import sys

RUN = re.compile(r"^(direct|nginx|tollgate(?:-h[12])?)_(?:(http|https)_)?([a-z0-9]+)_c(\d+)_r(\d+)\.json$")
NAN = float("nan")


def load(path):
    d = json.load(open(path))
    s, lp = d["summary"], d.get("latencyPercentiles") or {}
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = sum(v for k, v in (d.get("errorDistribution") or {}).items() if k != "aborted due to deadline")
    total = sum(codes.values())
    run = {"rps": s["requestsPerSec"], "p50": (lp.get("p50") or 0) * 1e3, "p99": (lp.get("p99") or 0) * 1e3,
           "bad": total - sum(v for k, v in codes.items() if 200 <= k < 300) + errors}
    proc = path[:-5] + ".proc.json"
    if os.path.exists(proc) and total:
        p = json.load(open(proc))
        run["cpu_us"] = p["cpu_s"] * 1e6 / total
        run["rss_mb"] = p["peak_rss_kb"] / 1024
    return run


def agg(runs):
    out = {k: statistics.fmean(r[k] for r in runs) for k in ("rps", "p50", "p99")}
    out["bad"] = sum(r["bad"] for r in runs)
    if all("cpu_us" in r for r in runs):
        out["cpu_us"] = statistics.fmean(r["cpu_us"] for r in runs)
        out["rss_mb"] = max(r["rss_mb"] for r in runs)
    return out


def http_first(path):
    """Sort key: the http tollgate's files, then those of tollgate-h1 / tollgate-h2."""
    return ("-h" in os.path.basename(path), path)


def ratio(a, b):
    return a / b if b else NAN


def main():
    d = sys.argv[1]
    groups = {}
    for p in glob.glob(os.path.join(d, "runs", "*.json")):
        m = RUN.match(os.path.basename(p))
        if m:
            key = (m.group(2) or "http", m.group(3), int(m.group(4)))
            groups.setdefault(key, {}).setdefault(m.group(1), []).append(load(p))
    print("| transport | mode | c | direct req/s | nginx req/s (÷direct) | tollgate req/s (÷direct, ÷nginx) "
          "| added p50 ms nginx / tollgate | added p99 ms nginx / tollgate | CPU µs/req nginx / tollgate "
          "| peak RSS MB nginx / tollgate | non-2xx or errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for (transport, mode, c), runs in groups.items():
        g = {t: agg(r) for t, r in runs.items()}
        if "direct" not in g or "nginx" not in g:
            continue
        for t in sorted(t for t in g if t.startswith("tollgate")):
            label = transport if t == "tollgate" else f"{transport} ({t[len('tollgate-'):]})"
            rows.append(((transport != "http", mode != "json", mode, c, t), label, mode, c, g, g[t]))
    https = False
    for _, label, mode, c, g, tg in sorted(rows, key=lambda r: r[0]):
        https = https or label.startswith("https")
        di, ng = g["direct"], g["nginx"]
        print(f"| {label} | {mode} | {c} | {di['rps']:,.0f} | {ng['rps']:,.0f} ({ratio(ng['rps'], di['rps']):.2f}) "
              f"| {tg['rps']:,.0f} ({ratio(tg['rps'], di['rps']):.2f}, {ratio(tg['rps'], ng['rps']):.2f}) "
              f"| {ng['p50'] - di['p50']:.3f} / {tg['p50'] - di['p50']:.3f} "
              f"| {ng['p99'] - di['p99']:.2f} / {tg['p99'] - di['p99']:.2f} "
              f"| {ng.get('cpu_us', NAN):.0f} / {tg.get('cpu_us', NAN):.0f} "
              f"| {ng.get('rss_mb', NAN):.1f} / {tg.get('rss_mb', NAN):.1f} "
              f"| {di['bad']} / {ng['bad']} / {tg['bad']} |")
    if https:
        print("\nhttps: the proxies reach the mock over TLS (callers speak plain HTTP to them; direct is oha over TLS"
              " to the mock); nginx: HTTP/1.1 with a keep-alive pool; (h1) / (h2): tollgate's protocol to the"
              " upstream.")
    print()
    for idle in sorted(glob.glob(os.path.join(d, "tollgate*-idle-rss-kb")), key=http_first):
        name = os.path.basename(idle)[:-len("-idle-rss-kb")]
        print(f"{name} idle RSS before load: {int(open(idle).read()) / 1024:.1f} MiB")
    for metrics in sorted(glob.glob(os.path.join(d, "*metrics.txt")), key=http_first):
        name = os.path.basename(metrics)[:-len("metrics.txt")].rstrip("-") or "tollgate"
        tokens = {}
        for line in open(metrics):
            if line.startswith("tollgate_tokens_total{"):
                labels, value = line.rsplit(" ", 1)
                tokens[labels[len("tollgate_tokens_total"):]] = int(float(value))
        if tokens:
            print(f"tokens metered by {name} over the run: "
                  + ", ".join(f"{k} {v:,}" for k, v in sorted(tokens.items())))


if __name__ == "__main__":
    main()
