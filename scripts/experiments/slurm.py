"""SLURM submission of a sweep: one job array element per point (docs/experiments.md, "SLURM").

A `prepare` job makes what points share (embedded teachers, self-sampled data, teacher
evaluations); the array depends on it (afterok). Each element runs
`onebit-sweep point SWEEP --index $SLURM_ARRAY_TASK_ID`, whose distil stage starts one
onebit-train rank per task through srun when the element has several tasks (nodes)."""
import json
import os
import shlex
import subprocess
import sys
import time

from .common import ToolError, write_atomic

# submit option -> sbatch flag (values go to both jobs unless noted in prepare_flags)
RESOURCES = (("nodes", "--nodes"), ("ntasks_per_node", "--ntasks-per-node"), ("gpus_per_node", "--gpus-per-node"),
             ("cpus_per_task", "--cpus-per-task"), ("mem", "--mem"), ("time", "--time"),
             ("partition", "--partition"), ("account", "--account"), ("qos", "--qos"))
SLURM_KEYS = tuple(k for k, _ in RESOURCES) + ("max_parallel", "sbatch_args")


def ranges(indices):
    """[0, 1, 2, 5, 7, 8] -> '0-2,5,7-8' (sbatch --array syntax)."""
    out, idx = [], sorted(indices)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and idx[j + 1] == idx[j] + 1:
            j += 1
        out.append(str(idx[i]) if i == j else f"{idx[i]}-{idx[j]}")
        i = j + 1
    return ",".join(out)


# Both job scripts run the sweep tool in the background and pass the stop signals on to it: with
# --signal=B:USR1@120 SLURM signals only this shell, 120 s (up to 60 s more) before the time
# limit; the tool passes the signal to the running program (onebit-train, or srun, which passes
# it to every rank), which checkpoints and exits 138. The script then requeues the element
# (each array element has a job id of its own), and the requeued element resumes the point.
# A preemption (SIGTERM, exit 143) is requeued by SLURM itself (--requeue); after scancel the
# element stays stopped.
JOB_SCRIPT = """#!/usr/bin/env bash
# {what}
# Submitted by 'onebit-sweep submit'; resources on its sbatch line.
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
set -euo pipefail
cd {cwd}
export OMP_NUM_THREADS=${{OMP_NUM_THREADS:-${{SLURM_CPUS_PER_TASK:-1}}}}
{command} &
TOOL=$!
trap 'kill -USR1 "$TOOL" 2>/dev/null || true' USR1
trap 'kill -TERM "$TOOL" 2>/dev/null || true' TERM
while true; do
  rc=0
  wait "$TOOL" || rc=$?
  kill -0 "$TOOL" 2>/dev/null || break  # still running: a trapped signal interrupted wait
done
if [[ $rc -eq 138 ]]; then  # checkpoint written before the time limit: run again
  echo "onebit-sweep: stopped before the time limit; requeueing job ${{SLURM_JOB_ID:?}}"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$rc"
"""


def write_scripts(sweep, bin_dir, cwd):
    """SWEEP/slurm/{point,prepare}.sbatch: resources come from the sbatch command line."""
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "onebit-sweep")
    q = shlex.quote
    run = f"{q(sys.executable)} {q(tool)}"
    scripts = {
        "point.sbatch": JOB_SCRIPT.format(
            what="One element of the sweep's job array = one point's pipeline (distil through srun on "
                 "every task of the element).",
            cwd=q(cwd), command=f"{run} point {q(sweep)} --index \"${{SLURM_ARRAY_TASK_ID:?not a SLURM array "
                                f"element}}\" --bin {q(bin_dir)}"),
        "prepare.sbatch": JOB_SCRIPT.format(
            what="What the sweep's points share (teachers, samples, teacher evaluations), before the array.",
            cwd=q(cwd), command=f"{run} prepare {q(sweep)} --bin {q(bin_dir)}"),
    }
    paths = {}
    for name, text in scripts.items():
        path = os.path.join(sweep, "slurm", name)
        write_atomic(path, text)
        os.chmod(path, 0o755)
        paths[name] = path
    os.makedirs(os.path.join(sweep, "slurm", "logs"), exist_ok=True)
    return paths


