"""onebit-report: the command line (docs/experiments.md)."""
import argparse
import os
import shlex
import sys

from . import plots, report as rp
from .common import ToolError, write_atomic

PROG = "onebit-report"

DESCRIPTION = """\
Collects every point's evaluation (onebit-eval --json) and metrics.jsonl from sweep folders
(onebit-sweep), point folders or plain onebit-train run folders, and writes to --out:
  results.md   a Markdown table (point keys, teacher and student perplexity, zero-shot accuracy,
               retention, size, bits/param, tokens, wall time) and, when points differ only in
               their seed, mean ± standard deviation over the seeds
  results.csv  the same rows with every number at full precision
  *.png        loss curves (KL, hidden) and student perplexity against tokens, ablation bars with
               the seed spread, perplexity against model size (when several sizes are present)
A run folder without an eval.json uses the final perplexity table of its metrics.jsonl.

example:
  onebit-report sweeps/alpha --out docs/results/alpha --title "KD alpha, embedded teacher"
"""


def main(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", metavar="SWEEP_OR_RUN_DIR",
                    help="sweep folders, point folders, run folders, or folders holding them")
    ap.add_argument("--out", required=True, metavar="DIR", help="folder for results.md, results.csv and the plots")
    ap.add_argument("--title", default="onebit results", help="heading of results.md")
    ap.add_argument("--no-plots", action="store_true", help="tables only")
    args = ap.parse_args(argv)

    rows = rp.collect(args.inputs)
    if not rows:
        raise ToolError("no points or runs found in " + " ".join(args.inputs))
    os.makedirs(args.out, exist_ok=True)
    made = [] if args.no_plots else plots.make_all(rows, args.out)
    command = " ".join([PROG] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])])
    write_atomic(os.path.join(args.out, "results.md"), rp.markdown(rows, args.title, command, made))
    write_atomic(os.path.join(args.out, "results.csv"), rp.csv_text(rows))
    done = sum(1 for r in rows if r.get("student"))
    print(f"{len(rows)} rows ({done} with results) -> {os.path.join(args.out, 'results.md')}, results.csv"
          + (", " + ", ".join(made) if made else ""))
    return 0
