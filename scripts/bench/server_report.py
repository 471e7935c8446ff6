#!/usr/bin/env python3
"""The table of scripts/bench/server.sh: ebsim serve against moto_server.

usage: server_report.py RESULTS_DIR BENCHMARKS_MD   (rewrites this machine kind's section)
       server_report.py RESULTS_DIR -               (prints it)

BENCHMARKS.md keeps one section per machine kind (the CPU's vendor and family,
with or without AVX-512), between `<!-- server:begin KIND -->` and
`<!-- server:end KIND -->`, so that figures from different machines are never
compared: a run replaces its own kind's section and adds one for a new kind.

RESULTS_DIR holds `meta` and one wrk output per measurement, named
<op>.<connections>.<server>.<round>, each with the RESULT line of the wrk script
(scripts/bench/server_requests.py).
"""

import os
import re
import statistics
import sys

BEGIN = "<!-- server:begin %s -->"
END = "<!-- server:end %s -->"
OPS = ["Encrypt", "Decrypt", "GenerateDataKey"]
SERVERS = ["ebsim", "moto"]
# PERF.md's targets for KMS over the wire.
RATIO_TARGET = 20.0
P99_TARGET_US = 1000
P99_AT = 16


def load(results):
    data = {}
    for name in os.listdir(results):
        m = re.fullmatch(r"(\w+)\.(\d+)\.(ebsim|moto)\.(\d+)", name)
        if not m:
            continue
        with open(os.path.join(results, name)) as f:
            line = next((l for l in f if l.startswith("RESULT ")), None)
        if line is None:
            continue
        kv = dict(p.split("=", 1) for p in line.split()[1:])
        rps = int(kv["requests"]) / (int(kv["duration_us"]) / 1e6)
        data.setdefault((m[1], int(m[2]), m[3]), []).append(
            {"round": int(m[4]), "rps": rps, "p50": int(kv["p50_us"]), "p99": int(kv["p99_us"])}
        )
    for rows in data.values():
        rows.sort(key=lambda r: r["round"])
    return data


def med(rows, k):
    return statistics.median(r[k] for r in rows)


def fmt_us(us):
    return "%.0f µs" % us if us < 1000 else "%.1f ms" % (us / 1000)


def fmt_rps(v):
    return "{:,.0f}".format(v)


def kind(meta):
    """The machine kind: vendor and family from the CPU model, and AVX-512."""
    cpu = meta["cpu"]
    name = next((k for k in ("AMD EPYC", "Intel Xeon", "AMD Ryzen", "Intel Core") if k.split()[1] in cpu and k.split()[0] in cpu), cpu.split("(")[0].strip())
    flags = meta["flags"].split()
    return "%s %s AVX-512" % (name, "with" if "avx512f" in flags else "without")


def section(results):
    with open(os.path.join(results, "meta")) as f:
        meta = dict(l.rstrip("\n").split(": ", 1) for l in f if ": " in l)
    data = load(results)
    conns = sorted({c for (_, c, _) in data})
    lines = [
        BEGIN % kind(meta),
        "",
        "### %s" % kind(meta),
        "",
        "Machine: `%s` (%s, %s vCPUs; flags %s). Kernel %s. ebsim %s; moto %s; "
        "botocore %s (signer); wrk %s. %s; %s."
        % (
            meta["cpu"],
            meta["date"],
            meta["cpus"],
            meta["flags"].strip(),
            meta["kernel"],
            meta["ebsim"],
            meta["moto"],
            meta["botocore"],
            meta["wrk"],
            meta["pinning"][:1].upper() + meta["pinning"][1:],
            meta["runtime"],
        ),
        "",
        "Requests per second and wrk's latency percentiles, median of the rounds "
        "(requests per second: min–max in brackets; ebsim/moto: the ratio of the medians, "
        "then the range of the rounds' own ratios):",
        "",
        "| operation | clients | ebsim req/s | ebsim p50 | ebsim p99 | moto req/s | moto p50 | moto p99 | ebsim/moto |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ratios = []
    p99s = []
    for op in OPS:
        for c in conns:
            e, m = data.get((op, c, "ebsim")), data.get((op, c, "moto"))
            if not e or not m:
                continue
            ratio = med(e, "rps") / med(m, "rps")
            # Each round measured both side by side: the spread of those ratios.
            mr = {r["round"]: r["rps"] for r in m}
            paired = [r["rps"] / mr[r["round"]] for r in e if r["round"] in mr]
            ratios.append((op, c, ratio))
            if c == P99_AT:
                p99s.append((op, med(e, "p99")))
            lines.append(
                "| %s | %d | %s (%s–%s) | %s | %s | %s (%s–%s) | %s | %s | **%.0f×** (%.0f–%.0f) |"
                % (
                    op,
                    c,
                    fmt_rps(med(e, "rps")),
                    fmt_rps(min(r["rps"] for r in e)),
                    fmt_rps(max(r["rps"] for r in e)),
                    fmt_us(med(e, "p50")),
                    fmt_us(med(e, "p99")),
                    fmt_rps(med(m, "rps")),
                    fmt_rps(min(r["rps"] for r in m)),
                    fmt_rps(max(r["rps"] for r in m)),
                    fmt_us(med(m, "p50")),
                    fmt_us(med(m, "p99")),
                    ratio,
                    min(paired),
                    max(paired),
                )
            )
    if ratios:
        low = min(ratios, key=lambda t: t[2])
        met = all(r >= RATIO_TARGET for (_, _, r) in ratios)
        lines += [
            "",
            "Target ≥ %.0f× moto_server's requests per second: **%s** (lowest %.0f×, %s at %d client%s)."
            % (RATIO_TARGET, "met" if met else "not met", low[2], low[0], low[1], "" if low[1] == 1 else "s"),
        ]
    if p99s:
        worst = max(p99s, key=lambda t: t[1])
        met = all(p < P99_TARGET_US for (_, p) in p99s)
        lines.append(
            "Target p99 < 1 ms at %d clients: **%s** (highest %s, %s)."
            % (P99_AT, "met" if met else "not met", fmt_us(worst[1]), worst[0])
        )
    lines += ["", END % kind(meta)]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    text = section(sys.argv[1])
    if sys.argv[2] == "-":
        sys.stdout.write(text)
        return
    with open(sys.argv[2]) as f:
        doc = f.read()
    begin = text.split("\n", 1)[0]
    end = text.rstrip("\n").rsplit("\n", 1)[1]
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + text.rstrip("\n") + rest.split(end, 1)[1]
    else:
        # A new machine kind: after the last server section.
        last = [m.end() for m in re.finditer(r"<!-- server:end [^>]* -->", doc)]
        if not last:
            raise SystemExit("%s has no server sections" % sys.argv[2])
        doc = doc[: last[-1]] + "\n\n" + text.rstrip("\n") + doc[last[-1] :]
    with open(sys.argv[2], "w") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
