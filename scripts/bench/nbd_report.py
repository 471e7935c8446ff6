#!/usr/bin/env python3
"""Turns scripts/bench/nbd.sh's JSON results into a markdown table (written into
docs/BENCHMARKS.md between the nbd markers) and a bar chart (PNG).

usage: nbd_report.py RESULTS_DIR BENCHMARKS_MD CHART_PNG "run description"
"""
import json
import os
import statistics
import sys

TARGETS = ["ebsim-xts", "ebsim-plain", "qemu-raw", "qemu-luks", "nbdkit-file", "nbdkit-luks",
           "nbdkit-null"]
JOBS = ["randread-4k-qd1", "randwrite-4k-qd1", "randread-4k-qd16", "randwrite-4k-qd16",
        "read-1m-seq", "write-1m-seq", "nbdcopy-null"]
BEGIN = "<!-- nbd:begin (scripts/bench/nbd.sh writes this section) -->"
END = "<!-- nbd:end -->"


def is_bw(job):
    return "1m" in job or job == "nbdcopy-null"


def load(results):
    runs = {}
    for name in os.listdir(results):
        target, job, _round, _ = name.split(".")
        d = json.load(open(os.path.join(results, name)))
        if "mib" in d:
            v = d["mib"]
        else:
            j = d["jobs"][0]
            if is_bw(job):
                v = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 2**20
            else:
                v = j["read"]["iops"] + j["write"]["iops"]
        runs.setdefault(job, {}).setdefault(target, []).append(v)
    return {j: {t: statistics.median(v) for t, v in ts.items()} for j, ts in runs.items()}


def main():
    results, md, png, desc = sys.argv[1:5]
    table = load(results)
    jobs = [j for j in JOBS if j in table]
    targets = [t for t in TARGETS if any(t in table[j] for j in jobs)]
    lines = [BEGIN, "", f"Measured in one run: {desc}. IOPS for 4k jobs, MiB/s otherwise.", "",
             "| job | " + " | ".join(targets) + " | xts / qemu-luks | xts / nbdkit-luks | xts / qemu-raw |",
             "|---|" + "---|" * (len(targets) + 3)]
    for j in jobs:
        cells = [f"{table[j].get(t, 0):.0f}" for t in targets]
        x = table[j].get("ebsim-xts", 0)

        def ratio(peer, target):
            p = table[j].get(peer, 0)
            if not p:
                return "–"
            r = x / p
            return f"{r:.2f}×" + ("" if r >= target else " (below)")
        lines.append(f"| {j} | " + " | ".join(cells) + " | " + " | ".join(
            [ratio("qemu-luks", 2.0), ratio("nbdkit-luks", 2.0), ratio("qemu-raw", 0.8)]) + " |")
    lines += ["", "Targets: ebsim-xts ≥ 2× both LUKS peers and ≥ 0.8× qemu-nbd raw on every job "
              "(\"(below)\" marks a miss). nbdkit-null stores nothing: it is the floor the client "
              "and the socket set, not a peer.", "", f"![NBD peers]({os.path.basename(png)})", "", END]
    section = "\n".join(lines)
    text = open(md).read()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## NBD against qemu-nbd and nbdkit (`scripts/bench/nbd.sh`)\n\n" + section + "\n"
    open(md, "w").write(text)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(jobs), figsize=(2.8 * len(jobs), 3.8))
    colors = ["#c63", "#e96", "#888", "#36c", "#aaa", "#69c", "#ddd"]
    for ax, j in zip(axes, jobs):
        vals = [table[j].get(t, 0) for t in targets]
        ax.bar(range(len(targets)), vals, color=colors[:len(targets)])
        # nbdkit-null can be far off the peers' scale (nbdcopy to null: from a
        # server that stores nothing); cap the axis at the peers and label it.
        peers = [v for t, v in zip(targets, vals) if t != "nbdkit-null"]
        if "nbdkit-null" in targets and peers and max(vals) > 2 * max(peers):
            top = 1.25 * max(peers)
            ax.set_ylim(0, top)
            i = targets.index("nbdkit-null")
            ax.text(i, top * 0.97, f"{vals[i]:.0f}\n(off scale)", ha="center", va="top",
                    fontsize=6)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(targets, rotation=50, ha="right", fontsize=7)
        ax.set_title(j, fontsize=9)
        ax.set_ylabel("MiB/s" if is_bw(j) else "IOPS", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("ebsim NBD vs peers: " + desc, fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
