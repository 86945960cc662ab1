#!/usr/bin/env python3
"""Turn criterion's results into the tables and plots of docs/benchmarks.md.

Reads every `new/benchmark.json` + `new/estimates.json` under
target/criterion (criterion's own output of the last run of each bench),
prints markdown tables (median, and ratios to each peer), and draws
docs/benchmarks-scan-cost.png and docs/benchmarks-read-side.png.

    python3 benches/report.py [target/criterion] [docs]

Needs matplotlib for the plots (`pip install matplotlib`); the tables print
without it.
"""

import json
import os
import sys
from collections import defaultdict


def load(root):
    """{(group, function, value): (median_ns, throughput_elems_or_None)}"""
    out = {}
    for d, _, files in os.walk(root):
        if os.path.basename(d) != "new" or "benchmark.json" not in files:
            continue
        with open(os.path.join(d, "benchmark.json")) as f:
            b = json.load(f)
        with open(os.path.join(d, "estimates.json")) as f:
            e = json.load(f)
        thr = (b.get("throughput") or {}).get("Elements")
        out[(b["group_id"], b.get("function_id"), b.get("value_str"))] = (e["median"]["point_estimate"], thr)
    return out


def fmt_ns(ns):
    if ns >= 1e9:
        return f"{ns / 1e9:.2f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    if ns >= 10:
        return f"{ns:.1f} ns"
    return f"{ns:.2f} ns"


def fmt_rate(per_s):
    for unit, k in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if per_s >= k:
            return f"{per_s / k:.2f} {unit}/s"
    return f"{per_s:.0f} /s"


def table(res, group, base="usrcu"):
    """Functions of one group: median, and the ratio base/peer."""
    rows = {fn: v for (g, fn, val), v in res.items() if g == group and val is None}
    if not rows:
        return ""
    b = rows.get(base, (None,))[0]
    lines = [f"`{group}`", "", f"| case | median | {base} / case |", "|---|---:|---:|"]
    for fn, (ns, _) in sorted(rows.items(), key=lambda kv: kv[1][0]):
        ratio = f"{b / ns:.2f}x" if b else ""
        lines.append(f"| {fn} | {fmt_ns(ns)} | {ratio} |")
    return "\n".join(lines) + "\n"


def param_table(res, prefix, label):
    """Groups `prefix/<peer>` with numeric parameters: one column per peer."""
    by_peer = defaultdict(dict)
    for (g, fn, val), (ns, thr) in res.items():
        if g.startswith(prefix + "/") and fn is None and val is not None:
            by_peer[g[len(prefix) + 1:]][int(val)] = (ns, thr)
    if not by_peer:
        return ""
    params = sorted({p for v in by_peer.values() for p in v})
    peers = sorted(by_peer)
    lines = [f"`{prefix}/*` (median time per iteration; throughput where it applies)", "",
             f"| {label} | " + " | ".join(peers) + " |", "|---:|" + "---:|" * len(peers)]
    for p in params:
        cells = []
        for peer in peers:
            v = by_peer[peer].get(p)
            if v is None:
                cells.append("")
                continue
            ns, thr = v
            cells.append(fmt_ns(ns) + (f" ({fmt_rate(thr * 1e9 / ns)})" if thr else ""))
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def series(res, group):
    pts = sorted((int(val), ns) for (g, fn, val), (ns, _) in res.items() if g == group and val is not None)
    return [p for p, _ in pts], [n for _, n in pts]


