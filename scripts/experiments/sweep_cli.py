"""onebit-sweep: the command line (docs/experiments.md)."""
import argparse
import os
import sys

from . import slurm, sweep as sw
from .common import ToolError, is_sweep_dir

PROG = "onebit-sweep"

DESCRIPTION = """\
Grids of onebit runs. A grid file crosses and zips config keys and seeds over a base config;
every point gets a resolved config (onebit-train --print-config) and a stable name in a sweep
folder, and runs the pipeline: teacher (embedded teachers only, shared) -> data (onebit-sample,
shared by points with the same teacher and data recipe) -> distil (onebit-train) ->
eval (onebit-eval --json; the teacher's evaluation is shared) -> export (onebit-export, when built).
A stage whose output is complete is skipped, so running again resumes. A failed point is listed
with its error line and never stops the others. Tables and plots: onebit-report SWEEP --out DIR.

commands:
  plan    GRID --out SWEEP [--base CONFIG]    write the points' configs and print them
  run     GRID --out SWEEP [--base CONFIG]    plan, then run every point here, one after another
  run     SWEEP                               run (resume) an existing sweep
  submit  GRID --out SWEEP | SWEEP [--dry-run] [SLURM options]
                                              one SLURM array element per point (+ a prepare job)
  point   SWEEP (NAME | --index I)            one point's pipeline (what an array element runs)
  prepare SWEEP                               only the shared stages (teachers, data, teacher evals)
  status  SWEEP                               every point's stages; failed ones with their error

examples:
  onebit-sweep run configs/sweeps/alpha.yaml --out sweeps/alpha
  onebit-sweep submit configs/sweeps/lr.yaml --base configs/llama7b.yaml --out /shared/sweeps/lr \\
      --nodes 2 --ntasks-per-node 8 --gpus-per-node 8 --time 48:00:00 --dry-run
"""


def build_parser():
    ap = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    def common(p, target=True):
        if target:
            p.add_argument("target", metavar="GRID_OR_SWEEP",
                           help="a grid file (with --out) or an existing sweep folder")
            p.add_argument("--out", metavar="SWEEP", help="sweep folder to write (with a grid file)")
            p.add_argument("--base", metavar="CONFIG", help="base config (default: the grid file's 'base:')")
            p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                           help="one more fixed override for every point, e.g. --set model.teacher=DIR "
                                "(repeatable; with a grid file)")
        p.add_argument("--bin", metavar="DIR", default=sw.default_bin_dir(),
                       help="folder of the onebit-* programs (default: $ONEBIT_BUILD_DIR or REPO/build)")
        p.add_argument("-q", "--quiet", action="store_true", help="only the summary")

    p = sub.add_parser("plan", help="write the points' configs")
    common(p)
    p = sub.add_parser("run", help="run every point locally, one after another")
    common(p)
    p.add_argument("--only", metavar="REGEX", help="only the points whose name matches")
    p = sub.add_parser("submit", help="submit a SLURM job array (one element per point)")
    common(p)
    p.add_argument("--dry-run", action="store_true", help="print the sbatch lines instead of running them")
    p.add_argument("--only", metavar="REGEX", help="only the points whose name matches")
    p.add_argument("--all", action="store_true", help="also points that are complete")
    for key, flag in slurm.RESOURCES:
        p.add_argument(flag, dest=key, metavar=key.upper().replace("_", "-"), help=f"sbatch {flag}")
    p.add_argument("--max-parallel", dest="max_parallel", type=int, metavar="K",
                   help="at most K array elements at once (--array=...%%K)")
    p.add_argument("--sbatch-arg", dest="sbatch_args", action="append", default=[], metavar="ARG",
                   help="one more sbatch argument for both jobs, e.g. --sbatch-arg=--requeue (repeatable)")
    p = sub.add_parser("point", help="run one point's pipeline")
    p.add_argument("sweep", metavar="SWEEP")
    p.add_argument("name", nargs="?", metavar="NAME")
    p.add_argument("--index", type=int, metavar="I", help="the point with this index ($SLURM_ARRAY_TASK_ID)")
    common(p, target=False)
    p = sub.add_parser("prepare", help="run only the shared stages")
    p.add_argument("sweep", metavar="SWEEP")
    common(p, target=False)
    p = sub.add_parser("status", help="show every point's stages")
    p.add_argument("sweep", metavar="SWEEP")
    return ap


