#!/usr/bin/env python3
"""Turns scripts/bench/fio.sh's JSON results into a markdown table (written into
docs/BENCHMARKS.md between the fio markers) and a bar chart (PNG).

usage: fio_report.py RESULTS_DIR BENCHMARKS_MD CHART_PNG "run description"
"""
import json
import os
import sys

TARGETS = ["plain", "fuse-plain", "fuse-xts", "ext4-xts"]
BEGIN = "<!-- fio:begin (scripts/bench/fio.sh writes this section) -->"
END = "<!-- fio:end -->"


def load(results):
    table = {}
    for name in os.listdir(results):
        target, job, _ = name.split(".", 2)
        j = json.load(open(os.path.join(results, name)))["jobs"][0]
        iops = j["read"]["iops"] + j["write"]["iops"]
        mib = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 2**20
        table.setdefault(job, {})[target] = (iops, mib)
    return table


def main():
    results, md, png, desc = sys.argv[1:5]
    table = load(results)
    jobs = [j for j in ["randread-4k-qd1", "randwrite-4k-qd1", "randread-4k-4jobs",
                        "randwrite-4k-4jobs", "read-1m-seq", "write-1m-seq"] if j in table]
    targets = [t for t in TARGETS if any(t in table[j] for j in jobs)]
    lines = [BEGIN, "", f"Measured in one run: {desc}.", "",
             "| job | " + " | ".join(targets) + " | fuse-xts / fuse-plain |",
             "|---|" + "---|" * (len(targets) + 1)]
    for j in jobs:
        cells = []
        for t in targets:
            iops, mib = table[j].get(t, (0, 0))
            cells.append(f"{mib:.1f} MiB/s" if "1m" in j else f"{iops:.0f} IOPS")
        plain = table[j].get("fuse-plain", (0, 0))
        xts = table[j].get("fuse-xts", (0, 0))
        ratio = xts[1] / plain[1] if plain[1] else 0
        mark = "" if ratio >= 0.8 else " (below 0.8×)"
        lines.append(f"| {j} | " + " | ".join(cells) + f" | {ratio:.2f}×{mark} |")
    lines += ["", f"![fio results]({os.path.basename(png)})", "", END]
    section = "\n".join(lines)
    text = open(md).read()
    if BEGIN in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n## fio through FUSE (`scripts/bench/fio.sh`)\n\n" + section + "\n"
    open(md, "w").write(text)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(jobs), figsize=(3 * len(jobs), 3.6))
    for ax, j in zip(axes, jobs):
        vals = [table[j].get(t, (0, 0))[1 if "1m" in j else 0] for t in targets]
        ax.bar(range(len(targets)), vals, color=["#888", "#4a7", "#c63", "#36c"][:len(targets)])
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(targets, rotation=45, ha="right", fontsize=8)
        ax.set_title(j, fontsize=9)
        ax.set_ylabel("MiB/s" if "1m" in j else "IOPS", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("ebsim fio: " + desc, fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
