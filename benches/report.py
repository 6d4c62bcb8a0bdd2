#!/usr/bin/env python3
"""Turn benches/run.sh's results.tsv into the comparison table (stdout) and optional JSON.

results.tsv rows: builder, case, scenario, seconds, max_rss_kib, status
(builder `buildkitd` rows carry the daemon's peak RSS per case, scenario `all`).
"""

import argparse
import datetime
import json
import platform

# kiln time / BuildKit time must be at most this.
RATIO_TARGETS = {"cold": 0.9, "warm": 0.5, "edit": 0.8}
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
    a = ap.parse_args()

    rows = []
    with open(a.results) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 6:
                continue
            builder, case, scenario, secs, rss, status = parts
            rows.append({
                "builder": builder, "case": case, "scenario": scenario,
                "seconds": num(secs, float), "max_rss_kib": num(rss, int), "status": status,
            })

    def get(builder, case, scenario):
        for r in rows:
            if (r["builder"], r["case"], r["scenario"]) == (builder, case, scenario):
                return r
        return None

    have_bk = any(r["builder"] == "buildkit" for r in rows)
    order = []
    for r in rows:
        if r["builder"] == "kiln" and (r["case"], r["scenario"]) not in order:
            order.append((r["case"], r["scenario"]))

    def fmt_t(r):
        if r is None:
            return "-"
        if r["status"] != "ok":
            return r["status"].upper()
        return f"{r['seconds']:.2f}"

    comparisons = []
    head = f"{'case':<10} {'scenario':<8} {'kiln s':>9} {'buildkit s':>11} {'ratio':>7} {'target':>8}  result"
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
            verdict = "n/a (buildkit failed)"
        comparisons.append({
            "case": case, "scenario": sc,
            "kiln_seconds": k["seconds"] if k else None,
            "buildkit_seconds": b["seconds"] if b and b["status"] == "ok" else None,
            "ratio": round(ratio, 3) if ratio is not None else None,
            "target_ratio": target, "result": verdict,
        })
        print(f"{case:<10} {sc:<8} {fmt_t(k):>9} {fmt_t(b) if have_bk else '-':>11} "
              f"{(f'{ratio:.2f}' if ratio is not None else '-'):>7} "
              f"{('<= ' + str(target)) if target is not None else '':>8}  {verdict}")

    rss = {}
    k = get("kiln", "cprog", "cold")
    if k and k["max_rss_kib"]:
        mib = k["max_rss_kib"] / 1024
        verdict = "PASS" if mib <= RSS_TARGET_MIB else "MISS"
        rss = {"kiln_cprog_cold_mib": round(mib, 1), "target_mib": RSS_TARGET_MIB, "result": verdict}
        print(f"\nkiln peak RSS, cprog cold: {mib:.1f} MiB (target <= {RSS_TARGET_MIB} MiB)  {verdict}")
    kiln_peaks = [(r["case"], r["scenario"], r["max_rss_kib"]) for r in rows
                  if r["builder"] == "kiln" and r["max_rss_kib"]]
    if kiln_peaks:
        print("kiln peak RSS per build (MiB): " + ", ".join(
            f"{c}/{s} {v / 1024:.0f}" for c, s, v in kiln_peaks))
    bkd = [(r["case"], r["max_rss_kib"]) for r in rows if r["builder"] == "buildkitd" and r["max_rss_kib"]]
    if bkd:
        print("buildkitd peak RSS per case (VmHWM, MiB): " + ", ".join(
            f"{c} {v / 1024:.0f}" for c, v in bkd))
    print(f"\nkiln: {a.kiln_version.strip() or '?'}; buildkit: {a.buildkit_version.strip() or 'not run'}; "
          f"{a.nproc} CPUs; registry {a.registry}")

    if a.json:
        doc = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "host": {"machine": platform.machine(), "kernel": platform.release(), "nproc": a.nproc},
            "kiln_version": a.kiln_version.strip(),
            "buildkit_version": a.buildkit_version.strip() or None,
            "targets": {"ratio": RATIO_TARGETS, "kiln_cprog_cold_rss_mib": RSS_TARGET_MIB},
            "results": rows,
            "comparisons": comparisons,
            "rss": rss,
        }
        with open(a.json, "w") as f:
            json.dump(doc, f, indent=2)
            f.write("\n")
        print(f"JSON written to {a.json}")


if __name__ == "__main__":
    main()