def open_or_plan(args, tools, say):
    """(sweep dir, record) from a sweep folder, or from a grid file planned into --out."""
    if is_sweep_dir(args.target):
        if args.base or args.sets:
            raise ToolError(f"--base and --set are for a grid file; {args.target} is a sweep folder (its points "
                            f"are fixed)")
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.target):
            raise ToolError(f"--out is for a grid file; {args.target} is a sweep folder")
        return sw.load_sweep(args.target)
    if os.path.isdir(args.target):
        raise ToolError(f"{args.target} is a folder but not a sweep (no sweep.json)")
    if not os.path.isfile(args.target):
        raise ToolError(f"{args.target}: no such grid file or sweep folder")
    if not args.out:
        raise ToolError(f"{args.target} is a grid file: give --out SWEEP, the folder to write the sweep to")
    record = sw.plan(tools, args.target, args.base, args.out, quiet=args.quiet, sets=args.sets)
    return os.path.abspath(args.out), record


def main(argv=None):
    """Exit code 0, 1 (a point failed) or 2; 128 + the signal when a stop signal (SIGTERM,
    SIGUSR1) ended a stage: its work is kept and the same command resumes it."""
    try:
        return dispatch(argv)
    except sw.StageStopped as stop:  # slurm/point.sbatch requeues the array element on 138
        print(f"{PROG}: {stop} (exit {stop.code}); the same command resumes", file=sys.stderr, flush=True)
        return stop.code


def dispatch(argv):
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help()
        return 2
    out = print
    say = (lambda m: None) if getattr(args, "quiet", False) else (lambda m: print(m, flush=True))

    if args.command == "status":
        sweep, record = sw.load_sweep(args.sweep)
        return 1 if sw.summary(sweep, record["points"], out) else 0

    tools = sw.Tools(args.bin)
    if args.command in ("plan", "run", "submit"):
        sweep, record = open_or_plan(args, tools, say)
    else:
        sweep, record = sw.load_sweep(args.sweep)

    if args.command == "plan":
        for e in record["points"]:
            out(f"{e['index']:4d}  {e['name']}  {os.path.join(sweep, 'points', e['name'], 'config.yaml')}")
        return 0

    if args.command == "prepare":
        failed = sw.prepare(sweep, record, tools, say)
        return 1 if failed else 0

    if args.command == "point":
        if (args.name is None) == (args.index is None):
            raise ToolError("point: give a point NAME or --index I (not both)")
        entries = sw.select(record, index=args.index) if args.index is not None else \
            [e for e in record["points"] if e["name"] == args.name]
        if not entries:
            raise ToolError(f"no point named '{args.name}' in {sweep} (onebit-sweep status {sweep} lists them)")
        e = entries[0]
        return 0 if sw.run_point(sweep, e["name"], tools, say) == "done" else 1

    if args.command == "run":
        entries = sw.select(record, only=args.only)
        results = {}
        stopped = None
        for i, e in enumerate(entries):
            try:
                results[e["name"]] = sw.run_point(sweep, e["name"], tools, say, label=f"[{i + 1}/{len(entries)}] ")
            except sw.StageStopped as stop:  # a stop signal stops the whole run, not just this point
                stopped = stop
                break
        out("")
        failed = sw.summary(sweep, entries, out)
        if stopped:
            raise stopped
        return 1 if failed or any(r != "done" for r in results.values()) else 0

    if args.command == "submit":
        o = slurm.options(args, record.get("slurm") or {})
        entries = sw.select(record, only=args.only)
        if not args.all:
            entries = [e for e in entries if not sw.point_complete(sweep, e["name"], tools)]
        if not entries:
            out(f"nothing to submit: every selected point of {sweep} is complete (--all submits them anyway)")
            return 0
        need_prepare = any(sw.shared_pending(sweep, e["name"]) for e in entries)
        paths = slurm.write_scripts(sweep, tools.bin_dir, record["cwd"])
        prep, array = slurm.commands(sweep, paths, o, [e["index"] for e in entries], need_prepare)
        slurm.submit(sweep, prep, array, args.dry_run, out)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
