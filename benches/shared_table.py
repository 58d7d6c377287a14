#!/usr/bin/env python3
"""Prints the table of a benches/shared_load.sh run: one row per mode, concurrency and target, each beside the
embedded mode and direct.

usage: shared_table.py RESULTS_DIR

Reads RESULTS_DIR/runs/<target>_<mode>_c<C>_r<R>.json (oha JSON), .proc.json (samples of the target's
processes: its tollgates, and for shared3 the nginx in front of them) and .services.json (samples of Redis
and PostgreSQL while a shared target ran). Figures are means over repetitions; peak RSS is the maximum.
"""
import glob
import json
import os
import re
import statistics
import sys

RUN = re.compile(r"^(direct|embedded|shared|shared3|shared-base)_([a-z0-9]+)_c(\d+)_r(\d+)\.json$")
ORDER = ["embedded", "shared", "shared3", "shared-base"]
LABEL = {"embedded": "embedded (SQLite, memory)", "shared": "shared ×1 (PostgreSQL, Redis)",
         "shared3": "shared ×3 behind nginx", "shared-base": "shared ×1, baseline binary"}
NAN = float("nan")


def load(path):
    d = json.load(open(path))
    s, lp = d["summary"], d.get("latencyPercentiles") or {}
    codes = {int(k): v for k, v in (d.get("statusCodeDistribution") or {}).items()}
    errors = sum(v for k, v in (d.get("errorDistribution") or {}).items() if k != "aborted due to deadline")
    total = sum(codes.values())
    run = {"rps": s["requestsPerSec"], "p50": (lp.get("p50") or 0) * 1e3, "p99": (lp.get("p99") or 0) * 1e3,
           "bad": total - sum(v for k, v in codes.items() if 200 <= k < 300) + errors}
    for suffix, cpu, rss in ((".proc.json", "cpu_us", "rss_mb"), (".services.json", "svc_us", None)):
        side = path[:-5] + suffix
        if os.path.exists(side) and total:
            p = json.load(open(side))
            run[cpu] = p["cpu_s"] * 1e6 / total
            if rss:
                run[rss] = p["peak_rss_kb"] / 1024
    return run


def agg(runs):
    out = {k: statistics.fmean(r[k] for r in runs) for k in ("rps", "p50", "p99")}
    out["bad"] = sum(r["bad"] for r in runs)
    for k in ("cpu_us", "svc_us"):
        if all(k in r for r in runs):
            out[k] = statistics.fmean(r[k] for r in runs)
    if all("rss_mb" in r for r in runs):
        out["rss_mb"] = max(r["rss_mb"] for r in runs)
    return out


def main():
    d = sys.argv[1]
    groups = {}
    for p in glob.glob(os.path.join(d, "runs", "*.json")):
        m = RUN.match(os.path.basename(p))
        if m:
            groups.setdefault((m.group(2), int(m.group(3))), {}).setdefault(m.group(1), []).append(load(p))
    print("| mode | c | target | req/s | ÷ embedded | added p50 ms | added p99 ms | CPU µs/req "
          "| Redis + PostgreSQL CPU µs/req | peak RSS MB | non-2xx or errors |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (mode, c), runs in sorted(groups.items(), key=lambda g: (g[0][0] != "json", g[0])):
        g = {t: agg(r) for t, r in runs.items()}
        if "direct" not in g or "embedded" not in g:
            continue
        di, em = g["direct"], g["embedded"]
        print(f"| {mode} | {c} | direct | {di['rps']:,.0f} | | | | | | | {di['bad']} |")
        for t in (t for t in ORDER if t in g):
            x = g[t]
            svc = f"{x['svc_us']:.0f}" if "svc_us" in x else ""
            print(f"| {mode} | {c} | {LABEL[t]} | {x['rps']:,.0f} | {x['rps'] / em['rps']:.2f} "
                  f"| {x['p50'] - di['p50']:.3f} | {x['p99'] - di['p99']:.2f} | {x.get('cpu_us', NAN):.0f} "
                  f"| {svc} | {x.get('rss_mb', NAN):.1f} | {x['bad']} |")
    print("\nCPU µs/req: every tollgate process of the target (and for ×3 the nginx in front of them). Redis +"
          " PostgreSQL: the whole Redis server and every PostgreSQL process while the target ran, so anything"
          " else using them counts too. Peak RSS: the sum over the target's processes.")
    for idle in sorted(glob.glob(os.path.join(d, "*-idle-rss-kb"))):
        name = os.path.basename(idle)[:-len("-idle-rss-kb")]
        print(f"{name} idle RSS before load: {int(open(idle).read()) / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
