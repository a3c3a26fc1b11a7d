#!/usr/bin/env python3
"""Collects the step results scripts/gpu-check.sh left in OUT into OUT/gpu-check.json and a
Markdown summary OUT/gpu-check.md. Each step wrote OUT/<step>.json ({"status": "ok" | "failed"
| "skipped", "seconds": ..., "reason": ..., and its numbers}; the build step's status may also be
"prebuilt": programs made by scripts/gpu-prebuild.sh); a missing file is a step that never ran.
Usage: gpu_check_report.py OUT"""
import json
import os
import sys

STEPS = [
    ("build", "build (setup.sh, or prebuilt)"),
    ("cuda_tests", "[cuda] tests"),
    ("distill_7b", "(a) LLaMA-7B-shaped distillation, one GPU"),
    ("distill_step", "(b) distillation step vs PyTorch + transformers"),
    ("nccl", "(c) NCCL path, world size 1"),
    ("deploy", "(d) deployment kernel/decode benchmarks"),
]
GIB = float(1 << 30)


def load(out, name):
    path = os.path.join(out, name + ".json")
    if not os.path.exists(path):
        return {"status": "missing", "reason": "the step did not run"}
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"status": "failed", "reason": f"unreadable result {path}: {e}"}


def detail(name, r):
    """One line of the step's numbers for the Markdown table."""
    if r.get("status") != "ok":
        return r.get("reason", "")
    if name == "build":
        return f"{r.get('seconds', 0):.0f} s" + (f" ({r['reason']})" if r.get("reason") else "")
    if name == "cuda_tests":
        return f"{r.get('passed', 0)} passed, {r.get('failed', 0)} failed, {r.get('skipped', 0)} skipped"
    if name in ("distill_7b", "nccl"):
        parts = [f"{r['params'] / 1e9:.2f}B params" if "params" in r else "",
                 f"peak {r['peak_bytes'] / GIB:.1f} GiB (planned {r['planned_peak_bytes'] / GIB:.1f})"
                 if "peak_bytes" in r else "",
                 f"{r['tokens_per_s']:.0f} tokens/s" if "tokens_per_s" in r else "",
                 f"MFU {100 * r['mfu']:.1f}%" if "mfu" in r else "",
                 f"sync {r['sync']}" if name == "nccl" and "sync" in r else ""]
        return ", ".join(p for p in parts if p)
    if name == "distill_step":
        keys = [k for k in ("step_time_ratio", "peak_memory_ratio") if k in r]
        return ", ".join(f"{k} {r[k]:.3f}" for k in keys) or "see distill_step.txt"
    return r.get("summary", "")


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    meta = load(out, "meta")
    results = {name: load(out, name) for name, _ in STEPS}
    report = {"gpu": meta.get("gpu", "none"), "host": meta.get("host", ""), "date": meta.get("date", ""),
              "seconds": meta.get("seconds"), "steps": results,
              "ok": all(r.get("status") in ("ok", "skipped", "prebuilt") for r in results.values())}
    tmp = os.path.join(out, ".gpu-check.json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    os.replace(tmp, os.path.join(out, "gpu-check.json"))

    lines = [f"# onebit GPU check: {report['gpu']}", "",
             f"{report['date']} on {report['host']}" + (f", {report['seconds']:.0f} s" if report["seconds"] else ""),
             "", "| step | status | result |", "| --- | --- | --- |"]
    for name, label in STEPS:
        r = results[name]
        lines.append(f"| {label} | {r.get('status', '?')} | {detail(name, r)} |")
    lines.append("")
    tmp = os.path.join(out, ".gpu-check.md.tmp")
    with open(tmp, "w") as f:
        f.write("\n".join(lines))
    os.replace(tmp, os.path.join(out, "gpu-check.md"))
    print("\n".join(lines))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
