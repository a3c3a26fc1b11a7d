#!/usr/bin/env python3
"""Tests of onebit-sweep and onebit-report (scripts/experiments), run by ctest as
`experiments.<Class>` (CMakeLists.txt) with ONEBIT_BUILD_DIR set to the build folder.

  python tests/experiments/test_experiments.py [Class[.test]]      # by hand; exit 77 = skipped

Grid expansion needs nothing built; the sbatch, tiny-run and failure cases run the real
onebit-train / onebit-sample / onebit-eval / onebit-teacher on a tiny embedded teacher."""
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
BUILD = os.environ.get("ONEBIT_BUILD_DIR", os.path.join(ROOT, "build"))
SWEEP = os.path.join(ROOT, "scripts", "onebit-sweep")
REPORT = os.path.join(ROOT, "scripts", "onebit-report")
SKIP = 77

try:
    import yaml  # noqa: F401
    import matplotlib  # noqa: F401
except ImportError as e:
    print(f"SKIPPED: needs PyYAML and matplotlib in {sys.executable} ({e}); scripts/setup.sh installs them")
    sys.exit(SKIP)

from experiments import grid as gridmod  # noqa: E402
from experiments.common import ToolError  # noqa: E402

# A teacher of 2 layers x 32 pretrained on 16k synthetic tokens, 6 distillation steps of 4 x 32
# tokens: each stage takes about a second on one core.
TINY = """\
output_dir: unused
model: {teacher: embedded, dtype: fp32, device: cpu}
embedded: {hidden_size: 32, intermediate_size: 64, num_layers: 2, num_heads: 2, num_kv_heads: 1,
           train_tokens: 16384, batch_size: 8, seq_len: 32, lr: 3.0e-3, seed: 7}
data: {source: sample, num_samples: 32, sample_length: 32, sample_batch: 16, seq_len: 32, batch_size: 4}
optim: {lr: 2.0e-3, warmup_steps: 2}
train: {max_steps: 6, precision: fp32, log_every: 1, save_every: 0, keep_last: 1, eval_every: 3,
        eval_seq_len: 32, eval_windows: 8}
"""
TINY_SHAPE = dict(hidden=32, inter=64, layers=2, heads=2, kv_heads=1)
PROGRAMS = ("train", "sample", "eval", "teacher")


def built():
    return all(os.access(os.path.join(BUILD, "onebit-" + p), os.X_OK) for p in PROGRAMS)


def need_build(case):
    if not built():
        raise unittest.SkipTest(f"needs {', '.join('onebit-' + p for p in PROGRAMS)} in {BUILD}")


def run(cmd, env=None, check=True):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    r = subprocess.run([sys.executable] + cmd, capture_output=True, text=True, env=e, cwd=ROOT)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def parse(text):
    return gridmod.parse_grid(None, yaml.load(text, Loader=yaml.BaseLoader))


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def tiny_setup(tmp, grid_text):
    base = write(os.path.join(tmp, "tiny.yaml"), TINY)
    grid = write(os.path.join(tmp, "grid.yaml"), f"base: tiny.yaml\n{grid_text}")
    return base, grid


class Tiny2x2(unittest.TestCase):
    """A temporary folder with the tiny base config, a 2 x 2 grid (alpha x lr) and a sweep path."""

    @classmethod
    def setUpClass(cls):
        need_build(cls)
        cls.tmp = tempfile.mkdtemp(prefix="onebit-sweep-test-")
        cls.base, cls.grid = tiny_setup(cls.tmp, "kd.alpha: [0, 1]\noptim.lr: [1e-3, 4e-3]\n")
        cls.sweep = os.path.join(cls.tmp, "sw")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