def plots(res, docs):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib missing: no plots)", file=sys.stderr)
        return

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for group, label, style, color in [
        ("scan_cost/reader_check", "reader check (1 rank)", "o-", "tab:blue"),
        ("scan_cost/grace_period", "grace period (expedited)", "s-", "tab:orange"),
        ("scan_cost/barrier", "barrier (used, idle)", "^-", "tab:green"),
        ("scan_cost/cleanup", "cleanup", "v-", "tab:red"),
        ("scan_cost/notifier_barrier_phase_100_domains/ungated", "notifier barrier phase, 100 domains, ungated", "D--", "tab:purple"),
        ("scan_cost/notifier_barrier_phase_100_domains/gated", "notifier barrier phase, 100 domains, gated", "D-", "tab:purple"),
        ("scan_cost/notifier_100_domains/ungated", "whole notifier (+cleanup), 100 domains, ungated", "x--", "tab:gray"),
        ("scan_cost/notifier_100_domains/gated", "whole notifier (+cleanup), 100 domains, gated", "x-", "tab:gray"),
    ]:
        x, y = series(res, group)
        if x:
            ax1.plot(x, [v / 1e3 for v in y], style, label=label, color=color)
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("possible CPUs (simulated)")
    ax1.set_ylabel("median time (µs)")
    ax1.set_title("Per-CPU scan cost against possible CPUs")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7)

    for group, label, style, color in [
        ("scan_cost/notifier_barrier_phase_4096_cpus/ungated", "barrier phase, ungated", "D--", "tab:purple"),
        ("scan_cost/notifier_barrier_phase_4096_cpus/gated", "barrier phase, gated", "D-", "tab:purple"),
        ("scan_cost/notifier_4096_cpus/ungated", "whole notifier (+cleanup), ungated", "x--", "tab:gray"),
        ("scan_cost/notifier_4096_cpus/gated", "whole notifier (+cleanup), gated", "x-", "tab:gray"),
    ]:
        x, y = series(res, group)
        if x:
            ax2.plot(x, [v / 1e3 for v in y], style, label=label, color=color)
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("static domains in the module")
    ax2.set_ylabel("median time (µs)")
    ax2.set_title("Unload SRCU notifier at 4096 possible CPUs: gated vs ungated")
    ax2.grid(True, which="both", alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(docs, "benchmarks-scan-cost.png"), dpi=110)
    plt.close(fig)

    rows = {fn: ns for (g, fn, val), (ns, _) in res.items() if g == "read_side/lock_unlock"}
    if rows:
        items = sorted(rows.items(), key=lambda kv: kv[1])
        fig, ax = plt.subplots(figsize=(8, 4))
        names = [k for k, _ in items]
        vals = [v for _, v in items]
        colors = ["tab:orange" if n.startswith("usrcu") else "tab:blue" for n in names]
        ax.barh(names, vals, color=colors)
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.1f} ns", va="center", fontsize=8)
        ax.set_xlabel("median ns per lock + unlock (one thread)")
        ax.set_title("read_side/lock_unlock")
        ax.invert_yaxis()
        fig.tight_layout()
        fig.savefig(os.path.join(docs, "benchmarks-read-side.png"), dpi=110)
        plt.close(fig)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    docs = sys.argv[2] if len(sys.argv) > 2 else "docs"
    res = load(root)
    for g in ["read_side/lock_unlock", "read_side/nested", "synchronize_latency/idle",
              "synchronize_latency/readers", "synchronize_latency/batching_8_callers",
              "unload_cost/load_unload_cycle"]:
        base = {"synchronize_latency/idle": "usrcu_synchronize_expedited",
                "synchronize_latency/readers": "usrcu_synchronize_expedited",
                "synchronize_latency/batching_8_callers": "usrcu_synchronize",
                "unload_cost/load_unload_cycle": "module_loader"}.get(g, "usrcu")
        t = table(res, g, base)
        if t:
            print(t)
    for prefix, label in [("read_scaling", "threads"), ("call_srcu_throughput", "threads")]:
        t = param_table(res, prefix, label)
        if t:
            print(t)
    for title, groups in [
        ("possible CPUs", ["scan_cost/reader_check", "scan_cost/grace_period", "scan_cost/barrier", "scan_cost/cleanup",
                           "scan_cost/notifier_barrier_phase_100_domains/gated",
                           "scan_cost/notifier_barrier_phase_100_domains/ungated",
                           "scan_cost/notifier_100_domains/gated", "scan_cost/notifier_100_domains/ungated"]),
        ("domains", ["scan_cost/notifier_barrier_phase_4096_cpus/gated",
                     "scan_cost/notifier_barrier_phase_4096_cpus/ungated",
                     "scan_cost/notifier_4096_cpus/gated", "scan_cost/notifier_4096_cpus/ungated"]),
    ]:
        cols = {g: dict(zip(*series(res, g))) for g in groups}
        params = sorted({p for c in cols.values() for p in c})
        if not params:
            continue
        print(f"| {title} | " + " | ".join(g.replace("scan_cost/", "") for g in groups) + " |")
        print("|---:|" + "---:|" * len(groups))
        for p in params:
            print(f"| {p} | " + " | ".join(fmt_ns(cols[g][p]) if p in cols[g] else "" for g in groups) + " |")
        print()
    plots(res, docs)


if __name__ == "__main__":
    main()
