#!/usr/bin/env python3
"""Draws a soak run's samples (benches/soak.sh) as a small SVG and checks that they stay flat.

    soak_plot.py samples.csv out.svg

samples.csv has the columns seconds, rss_kib, fds, requests. Prints the first, reference and last samples;
exits 1 if the last sample's RSS is more than 10% + 4 MiB above the reference (the sample at one fifth of
the run, after the warm-up) or its descriptors more than 16 above it.
"""
import csv
import sys

W, H = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 56, 28, 40


def read(path):
    with open(path) as f:
        return [
            (int(r["seconds"]), int(r["rss_kib"]) / 1024, int(r["fds"]), int(r["requests"]))
            for r in csv.DictReader(f)
        ]


def nice_top(value):
    """The smallest 1, 2 or 5 × 10^n at or above value (at least 1)."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def svg(rows):
    minutes = max(rows[-1][0] / 60, 1e-9)
    rss_top = nice_top(max(r[1] for r in rows) * 1.25)
    fd_top = nice_top(max(r[2] for r in rows) * 1.25)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def x(sec):
        return LEFT + pw * (sec / 60) / minutes

    def line(values, top):
        return " ".join(f"{x(s):.1f},{TOP + ph * (1 - v / top):.1f}" for s, v in values)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="12">tollgate soak: {minutes:.0f} min of mixed load, '
        f"{rows[-1][3]:,} requests</text>",
    ]
    for i in range(5):
        y = TOP + ph * i / 4
        out.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#1f6feb">'
                   f"{rss_top * (1 - i / 4):g}</text>")
        out.append(f'<text x="{W - RIGHT + 6}" y="{y + 4:.1f}" fill="#d1242f">{fd_top * (1 - i / 4):g}</text>')
    for i in range(6):
        m = minutes * i / 5
        out.append(f'<text x="{x(m * 60):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle">{m:.0f}</text>')
    out += [
        f'<text x="{LEFT + pw / 2}" y="{H - 8}" text-anchor="middle">minutes</text>',
        f'<text x="14" y="{TOP + ph / 2}" fill="#1f6feb" transform="rotate(-90 14 {TOP + ph / 2})" '
        'text-anchor="middle">RSS (MiB)</text>',
        f'<text x="{W - 12}" y="{TOP + ph / 2}" fill="#d1242f" transform="rotate(90 {W - 12} {TOP + ph / 2})" '
        'text-anchor="middle">open descriptors</text>',
        f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{line([(r[0], r[1]) for r in rows], rss_top)}"/>',
        f'<polyline fill="none" stroke="#d1242f" stroke-width="2" stroke-dasharray="5 3" '
        f'points="{line([(r[0], r[2]) for r in rows], fd_top)}"/>',
        "</svg>",
    ]
    return "\n".join(out) + "\n"


def main():
    rows = read(sys.argv[1])
    if len(rows) < 3:
        sys.exit("soak_plot.py: fewer than three samples")
    with open(sys.argv[2], "w") as f:
        f.write(svg(rows))
    ref = min(rows[1:], key=lambda r: abs(r[0] - rows[-1][0] / 5))
    for name, r in (("start", rows[0]), ("reference", ref), ("end", rows[-1])):
        print(f"{name:>9}: {r[0] / 60:5.1f} min  RSS {r[1]:6.1f} MiB  descriptors {r[2]:4d}  requests {r[3]:,}")
    print(f"curve: {sys.argv[2]}")
    failed = False
    if rows[-1][1] > ref[1] * 1.10 + 4:
        print(f"RSS grew after the warm-up: {ref[1]:.1f} -> {rows[-1][1]:.1f} MiB")
        failed = True
    if rows[-1][2] > ref[2] + 16:
        print(f"descriptors grew after the warm-up: {ref[2]} -> {rows[-1][2]}")
        failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