class GridExpansion(unittest.TestCase):
    def test_crossed_axes_in_file_order_values_as_written(self):
        pts = gridmod.expand(parse("optim.lr: [1e-4, 2e-4, 4e-4]\nstudent.svid: [nmf, svd]\nkd.alpha: [0, 0.10]\n"))
        self.assertEqual(len(pts), 12)
        self.assertEqual(pts[0][0], "lr=1e-4_svid=nmf_alpha=0")
        self.assertEqual(pts[1][0], "lr=1e-4_svid=nmf_alpha=0.10")  # the last axis varies fastest
        self.assertEqual(pts[-1][1], [("optim.lr", "4e-4"), ("student.svid", "svd"), ("kd.alpha", "0.10")])
        combos = {tuple(v for _, v in o) for _, o, _ in pts}
        self.assertEqual(len(combos), 12)

    def test_zipped_groups_fixed_keys_and_seeds(self):
        g = parse("set: {train.max_steps: 10}\ngrid: {kd.alpha: [0, 1]}\n"
                  "zip:\n  - {model.teacher: [/m/a, /m/b], optim.lr: [1e-3, 2e-3]}\nseeds: [1, 2, 3]\n")
        pts = gridmod.expand(g)
        self.assertEqual(len(pts), 2 * 2 * 3)
        for name, overrides, varied in pts:
            o = dict(overrides)
            self.assertEqual(o["train.max_steps"], "10")
            self.assertEqual({"/m/a": "1e-3", "/m/b": "2e-3"}[o["model.teacher"]], o["optim.lr"])  # zipped
            self.assertEqual(o["train.seed"], o["data.seed"])  # both default seed keys
            self.assertTrue(name.endswith(f"_seed={o['train.seed']}"))
            self.assertNotIn("train.max_steps", dict(varied))
        self.assertEqual(pts[0][0], "alpha=0_teacher=a_lr=1e-3_seed=1")
        self.assertEqual(len({n for n, _, _ in pts}), len(pts))

    def test_one_at_a_time_zip(self):
        # A zipped axis may repeat a value (each row changes one key of the baseline row).
        pts = gridmod.expand(parse("zip:\n  - kd.alpha: [1, 0, 1]\n    optim.lr: [1e-3, 1e-3, 2e-3]\n"))
        self.assertEqual([n for n, _, _ in pts], ["alpha=1_lr=1e-3", "alpha=0_lr=1e-3", "alpha=1_lr=2e-3"])

    def test_seed_keys(self):
        pts = gridmod.expand(parse("seeds: [5]\nseed_keys: [train.seed]\n"))
        self.assertEqual(pts, [("seed=5", [("train.seed", "5")], [("train.seed", "5")])])
        self.assertEqual(gridmod.expand(parse("train.max_steps: 3\n"))[0][0], "base")

    def test_names_are_stable(self):
        a = {tuple(o): n for n, o, _ in gridmod.expand(parse("optim.lr: [1e-4, 2e-4]\nkd.alpha: [0, 1]\n"))}
        b = {tuple(o): n for n, o, _ in gridmod.expand(parse("optim.lr: [2e-4, 1e-4, 8e-4]\nkd.alpha: [1, 0]\n"))}
        for overrides, name in a.items():  # another value and another order rename nothing
            self.assertEqual(b[overrides], name)
        short = gridmod.expand(parse("names: {optim.lr: LR}\noptim.lr: [1e-4]\nstudent.ste: [tanh]\n"))
        self.assertEqual(short[0][0], "LR=1e-4_ste=tanh")

    def test_names_that_read_alike_get_a_digest(self):
        pts = gridmod.expand(parse("model.teacher: [/a/m, /b/m, /c/other]\n"))
        names = [n for n, _, _ in pts]
        self.assertEqual(len(set(names)), 3)
        self.assertTrue(names[0].startswith("teacher=m-") and names[1].startswith("teacher=m-"))
        self.assertEqual(names[2], "teacher=other")
        clash = gridmod.expand(parse("kd.alpha: [1]\nmodel.alpha: [2]\n"))
        self.assertEqual(clash[0][0], "kd-alpha=1_model-alpha=2")

    def test_errors_name_the_problem(self):
        cases = [
            ("zip: [{kd.alpha: [0, 1], optim.lr: [1e-3]}]\n", "zip group 1 has lists of different lengths"),
            ("kd.alpha: []\n", "'kd.alpha' has an empty list of values"),
            ("kd.alpha: [0, 0]\n", "lists a value twice"),
            ("zip: [{kd.alpha: [0, 1, 0], optim.lr: [1, 2, 1]}]\n",
             "zip group 1 lists the same values twice (rows 1 and 3: kd.alpha=0, optim.lr=1)"),
            ("output_dir: [a, b]\n", "'output_dir' is set by the sweep"),
            ("seeds: [1, x]\n", "'seeds' expects non-negative integers, got 'x'"),
            ("seeds: [1]\ntrain.seed: [3, 4]\n", "'train.seed' is set by 'seeds'"),
            ("kd: {alpha: [0, 1]}\n", "write config keys dotted"),
            ("kd.alpha: [0]\ngrid: {kd.alpha: [1]}\n", "'kd.alpha' is given twice"),
            ("eval: {windos: 3}\n", "unknown key 'eval.windos'"),
            ("alpha: [0, 1]\n", "neither a config key"),
            ("- 1\n", "a grid file is a mapping"),
            ("kd.alpha: [[0, 1]]\n", "every value must be a single value"),
        ]
        for text, msg in cases:
            with self.subTest(text=text):
                with self.assertRaises(ToolError) as cm:
                    parse(text)
                self.assertIn(msg, str(cm.exception))

    def test_cli_errors_are_one_line(self):
        with tempfile.TemporaryDirectory() as tmp:
            grid = write(os.path.join(tmp, "g.yaml"), "kd.alpha: [0, 1\n")
            r = run([SWEEP, "plan", grid, "--out", os.path.join(tmp, "s"), "--base", grid], check=False)
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stderr, r"^onebit-sweep: error: .*g\.yaml: invalid YAML \(line 2\)")
            self.assertEqual(len(r.stderr.strip().splitlines()), 1)
            r = run([SWEEP, "run", os.path.join(tmp, "nothing")], check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no such grid file or sweep folder", r.stderr)
            r = run([REPORT, tmp, "--out", os.path.join(tmp, "r")], check=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no sweep, point or run folder in it", r.stderr)


# ---------------------------------------------------------------------------------------------
class ReportCollect(unittest.TestCase):
    """onebit-report's collection of point folders named one by one (no programs run)."""

    def test_a_point_named_alone_keeps_its_sweeps_seed_keys(self):
        from experiments import report
        tmp = tempfile.mkdtemp(prefix="onebit-report-test-")
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        names = ["a=1_seed=1", "a=1_seed=2"]
        with open(os.path.join(tmp, "sweep.json"), "w") as f:
            json.dump({"format": "onebit-sweep/1", "seed_keys": ["train.seed", "data.seed"],
                       "points": [{"name": n, "index": i} for i, n in enumerate(names)]}, f)
        for i, n in enumerate(names):
            run_dir = os.path.join(tmp, "points", n, "run")
            os.makedirs(run_dir)
            with open(os.path.join(tmp, "points", n, "point.json"), "w") as f:
                json.dump({"name": n, "varied": [["a", 1], ["train.seed", i + 1], ["data.seed", i + 1]]}, f)
            with open(os.path.join(run_dir, "metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": 10, "final_ppl": {"student": 5.0 + i, "teacher": 4.0}}) + "\n")
        whole = report.collect([tmp])
        alone = report.collect([os.path.join(tmp, "points", n) for n in names])
        for rows in (whole, alone):
            self.assertEqual([r["keys"] for r in rows], [{"a": 1}, {"a": 1}])
            self.assertEqual([r["seed"] for r in rows], [1, 2])


class Sbatch(Tiny2x2):
    """submit --dry-run prints the sbatch lines; without it a stand-in sbatch gets them."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.bin = os.path.join(cls.tmp, "bin")
        cls.log = os.path.join(cls.tmp, "sbatch.log")
        # The stand-in: records its arguments, answers like `sbatch --parsable` with job ids 1001, 1002, ...
        write(os.path.join(cls.bin, "sbatch"), f"""#!/usr/bin/env bash
n=$(( $(wc -l < {cls.log} 2>/dev/null || echo 0) + 1001 ))
printf '%s\\n' "$*" >> {cls.log}
echo "$n;cluster"
""")
        os.chmod(os.path.join(cls.bin, "sbatch"), 0o755)
        cls.opts = ["--nodes", "2", "--ntasks-per-node", "4", "--gpus-per-node", "4", "--time", "1:00:00",
                    "--max-parallel", "2", "--sbatch-arg=--requeue"]

    def env(self):
        return {"PATH": self.bin + os.pathsep + os.environ["PATH"], "ONEBIT_BUILD_DIR": BUILD}

    def test_1_dry_run_prints_the_lines_and_submits_nothing(self):
        r = run([SWEEP, "submit", self.grid, "--out", self.sweep, "--dry-run", "-q"] + self.opts, env=self.env())
        lines = r.stdout.strip().splitlines()
        s, logs = self.sweep, os.path.join(self.sweep, "slurm", "logs")
        self.assertEqual(lines, [
            f"PREPARE=$(sbatch --parsable --job-name=onebit-sweep-sw-prepare --nodes=1 --ntasks-per-node=1 "
            f"--gpus-per-node=1 --time=1:00:00 --requeue --output={logs}/prepare-%j.out {s}/slurm/prepare.sbatch)",
            f"sbatch --parsable --job-name=onebit-sweep-sw --array=0-3%2 --dependency=afterok:$PREPARE --nodes=2 "
            f"--ntasks-per-node=4 --gpus-per-node=4 --time=1:00:00 --requeue --output={logs}/%A_%a.out "
            f"{s}/slurm/point.sbatch"])
        self.assertFalse(os.path.exists(self.log))
        with open(os.path.join(s, "slurm", "point.sbatch")) as f:
            script = f.read()
        self.assertIn(f"point {s} --index \"${{SLURM_ARRAY_TASK_ID:?not a SLURM array element}}\"", script)
        self.assertEqual(len(os.listdir(os.path.join(s, "points"))), 4)
        # Each point's config is onebit-train's resolution, with the sweep's own keys.
        with open(os.path.join(s, "points", "alpha=1_lr=4e-3", "config.yaml")) as f:
            cfg = yaml.safe_load(f)
        self.assertEqual(cfg["kd"]["alpha"], 1)
        self.assertEqual(cfg["optim"]["lr"], 0.004)
        self.assertEqual(cfg["output_dir"], os.path.join(s, "points", "alpha=1_lr=4e-3", "run"))
        self.assertEqual(cfg["data"]["source"], "dataset")
        self.assertTrue(cfg["data"]["path"].startswith(os.path.join(s, "shared", "data-")))
        self.assertTrue(cfg["model"]["teacher"].startswith(os.path.join(s, "shared", "teacher-")))

    def test_2_submit_calls_sbatch_with_the_dependency(self):
        r = run([SWEEP, "submit", self.sweep, "--only", "alpha=0"] + self.opts, env=self.env())
        with open(self.log) as f:
            calls = f.read().splitlines()
        self.assertEqual(len(calls), 2, r.stdout)
        self.assertIn("--job-name=onebit-sweep-sw-prepare", calls[0])
        self.assertIn("--array=0-1%2 --dependency=afterok:1001 ", calls[1])
        self.assertIn("submitted array job 1002", r.stdout)
        with open(os.path.join(self.sweep, "slurm", "submitted.jsonl")) as f:
            self.assertEqual([json.loads(l)["job"] for l in f], ["1001", "1002"])

    def test_3_sbatch_failure_is_one_line(self):
        write(os.path.join(self.tmp, "bad", "sbatch"), "#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
        os.chmod(os.path.join(self.tmp, "bad", "sbatch"), 0o755)
        r = run([SWEEP, "submit", self.sweep], check=False,
                env={"PATH": os.path.join(self.tmp, "bad") + os.pathsep + os.environ["PATH"]})
        self.assertEqual(r.returncode, 1)
        self.assertIn("onebit-sweep: error: sbatch failed (sbatch: error: invalid partition)", r.stderr)


# ---------------------------------------------------------------------------------------------
class Preemption(Tiny2x2):
    """point.sbatch as SLURM runs it: --signal=B:USR1 reaches the batch shell, which passes it
    through onebit-sweep to the running program; exit 138 requeues the element, 143 does not,
    and the requeued element resumes the point. The distil program is a stand-in that waits
    for the signal and exits 128 + it as onebit-train does (its own handling is tested in
    tests/distill/test_faults.cpp); once released it runs the real onebit-train."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.fake = os.path.join(cls.tmp, "fakebin")   # the --bin of the job scripts
        cls.slurm = os.path.join(cls.tmp, "slurmbin")  # scontrol
        cls.release = os.path.join(cls.tmp, "release")
        cls.started = os.path.join(cls.tmp, "train-started")
        for p in PROGRAMS + ("export",):
            if p != "train" and os.path.exists(os.path.join(BUILD, "onebit-" + p)):
                os.makedirs(cls.fake, exist_ok=True)
                os.symlink(os.path.abspath(os.path.join(BUILD, "onebit-" + p)), os.path.join(cls.fake, "onebit-" + p))
        write(os.path.join(cls.fake, "onebit-train"), f"""#!/usr/bin/env bash
if [[ "$*" == *--print-config* || -e {cls.release} ]]; then exec {os.path.abspath(BUILD)}/onebit-train "$@"; fi
trap 'echo "checkpoint written; stopping"; exit 138' USR1
trap 'echo "checkpoint written; stopping"; exit 143' TERM
echo started >> {cls.started}
while true; do sleep 0.05; done
""")
        write(os.path.join(cls.slurm, "scontrol"), f"#!/bin/sh\necho \"$*\" >> {cls.tmp}/scontrol.log\n")
        for f in (os.path.join(cls.fake, "onebit-train"), os.path.join(cls.slurm, "scontrol")):
            os.chmod(f, 0o755)
        run([SWEEP, "submit", cls.grid, "--out", cls.sweep, "--bin", cls.fake, "--dry-run", "-q"])
        cls.script = os.path.join(cls.sweep, "slurm", "point.sbatch")

    def element(self, sig, index="1"):
        """Runs point.sbatch as array element `index`; sends `sig` to its shell once the stand-in
        trainer has started (None: no signal). Returns (exit code, output)."""
        env = dict(os.environ, OMP_NUM_THREADS="1", SLURM_ARRAY_TASK_ID=index, SLURM_JOB_ID="4242",
                   PATH=self.slurm + os.pathsep + os.environ["PATH"])
        n0 = self.starts()
        proc = subprocess.Popen(["bash", self.script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env=env, cwd=ROOT)
        if sig is not None:
            deadline = time.time() + 120
            while self.starts() == n0 and proc.poll() is None and time.time() < deadline:
                time.sleep(0.05)
            proc.send_signal(sig)
        out, _ = proc.communicate(timeout=300)
        return proc.returncode, out

    def starts(self):
        try:
            with open(self.started) as f:
                return len(f.readlines())
        except OSError:
            return 0

    def requeues(self):
        try:
            with open(os.path.join(self.tmp, "scontrol.log")) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def status(self, name):
        with open(os.path.join(self.sweep, "points", name, "status.json")) as f:
            return json.load(f)

    def test_usr1_requeues_term_does_not_and_the_requeued_element_resumes(self):
        with open(self.script) as f:
            text = f.read()
        for line in ("#SBATCH --signal=B:USR1@120", "#SBATCH --requeue", "#SBATCH --open-mode=append"):
            self.assertIn(line, text)
        name = "alpha=0_lr=4e-3"  # array element 1
        rc, out = self.element(signal.SIGUSR1)
        self.assertEqual(rc, 138, out)
        self.assertIn(f"{name}: STOPPED distil by SIGUSR1 (exit 138); running it again resumes", out)
        self.assertEqual(self.requeues(), ["requeue 4242"])
        st = self.status(name)
        self.assertEqual(st["state"], "stopped")
        self.assertEqual(st["stages"]["distil"]["state"], "stopped")
        self.assertEqual(st["stages"]["distil"]["signal"], "SIGUSR1")

        rc, out = self.element(signal.SIGTERM)  # preemption: SLURM requeues, the script does not
        self.assertEqual(rc, 143, out)
        self.assertIn("STOPPED distil by SIGTERM", out)
        self.assertEqual(self.requeues(), ["requeue 4242"])
        self.assertEqual(self.starts(), 2)

        write(self.release, "")
        rc, out = self.element(None)
        self.assertEqual(rc, 0, out)
        self.assertEqual(self.requeues(), ["requeue 4242"])
        st = self.status(name)
        self.assertEqual(st["state"], "done")
        self.assertEqual(st["stages"]["distil"]["state"], "done")
        self.assertTrue(os.path.isfile(os.path.join(self.sweep, "points", name, "run", "student", "config.json")))


# ---------------------------------------------------------------------------------------------
def linear_bits(hidden, inter, layers, heads, kv_heads):
    """bits/param of the 1-bit linears of a LLaMA of these sizes (method.md §8: 1 bit per sign,
    16 per g and h, over the W + g + h count)."""
    hd = hidden // heads
    shapes = [(hidden, hidden), (kv_heads * hd, hidden), (kv_heads * hd, hidden), (hidden, hidden),
              (inter, hidden), (inter, hidden), (hidden, inter)]
    bits = layers * sum(o * i + 16 * (o + i) for o, i in shapes)
    params = layers * sum(o * i + o + i for o, i in shapes)
    return bits / params


class TinyRuns(Tiny2x2):
    """A 2 x 2 grid of real runs ends in a 4-row table; running it again does no work."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.first = run([SWEEP, "run", cls.grid, "--out", cls.sweep, "--bin", BUILD])
        cls.report = os.path.join(cls.tmp, "report")
        run([REPORT, cls.sweep, "--out", cls.report, "--title", "tiny"])

    def rows(self):
        with open(os.path.join(self.report, "results.csv")) as f:
            return list(csv.DictReader(f))

    def test_table_has_four_rows_of_real_numbers(self):
        rows = self.rows()
        self.assertEqual(len(rows), 4)
        self.assertEqual({(r["kd.alpha"], r["optim.lr"]) for r in rows},
                         {("0", "1e-3"), ("0", "4e-3"), ("1", "1e-3"), ("1", "4e-3")})
        teacher = {float(r["teacher ppl"]) for r in rows}
        self.assertEqual(len(teacher), 1)  # one shared teacher evaluation
        t = teacher.pop()
        for r in rows:
            self.assertEqual(r["state"], "done")
            s = float(r["student ppl"])
            self.assertTrue(1 < s < 370, s)  # better than uniform over the 370-id vocabulary
            self.assertAlmostEqual(float(r["retention"]), t / s, places=9)
            self.assertEqual(int(r["tokens"]), 6 * 4 * 32)
            self.assertAlmostEqual(float(r["bits/param"]), linear_bits(**TINY_SHAPE), places=12)
            self.assertGreater(float(r["wall s"]), 0)
        with open(os.path.join(self.report, "results.md")) as f:
            md = f.read()
        table = [l for l in md.splitlines() if l.startswith("| ") and "point" not in l]
        self.assertEqual(len(table), 4, md)
        self.assertIn("Made by: `onebit-report", md)
        for png in ("loss_curves.png", "student_ppl_vs_tokens.png", "ablation.png"):
            with open(os.path.join(self.report, png), "rb") as f:
                self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n", png)
            self.assertIn(f"]({png})", md)

    def test_eval_stage_matches_the_trainers_own_table(self):
        # Two programs, one number: onebit-eval on the saved student and the trainer's final table
        # (docs protocol, train.eval_seq_len, every window of the held-out stories).
        for name in os.listdir(os.path.join(self.sweep, "points")):
            pdir = os.path.join(self.sweep, "points", name)
            with open(os.path.join(pdir, "run", "metrics.jsonl")) as f:
                final = [json.loads(l) for l in f if "final_ppl" in l][-1]["final_ppl"]
            with open(os.path.join(pdir, "eval.json")) as f:
                ev = json.load(f)
            self.assertAlmostEqual(ev["student"]["perplexity"][0]["ppl"], final["student"], delta=1e-4 * final["student"])
            with open(os.path.join(pdir, "point.json")) as f:
                teacher_eval = json.load(f)["shared"]["teacher_eval"]
            with open(teacher_eval) as f:
                tev = json.load(f)
            self.assertAlmostEqual(tev["student"]["perplexity"][0]["ppl"], final["teacher"], delta=1e-4 * final["teacher"])

    def test_points_share_one_teacher_and_one_sample_set(self):
        shared = sorted(os.listdir(os.path.join(self.sweep, "shared")))
        self.assertEqual(len([d for d in shared if d.startswith("teacher-") and os.path.isdir(
            os.path.join(self.sweep, "shared", d))]), 1, shared)
        self.assertEqual(len([d for d in shared if d.startswith("data-") and os.path.isdir(
            os.path.join(self.sweep, "shared", d))]), 1, shared)
        self.assertEqual(self.first.stdout.count("shared data-"), 2)  # "running" and "done", once

    def test_rerun_does_no_work(self):
        # Programs that fail and leave a trace if anything calls them.
        fake = os.path.join(self.tmp, "fake-bin")
        trace = os.path.join(self.tmp, "called.log")
        for p in PROGRAMS:
            write(os.path.join(fake, "onebit-" + p), f"#!/bin/sh\necho {p} >> {trace}\nexit 1\n")
            os.chmod(os.path.join(fake, "onebit-" + p), 0o755)
        before = {}
        for root, _, files in os.walk(self.sweep):
            for f in files:
                before[os.path.join(root, f)] = os.stat(os.path.join(root, f)).st_mtime_ns
        for target in ([self.grid, "--out", self.sweep], [self.sweep]):
            r = run([SWEEP, "run"] + target + ["--bin", fake])
            self.assertFalse(os.path.exists(trace), r.stdout)
            self.assertEqual(r.stdout.count("distil complete"), 4, r.stdout)
            self.assertEqual(r.stdout.count("eval complete"), 4, r.stdout)
            self.assertIn("4 of 4 points done, 0 failed", r.stdout)
        changed = [p for p, t in before.items() if os.stat(p).st_mtime_ns != t]
        self.assertEqual(changed, [])
        r = run([SWEEP, "submit", self.sweep, "--dry-run", "--bin", fake])
        self.assertIn("nothing to submit", r.stdout)


# ---------------------------------------------------------------------------------------------
class Failure(unittest.TestCase):
    """A point that fails is listed with its error line; the others complete."""

    def test_failed_point_is_listed_and_others_complete(self):
        need_build(self)
        with tempfile.TemporaryDirectory(prefix="onebit-fail-") as tmp:
            _, grid = tiny_setup(tmp, "data.batch_size: [2000, 4]\n")
            sweep = os.path.join(tmp, "sw")
            r = run([SWEEP, "run", grid, "--out", sweep, "--bin", BUILD], check=False)
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("1 of 2 points done, 1 failed", r.stdout)
            self.assertRegex(r.stdout, r"batch_size=2000: FAILED distil: onebit-train: error: .*fewer than one "
                                       r"batch .*\(log: .*/points/batch_size=2000/logs/distil.log\)")
            self.assertRegex(r.stdout, r"\n  FAILED batch_size=2000: distil: onebit-train: error: .*fewer than one "
                                       r"batch")
            self.assertTrue(os.path.isfile(os.path.join(sweep, "points", "batch_size=4", "eval.json")))
            st = run([SWEEP, "status", sweep], check=False)
            self.assertEqual(st.returncode, 1)
            self.assertIn("FAILED batch_size=2000: distil: onebit-train: error:", st.stdout)
            out = os.path.join(tmp, "report")
            run([REPORT, sweep, "--out", out])
            with open(os.path.join(out, "results.md")) as f:
                md = f.read()
            self.assertIn("- `batch_size=2000`: failed: distil: onebit-train: error: ", md)
            with open(os.path.join(out, "results.csv")) as f:
                rows = {r["point"]: r for r in csv.DictReader(f)}
            self.assertEqual(rows["batch_size=2000"]["state"], "failed")
            self.assertTrue(math.isfinite(float(rows["batch_size=4"]["student ppl"])))


if __name__ == "__main__":
    prog = unittest.main(exit=False, verbosity=2)
    res = prog.result
    ran = res.testsRun - len(res.skipped)
    if not res.wasSuccessful():
        sys.exit(1)
    sys.exit(SKIP if res.testsRun and ran == 0 else 0)