def options(cli, grid_defaults):
    """Submit options: the command line over the grid file's `slurm:` section."""
    for k in grid_defaults:
        if k not in SLURM_KEYS:
            raise ToolError(f"grid file: unknown key 'slurm.{k}' (expected one of {', '.join(SLURM_KEYS)})")
    o = {k: grid_defaults.get(k) for k in SLURM_KEYS}
    for k in SLURM_KEYS:
        v = getattr(cli, k, None)
        if v not in (None, []):
            o[k] = v
    o["sbatch_args"] = o["sbatch_args"] or []
    if isinstance(o["sbatch_args"], str):
        o["sbatch_args"] = shlex.split(o["sbatch_args"])
    return o


def _flags(o, prepare=False):
    f = []
    for key, flag in RESOURCES:
        v = o.get(key)
        if v in (None, ""):
            continue
        if prepare and key == "nodes":
            v = 1
        if prepare and key == "ntasks_per_node":
            v = 1
        if prepare and key == "gpus_per_node":
            v = min(int(v), 1)
        f.append(f"{flag}={v}")
    return f + list(o["sbatch_args"])


def commands(sweep, paths, o, indices, need_prepare):
    """The sbatch command lines: [prepare] (or None) and the array (with $PREPARE as dependency)."""
    name = "onebit-sweep-" + os.path.basename(sweep.rstrip("/"))
    logs = os.path.join(sweep, "slurm", "logs")
    prep = None
    if need_prepare:
        prep = (["sbatch", "--parsable", f"--job-name={name}-prepare"] + _flags(o, prepare=True)
                + [f"--output={logs}/prepare-%j.out", paths["prepare.sbatch"]])
    arr = ranges(indices) + (f"%{o['max_parallel']}" if o.get("max_parallel") else "")
    array = (["sbatch", "--parsable", f"--job-name={name}", f"--array={arr}"]
             + (["--dependency=afterok:$PREPARE"] if need_prepare else []) + _flags(o)
             + [f"--output={logs}/%A_%a.out", paths["point.sbatch"]])
    return prep, array


def shell_line(cmd):
    return " ".join(c if c == "--dependency=afterok:$PREPARE" else shlex.quote(c) for c in cmd)


def _job_id(stdout, cmd):
    first = stdout.strip().split("\n")[-1].strip() if stdout.strip() else ""
    job = first.split(";")[0]
    if not job.isdigit():
        raise ToolError(f"sbatch printed no job id (got {stdout.strip()!r}) for: {shell_line(cmd)}")
    return job


def submit(sweep, prep, array, dry_run, out):
    if dry_run:
        if prep:
            out(f"PREPARE=$({shell_line(prep)})")
        out(shell_line(array))
        return None
    log = os.path.join(sweep, "slurm", "submitted.jsonl")
    jobs = {}
    env = dict(os.environ)
    for role, cmd in (("prepare", prep), ("array", array)):
        if cmd is None:
            continue
        cmd = [c.replace("$PREPARE", jobs.get("prepare", "")) for c in cmd]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise ToolError("sbatch not found: run on a SLURM login node, or use --dry-run to see the lines")
        if r.returncode != 0:
            lines = [l for l in (r.stderr + r.stdout).splitlines() if l.strip()]
            raise ToolError(f"sbatch failed ({lines[-1] if lines else 'exit code ' + str(r.returncode)}): "
                            f"{shell_line(cmd)}")
        jobs[role] = _job_id(r.stdout, cmd)
        out(f"submitted {role} job {jobs[role]}: {shell_line(cmd)}")
        with open(log, "a") as f:
            f.write(json.dumps({"role": role, "job": jobs[role], "command": cmd,
                                "at": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")
    return jobs
