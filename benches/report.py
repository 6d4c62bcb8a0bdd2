#!/usr/bin/env python3
"""Turn benches/run.sh's results.tsv into the comparison table (stdout) and optional JSON.

results.tsv rows: builder, case, scenario, seconds, max_rss_kib, status, repetition
(builder `buildkitd` rows carry the daemon's peak RSS per case, scenario `all`).
With several repetitions the table shows the median of each (builder, case, scenario) and the
min-max spread; a scenario that failed in any repetition counts as failed.
"""

import argparse
import datetime
import json
import platform
import statistics

# kiln time / BuildKit time must be at most this.
RATIO_TARGETS = {"cold": 0.9, "warm": 0.5, "edit": 0.8}
# buildctl against kiln's endpoint vs against buildkitd; the 10,000-file context's cold build is
# mostly its transfer, whose target is 0.7.
ENDPOINT_TARGETS = {"cold": 0.9, "warm": 0.5, "edit": 0.8}
ENDPOINT_CASE_TARGETS = {("ctx10k", "cold"): 0.7}
# kiln's peak RSS on the cprog cold build.
RSS_TARGET_MIB = 150


def num(s, kind):
    return kind(s) if s not in ("", None) else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--json")
    ap.add_argument("--kiln-version", default="")
    ap.add_argument("--buildkit-version", default="")
    ap.add_argument("--nproc", default="")
    ap.add_argument("--registry", default="")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--load", default="", help="load averages before / after")
    a = ap.parse_args()

    rows = []
    with open(a.results) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 7:
                continue
            builder, case, scenario, secs, rss, status, rep = parts
            rows.append({
                "builder": builder, "case": case, "scenario": scenario, "rep": int(rep),
                "seconds": num(secs, float), "max_rss_kib": num(rss, int), "status": status,
            })

    def get(builder, case, scenario):
        """Summary over repetitions: median seconds, min/max, peak RSS, worst status."""
        rs = [r for r in rows if (r["builder"], r["case"], r["scenario"]) == (builder, case, scenario)]
        if not rs:
            return None
        bad = [r["status"] for r in rs if r["status"] != "ok"]
        secs = [r["seconds"] for r in rs if r["status"] == "ok" and r["seconds"] is not None]
        rss = [r["max_rss_kib"] for r in rs if r["max_rss_kib"]]
        return {
            "status": bad[0] if bad else "ok", "n": len(secs),
            "seconds": statistics.median(secs) if secs else None,
            "min": min(secs) if secs else None, "max": max(secs) if secs else None,
            "max_rss_kib": max(rss) if rss else None,
        }

    have_bk = any(r["builder"] == "buildkit" for r in rows)
    order = []
    for r in rows:
        if r["builder"] == "kiln" and (r["case"], r["scenario"]) not in order:
            order.append((r["case"], r["scenario"]))

    multi = a.repeat > 1

    def fmt_t(r):
        if r is None:
            return "-"
        if r["status"] != "ok":
            return r["status"].upper()
        return f"{r['seconds']:.2f}"

    def fmt_spread(r):
        if r is None or r["status"] != "ok":
            return "-"
        return f"{r['min']:.2f}-{r['max']:.2f}"

    comparisons = []
    if multi:
        print(f"\nmedian of {a.repeat} runs (spread: min-max)")
    head = f"{'case':<10} {'scenario':<8} {'kiln s':>8} {'buildkit s':>10} {'ratio':>6} {'target':>7}  result"
    if multi:
        head += f"   {'kiln spread':>12} {'bk spread':>12}"
    print()
    print(head)
    print("-" * len(head))
    for case, sc in order:
        k, b = get("kiln", case, sc), get("buildkit", case, sc)
        target = RATIO_TARGETS.get(sc)
        ratio, verdict = None, "n/a"
        if k and k["status"] != "ok":
            verdict = "FAIL"
        elif b and b["status"] == "ok" and k and b["seconds"]:
            ratio = k["seconds"] / b["seconds"]
            verdict = "PASS" if target is not None and ratio <= target else "MISS"
        elif b and b["status"] != "ok":
            verdict = "n/a (bk failed)"
        comparisons.append({
            "case": case, "scenario": sc,
            "kiln_seconds": k["seconds"] if k else None,
            "buildkit_seconds": b["seconds"] if b and b["status"] == "ok" else None,
            "kiln_min_max": [k["min"], k["max"]] if k and k["status"] == "ok" else None,
            "buildkit_min_max": [b["min"], b["max"]] if b and b["status"] == "ok" else None,
            "ratio": round(ratio, 3) if ratio is not None else None,
            "target_ratio": target, "result": verdict,
        })
        line = (f"{case:<10} {sc:<8} {fmt_t(k):>8} {fmt_t(b) if have_bk else '-':>10} "
                f"{(f'{ratio:.2f}' if ratio is not None else '-'):>6} "
                f"{('<= ' + str(target)) if target is not None else '':>7}  {verdict:<6}")
        if multi:
            line += f" {fmt_spread(k):>12} {fmt_spread(b):>12}"
        print(line.rstrip())

    endpoint = []
    if any(r["builder"] == "endpoint" for r in rows):
        head = f"{'case':<10} {'scenario':<8} {'endpoint s':>10} {'buildkit s':>10} {'ratio':>6} {'target':>7}  result"
        print("\nbuildctl against kiln buildkitd (endpoint) vs against buildkitd")
        print(head)
        print("-" * len(head))
        for case, sc in order:
            e, b = get("endpoint", case, sc), get("buildkit", case, sc)
            target = ENDPOINT_CASE_TARGETS.get((case, sc), ENDPOINT_TARGETS.get(sc))
            ratio, verdict = None, "n/a"
            if e is None:
                continue
            if e["status"] != "ok":
                verdict = "FAIL"
            elif b and b["status"] == "ok" and b["seconds"]:
                ratio = e["seconds"] / b["seconds"]
                verdict = "PASS" if target is not None and ratio <= target else "MISS"
            endpoint.append({
                "case": case, "scenario": sc,
                "endpoint_seconds": e["seconds"],
                "buildkit_seconds": b["seconds"] if b and b["status"] == "ok" else None,
                "ratio": round(ratio, 3) if ratio is not None else None,
                "target_ratio": target, "result": verdict,
            })
            print((f"{case:<10} {sc:<8} {fmt_t(e):>10} {fmt_t(b):>10} "
                   f"{(f'{ratio:.2f}' if ratio is not None else '-'):>6} "
                   f"{('<= ' + str(target)) if target is not None else '':>7}  {verdict:<6}").rstrip())

    rss = {}
    k = get("kiln", "cprog", "cold")
    if k and k["max_rss_kib"]:
        mib = k["max_rss_kib"] / 1024
        verdict = "PASS" if mib <= RSS_TARGET_MIB else "MISS"
        rss = {"kiln_cprog_cold_mib": round(mib, 1), "target_mib": RSS_TARGET_MIB, "result": verdict}
        print(f"\nkiln peak RSS, cprog cold: {mib:.1f} MiB (target <= {RSS_TARGET_MIB} MiB)  {verdict}")
        print("  (/usr/bin/time -v: the largest of kiln and the processes it waited for)")
    peaks = []
    for case, sc in order:
        r = get("kiln", case, sc)
        if r and r["max_rss_kib"]:
            peaks.append(f"{case}/{sc} {r['max_rss_kib'] / 1024:.0f}")
    if peaks:
        print("kiln peak RSS per build (MiB): " + ", ".join(peaks))
    for daemon, label in (("buildkitd", "buildkitd"), ("kiln-buildkitd", "kiln buildkitd")):
        peak = {}
        for r in rows:
            if r["builder"] == daemon and r["max_rss_kib"]:
                peak[r["case"]] = max(peak.get(r["case"], 0), r["max_rss_kib"])
        if peak:
            print(f"{label} peak RSS per case (VmHWM, MiB): " + ", ".join(
                f"{c} {v / 1024:.0f}" for c, v in peak.items()))
    print(f"\nkiln: {a.kiln_version.strip() or '?'}; buildkit: {a.buildkit_version.strip() or 'not run'}; "
          f"{a.nproc} CPUs; registry {a.registry}")
    if a.load:
        print(f"load average (1/5/15 min) before / after: {a.load}")

    if a.json:
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"machine": platform.machine(), "kernel": platform.release(), "nproc": a.nproc, "loadavg_before_after": a.load},
            "kiln_version": a.kiln_version.strip(),
            "repeat": a.repeat,
            "buildkit_version": a.buildkit_version.strip() or None,
            "targets": {"ratio": RATIO_TARGETS, "kiln_cprog_cold_rss_mib": RSS_TARGET_MIB},
            "results": rows,
            "comparisons": comparisons,
            "endpoint_comparisons": endpoint,
            "rss": rss,
        }
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"JSON written to {a.json}")


if __name__ == "__main__":
    main()
