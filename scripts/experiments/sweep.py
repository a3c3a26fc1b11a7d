"""A sweep folder: planning points from a grid, and each point's pipeline
(teacher, data, distil, teacher-eval, eval, export). docs/experiments.md describes it."""
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import threading
import time

from . import grid as gridmod
from .common import (POINT_JSON, STATUS_JSON, SWEEP_JSON, ToolError, is_sweep_dir, read_json, read_yaml,
                     write_atomic, write_json)

FORMAT = "onebit-sweep/1"
STAGES = ("distil", "eval", "export")  # per point; the shared ones are teacher, data, teacher-eval
# Self-sampling keys of the data section that onebit-sample takes as flags, when a config has them.
SAMPLE_FLAGS = {"first_token": "--first-token", "greedy_min": "--greedy-min", "greedy_max": "--greedy-max",
                "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "stop_at_eos": None}


def tokens_per_step(cfg):
    """(tokens per optimizer step, whether that already counts every rank) of a resolved config
    (strings): train.global_batch sequences when set, else batch_size x grad_accum per rank."""
    seq = int(cfg["data"]["seq_len"])
    gb = int(cfg.get("train", {}).get("global_batch", "0") or 0)
    if gb > 0:
        return gb * seq, True
    return int(cfg["data"]["batch_size"]) * seq * max(1, int(cfg["optim"]["grad_accum"])), False


def digest(obj):
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


def file_digest(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


class Tools:
    """The onebit programs (build/onebit-*). Looked up only when a stage needs one."""

    def __init__(self, bin_dir):
        self.bin_dir = os.path.abspath(bin_dir)

    def path(self, name):
        return os.path.join(self.bin_dir, "onebit-" + name)

    def exists(self, name):
        p = self.path(name)
        return os.path.isfile(p) and os.access(p, os.X_OK)

    def need(self, name):
        if not self.exists(name):
            raise ToolError(f"{self.path(name)} not found: build it (scripts/setup.sh) or pass --bin DIR")
        return self.path(name)


def default_bin_dir():
    from .common import REPO
    return os.environ.get("ONEBIT_BUILD_DIR") or os.path.join(REPO, "build")


class StageFailed(Exception):
    def __init__(self, stage, line, log):
        super().__init__(f"{stage}: {line}")
        self.stage, self.line, self.log = stage, line, log


# SIGTERM (preemption, time limit, scancel) and SIGUSR1 (sbatch --signal=USR1@T): onebit-train
# checkpoints and exits 128 + the signal; a program without a handler dies of it. Either way
# the stage's work so far is kept and running the point again resumes it (docs/experiments.md).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StageStopped(Exception):
    """A stage's program ended because of a stop signal; `code` = 128 + the signal."""

    def __init__(self, stage, code, log):
        self.stage, self.code, self.log = stage, code, log
        self.signal = signal.Signals(code - 128).name
        super().__init__(f"{stage}: stopped by {self.signal}")


def stop_code(rc):
    """128 + signal when exit status rc (as subprocess reports it) means a stop signal, else None."""
    for sig in STOP_SIGNALS:
        if rc in (128 + sig, -sig):
            return 128 + sig
    return None


def wait_forwarding_stops(proc):
    """Waits for proc, passing on the stop signals this process gets (SLURM sends --signal=B:...
    to the batch shell, which passes it to us), so the program can checkpoint."""
    if threading.current_thread() is not threading.main_thread():
        return proc.wait()
    old = {s: signal.signal(s, lambda signum, _frame: proc.send_signal(signum)) for s in STOP_SIGNALS}
    try:
        return proc.wait()
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def error_line(log_path, rc):
    """The line that says why a program failed: its last 'error:' line, else the last line."""
    try:
        with open(log_path, errors="replace") as f:
            lines = [l.rstrip("\r\n") for l in f.read().replace("\r", "\n").split("\n") if l.strip()]
    except OSError:
        lines = []
    for line in reversed(lines):
        if "error:" in line or "Error" in line:
            return line.strip()
    return lines[-1].strip() if lines else f"exit code {rc}"


def run_logged(cmd, log_path, stage, env=None, cwd=None):
    """Runs cmd with stdout+stderr to log_path; returns the wall time or raises StageFailed
    (StageStopped when a stop signal ended it)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    t0 = time.time()
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        try:
            rc = wait_forwarding_stops(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                        stdin=subprocess.DEVNULL, env=env, cwd=cwd))
        except OSError as e:
            log.write(f"cannot start {cmd[0]}: {e}\n")
            rc = 127
    if stop_code(rc):
        raise StageStopped(stage, stop_code(rc), log_path)
    if rc != 0:
        raise StageFailed(stage, error_line(log_path, rc), log_path)
    return time.time() - t0


class FileLock:
    """An exclusive flock on `path` (blocking, or raising BlockingIOError with wait=False)."""

    def __init__(self, path, wait=True):
        self.path, self.wait, self.fd = path, wait, None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


# ---------------------------------------------------------------------------------------------
# Planning: grid -> points/NAME/{config.yaml, point.json}


def print_config(tools, base, overrides, cwd):
    """onebit-train's own resolution of base + overrides (every key, validated)."""
    cmd = [tools.need("train"), "--config", base, "--print-config"] + [f"{k}={v}" for k, v in overrides]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        lines = [l for l in (r.stderr + r.stdout).splitlines() if l.strip()]
        raise ToolError(lines[-1] if lines else f"onebit-train --print-config exited with {r.returncode}")
    return r.stdout


def _abs(path, cwd):
    return path if not path or os.path.isabs(path) else os.path.normpath(os.path.join(cwd, path))


def _eval_settings(g, cfg, cwd):
    e = g.eval
    ppl = e.get("ppl")
    ppl = [ppl] if isinstance(ppl, str) else list(ppl or [])
    tasks = e.get("tasks")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks or [])
    args = e.get("args")
    args = shlex.split(args) if isinstance(args, str) else [str(a) for a in (args or [])]
    out = {
        "ppl": [_abs(p, cwd) for p in ppl] or ([cfg["train"]["eval_text"]] if cfg["train"]["eval_text"] else []),
        "protocol": str(e.get("protocol", "docs")),
        "seq_len": str(e.get("seq_len", cfg["train"]["eval_seq_len"])),
        "windows": str(e.get("windows", "0")),
        "tasks": [_abs(t, cwd) for t in tasks],
        "limit": str(e.get("limit", "0")),
        "batch_size": str(e.get("batch_size", "1")),
        "args": args,
        "device": "" if cfg["model"]["device"] == "auto" else cfg["model"]["device"],
    }
    return out


def _load_resolved(text):
    import yaml
    return yaml.load(text, Loader=yaml.BaseLoader)


def _override_text(v):
    """An override's value as onebit-train reads it: trimmed, one pair of surrounding quotes removed."""
    v = str(v).strip()
    return v[1:-1] if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"" else v


def apply_overrides(resolved, overrides):
    """The resolved base config (strings) with a point's overrides applied, for the keys the
    sweep reads before the point's own resolution (teacher, data recipe, eval text). Unknown
    keys are left to onebit-train, which names them."""
    cfg = json.loads(json.dumps(resolved))
    for key, value in overrides:
        sec, _, k = key.partition(".")
        if k and isinstance(cfg.get(sec), dict) and k in cfg[sec]:
            cfg[sec][k] = _override_text(value)
    return cfg


def plan_point(tools, sweep, base, resolved_base, name, overrides, varied, g, cwd):
    """Resolves one point and writes points/NAME/config.yaml and point.json."""
    pdir = os.path.join(sweep, "points", name)
    run_dir = os.path.join(pdir, "run")
    first = overrides + [("output_dir", run_dir)]
    cfg = apply_overrides(resolved_base, overrides)
    extra, shared = [], {}
    teacher = cfg["model"]["teacher"]
    if teacher == "embedded":
        tdir = os.path.join(sweep, "shared", "teacher-" + digest(cfg["embedded"]))
        teacher_dir = os.path.join(tdir, "teacher")
        teacher_id = {"embedded": cfg["embedded"]}
        shared["teacher"] = {"dir": tdir}
        extra.append(("model.teacher", teacher_dir))
        if not cfg["train"]["eval_text"]:
            extra.append(("train.eval_text", os.path.join(tdir, "heldout.txt")))
    else:
        teacher_dir = _abs(teacher, cwd)
        teacher_id = {"path": teacher_dir}
        extra.append(("model.teacher", teacher_dir))
    for key in ("data.path", "train.eval_text"):
        sec, k = key.split(".")
        if cfg[sec][k] and not os.path.isabs(cfg[sec][k]):
            extra.append((key, _abs(cfg[sec][k], cwd)))
    if cfg["train"]["resume"] not in ("auto", "never"):
        extra.append(("train.resume", _abs(cfg["train"]["resume"], cwd)))
    d = cfg["data"]
    if d["source"] == "sample":
        recipe = {"num_samples": d["num_samples"], "sample_length": d["sample_length"],
                  "sample_batch": d["sample_batch"], "seed": d["seed"], "dtype": cfg["model"]["dtype"]}
        recipe.update({k: d[k] for k in SAMPLE_FLAGS if k in d})  # generator keys, where the config has them
        ddir = os.path.join(sweep, "shared", "data-" + digest({"teacher": teacher_id, **recipe}))
        shared["data"] = {"dir": ddir, "teacher": teacher_dir, "device": cfg["model"]["device"], **recipe}
        extra += [("data.source", "dataset"), ("data.path", ddir)]
    try:
        text = print_config(tools, base, first + extra, cwd)
    except ToolError as e:
        raise ToolError(f"point {name}: {e}")
    cfg = _load_resolved(text)
    if "data" in shared:  # onebit-sample gets the values as onebit-train resolved them
        shared["data"].update({k: cfg["data"][k] for k in shared["data"] if k in cfg["data"]})
        shared["data"]["dtype"] = cfg["model"]["dtype"]
    ev = _eval_settings(g, cfg, cwd)
    teacher_eval = {k: v for k, v in ev.items() if k != "device"}
    shared["teacher_eval"] = os.path.join(sweep, "shared",
                                          "eval-" + digest({"teacher": teacher_id, **teacher_eval}) + ".json")
    tps, all_ranks = tokens_per_step(cfg)
    point = {
        "format": FORMAT, "name": name,
        "overrides": [[k, v] for k, v in overrides],
        "varied": [[k, v] for k, v in varied],
        "teacher": teacher_dir, "shared": shared, "eval": ev,
        "tokens_per_step": tps, "tokens_per_step_all_ranks": all_ranks,
    }
    os.makedirs(pdir, exist_ok=True)
    write_atomic(os.path.join(pdir, "config.yaml"), text)
    write_json(os.path.join(pdir, POINT_JSON), point)
    return point


def plan(tools, grid_path, base_path, sweep, cwd=None, quiet=False, sets=()):
    """Writes (or extends) the sweep folder for a grid; returns the sweep record. `sets`: more
    fixed KEY=VALUE overrides for every point (the command line's --set)."""
    cwd = cwd or os.getcwd()
    g = gridmod.parse_grid(grid_path)
    gridmod.add_sets(g, sets)
    base = base_path or g.base
    if not base:
        raise ToolError(f"{grid_path}: no base config: give --base CONFIG or 'base: FILE' in the grid file")
    base = _abs(base, cwd)
    if not os.path.isfile(base):
        raise ToolError(f"base config {base}: no such file")
    sweep = os.path.abspath(sweep)
    points = gridmod.expand(g)
    existing = read_json(os.path.join(sweep, SWEEP_JSON), "sweep record") if is_sweep_dir(sweep) else None
    base_sha = file_digest(base)
    if existing is None and os.path.isdir(sweep) and os.listdir(sweep):
        raise ToolError(f"{sweep} exists and is not a sweep folder (no {SWEEP_JSON}); use a new --out")
    if existing and existing.get("base_sha") != base_sha:
        raise ToolError(f"{sweep} was planned from another base config (its copy: {sweep}/base.yaml); "
                        f"use a new --out, or the same base")
    os.makedirs(sweep, exist_ok=True)
    if not existing:
        shutil.copyfile(base, os.path.join(sweep, "base.yaml"))
    copy = os.path.join(sweep, "grid.yaml")
    if not os.path.isfile(copy) or file_digest(copy) != file_digest(grid_path):
        shutil.copyfile(grid_path, copy)
    before = json.dumps(existing, sort_keys=True)
    record = existing or {"format": FORMAT, "base": base, "base_sha": base_sha, "cwd": cwd, "points": [],
                          "seed_keys": []}
    record["grid"] = os.path.abspath(grid_path)
    if g.seeds:
        record["seed_keys"] = sorted(set(record.get("seed_keys", [])) | set(g.seed_keys))
    record["slurm"] = g.slurm
    known = {p["name"]: p for p in record["points"]}
    added = 0
    resolved_base = None
    for name, overrides, varied in points:
        pjson = os.path.join(sweep, "points", name, POINT_JSON)
        if name in known and os.path.isfile(pjson):
            old = read_json(pjson, "point record")
            if [tuple(kv) for kv in old["overrides"]] != [tuple(kv) for kv in overrides]:
                raise ToolError(f"point {name} already exists in {sweep} with other settings "
                                f"({_diff(old['overrides'], overrides)}); use a new --out")
            continue
        if resolved_base is None:  # the base with the fixed keys: one resolution for all points
            try:
                resolved_base = _load_resolved(print_config(tools, base, list(g.fixed.items()), cwd))
            except ToolError as e:
                raise ToolError(f"{base} with the grid's fixed keys: {e}")
        plan_point(tools, sweep, base, resolved_base, name, overrides, varied, g, cwd)
        if name not in known:
            record["points"].append({"name": name, "index": len(record["points"])})
            known[name] = record["points"][-1]
        added += 1
    if json.dumps(record, sort_keys=True) != before:  # a re-plan that adds nothing writes nothing
        write_json(os.path.join(sweep, SWEEP_JSON), record)
    if not quiet:
        print(f"sweep {sweep}: {len(points)} points in the grid, {added} new, {len(record['points'])} in all")
    return record


def _diff(old, new):
    a, b = dict(map(tuple, old)), dict(map(tuple, new))
    keys = sorted(set(a) | set(b))
    return "; ".join(f"{k}: was {a.get(k, '-')}, now {b.get(k, '-')}" for k in keys if a.get(k) != b.get(k))


def load_sweep(sweep):
    sweep = os.path.abspath(sweep)
    if not is_sweep_dir(sweep):
        raise ToolError(f"{sweep} is not a sweep folder (no {SWEEP_JSON}); plan one with "
                        f"'onebit-sweep plan GRID --out {sweep}'")
    return sweep, read_json(os.path.join(sweep, SWEEP_JSON), "sweep record")


# ---------------------------------------------------------------------------------------------
# Running: the stages of one point


class Point:
    def __init__(self, sweep, name):
        self.sweep, self.name = sweep, name
        self.dir = os.path.join(sweep, "points", name)
        self.rec = read_json(os.path.join(self.dir, POINT_JSON), "point record")
        self.config = os.path.join(self.dir, "config.yaml")
        self.run_dir = os.path.join(self.dir, "run")
        self.student = os.path.join(self.run_dir, "student")
        self.eval_json = os.path.join(self.dir, "eval.json")
        self.export_dir = os.path.join(self.dir, "export")
        self.status_path = os.path.join(self.dir, STATUS_JSON)
        self.status = read_json(self.status_path) if os.path.isfile(self.status_path) else {"stages": {}}

    def log(self, stage):
        return os.path.join(self.dir, "logs", stage + ".log")

    def stage_done(self, stage, output):
        st = self.status["stages"].get(stage, {})
        return st.get("state") == "done" and os.path.exists(output)

    def record(self, stage, **fields):
        new = {"state": fields.pop("state"), **fields}
        old = {k: v for k, v in self.status["stages"].get(stage, {}).items() if k != "at"}
        if old == new:  # a re-run that changes nothing leaves the file alone
            return
        self.status["stages"][stage] = {**new, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.status_path, self.status)

    def finish(self, state, error=None):
        if self.status.get("state") == state and self.status.get("error") == error:
            return
        self.status["state"] = state
        self.status["error"] = error
        write_json(self.status_path, self.status)


def _shared_done(marker, output):
    return os.path.isfile(marker) and os.path.exists(output)


def _shared_stage(sweep, key, output, cmd_fn, say):
    """Runs a stage whose output several points share, once, under a lock (SLURM array elements
    may reach it together). Its marker KEY.done.json records the wall time."""
    shared = os.path.join(sweep, "shared")
    marker = os.path.join(shared, key + ".done.json")
    if _shared_done(marker, output):
        return False
    with FileLock(os.path.join(shared, key + ".lock")):
        if _shared_done(marker, output):  # another process made it while we waited
            return False
        cmd = cmd_fn()
        say(f"shared {key}: running")
        wall = run_logged(cmd, os.path.join(shared, key + ".log"), key)
        write_json(marker, {"command": cmd, "wall_s": round(wall, 3)})
        say(f"shared {key}: done ({wall:.1f} s)")
    return True


def teacher_stage(p, tools, say):
    t = p.rec["shared"].get("teacher")
    if not t:
        return
    key = os.path.basename(t["dir"])
    out = os.path.join(t["dir"], "teacher", "embedded.json")
    _shared_stage(p.sweep, key, out,
                  lambda: [tools.need("teacher"), "--config", p.config, "--out", t["dir"], "--quiet",
                          "model.teacher=embedded"], say)


def data_stage(p, tools, say):
    d = p.rec["shared"].get("data")
    if not d:
        return
    key = os.path.basename(d["dir"])
    out = os.path.join(d["dir"], "index.json")
    flags = []
    for name, flag in SAMPLE_FLAGS.items():
        if name == "stop_at_eos":
            flags += ["--no-eos-stop"] if d.get(name) == "false" else []
        elif name in d:
            flags += [flag, d[name]]
    cmd = lambda: [tools.need("sample"), "--model", d["teacher"], "--out", d["dir"], "--num-samples",
                   d["num_samples"], "--max-length", d["sample_length"], "--batch-size", d["sample_batch"],
                   "--seed", d["seed"], "--dtype", d["dtype"], "--device", d["device"], "--quiet"] + flags
    _shared_stage(p.sweep, key, out, cmd, say)


def eval_args(ev):
    a = []
    if ev["ppl"]:
        a += ["--ppl"] + ev["ppl"] + ["--ppl-protocol", ev["protocol"], "--seq-len", ev["seq_len"]]
        if ev["windows"] != "0":
            a += ["--windows", ev["windows"]]
    if ev["tasks"]:
        a += ["--tasks"] + ev["tasks"]
        if ev["limit"] != "0":
            a += ["--limit", ev["limit"]]
    a += ["--batch-size", ev["batch_size"]] + ev["args"]
    if ev["device"]:
        a += ["--device", ev["device"]]
    return a + ["--quiet"]


def teacher_eval_stage(p, tools, say):
    ev = p.rec["eval"]
    if not ev["ppl"] and not ev["tasks"]:
        return
    out = p.rec["shared"]["teacher_eval"]
    key = os.path.basename(out)[: -len(".json")]
    _shared_stage(p.sweep, key, out,
                  lambda: [tools.need("eval"), "--model", p.rec["teacher"]] + eval_args(ev) + ["--json", out], say)


def srun_env():
    """Inside a SLURM allocation of several tasks: the srun prefix and rendezvous variables
    (as scripts/slurm/onebit-train.sbatch sets them); else (None, None)."""
    ntasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if not os.environ.get("SLURM_JOB_ID") or ntasks <= 1:
        return None, None, 1
    env = dict(os.environ)
    if "MASTER_ADDR" not in env:
        hosts = subprocess.run(["scontrol", "show", "hostnames", env.get("SLURM_JOB_NODELIST", "")],
                               capture_output=True, text=True).stdout.split()
        env["MASTER_ADDR"] = hosts[0] if hosts else "127.0.0.1"
    env.setdefault("MASTER_PORT", str(20000 + int(env["SLURM_JOB_ID"]) % 20000))
    return ["srun", "--kill-on-bad-exit=1"], env, ntasks


def distil_stage(p, tools, say):
    out = os.path.join(p.student, "config.json")
    if p.stage_done("distil", out):
        return "complete"
    prefix, env, ranks = srun_env()
    cmd = (prefix or []) + [tools.need("train"), "--config", p.config]
    p.record("distil", state="running", command=cmd)
    wall = run_logged(cmd, p.log("distil"), "distil", env=env)
    if not os.path.isfile(out):
        raise StageFailed("distil", f"onebit-train exited 0 but wrote no {out}", p.log("distil"))
    p.record("distil", state="done", wall_s=round(wall, 3), ranks=ranks, command=cmd)
    return f"done ({wall:.1f} s)"


def eval_stage(p, tools, say):
    ev = p.rec["eval"]
    if not ev["ppl"] and not ev["tasks"]:
        p.record("eval", state="skipped", reason="nothing to evaluate: no train.eval_text, eval.ppl or eval.tasks")
        return "skipped (nothing to evaluate)"
    if p.stage_done("eval", p.eval_json):
        return "complete"
    cmd = [tools.need("eval"), "--model", p.student] + eval_args(ev) + ["--json", p.eval_json]
    p.record("eval", state="running", command=cmd)
    wall = run_logged(cmd, p.log("eval"), "eval")
    p.record("eval", state="done", wall_s=round(wall, 3), command=cmd,
             teacher_eval=p.rec["shared"]["teacher_eval"])
    return f"done ({wall:.1f} s)"


def export_stage(p, tools, say):
    out = os.path.join(p.export_dir, "config.json")
    if p.stage_done("export", out):
        return "complete"
    if not tools.exists("export"):
        p.record("export", state="skipped", reason="onebit-export is not built")
        return f"skipped ({tools.path('export')} not found: not built)"
    cmd = [tools.need("export"), "--model", p.student, "--out", p.export_dir]
    p.record("export", state="running", command=cmd)
    wall = run_logged(cmd, p.log("export"), "export")
    p.record("export", state="done", wall_s=round(wall, 3), command=cmd)
    return f"done ({wall:.1f} s)"


def run_point(sweep, name, tools, say, label=""):
    """The whole pipeline of one point. Returns 'done', 'busy' or 'failed'; raises StageStopped
    (after recording the point as stopped) when a stop signal ended a stage."""
    p = Point(sweep, name)
    try:
        with FileLock(os.path.join(p.dir, ".lock"), wait=False):
            try:
                teacher_stage(p, tools, say)
                data_stage(p, tools, say)
                for stage, fn in (("distil", distil_stage), ("teacher-eval", None), ("eval", eval_stage),
                                  ("export", export_stage)):
                    if fn is None:
                        teacher_eval_stage(p, tools, say)
                        continue
                    say(f"{label}{name}: {stage} {fn(p, tools, say)}")
            except StageStopped as e:
                if e.stage in STAGES:
                    p.record(e.stage, state="stopped", signal=e.signal, log=e.log)
                p.finish("stopped", f"{e.stage}: stopped by {e.signal}; run the point again to resume")
                say(f"{label}{name}: STOPPED {e.stage} by {e.signal} (exit {e.code}); running it again resumes")
                raise
            except StageFailed as e:
                if e.stage in STAGES:
                    p.record(e.stage, state="failed", error=e.line, log=e.log)
                p.finish("failed", f"{e.stage}: {e.line}")
                say(f"{label}{name}: FAILED {e.stage}: {e.line} (log: {e.log})")
                return "failed"
            except ToolError as e:
                p.finish("failed", str(e))
                say(f"{label}{name}: FAILED {e}")
                return "failed"
            p.finish("done")
            return "done"
    except BlockingIOError:
        say(f"{label}{name}: busy (another process runs this point)")
        return "busy"


def prepare(sweep, record, tools, say):
    """The shared stages of every point (teachers, samples, teacher evaluations)."""
    failed = []
    done = set()
    for entry in record["points"]:
        p = Point(sweep, entry["name"])
        for fn in (teacher_stage, data_stage, teacher_eval_stage):
            key = (fn.__name__, json.dumps(p.rec["shared"], sort_keys=True) if fn is not teacher_eval_stage
                   else p.rec["shared"]["teacher_eval"])
            if key in done:
                continue
            done.add(key)
            try:
                fn(p, tools, say)
            except (StageFailed, ToolError) as e:
                failed.append(f"{entry['name']}: {e}")
                say(f"FAILED {e}")
                break
    return failed


def select(record, only=None, index=None):
    import re
    pts = record["points"]
    if index is not None:
        m = [p for p in pts if p["index"] == index]
        if not m:
            raise ToolError(f"no point with index {index} (the sweep has 0..{len(pts) - 1})")
        return m
    if only:
        try:
            rx = re.compile(only)
        except re.error as e:
            raise ToolError(f"--only '{only}' is not a regular expression: {e}")
        m = [p for p in pts if rx.search(p["name"])]
        if not m:
            raise ToolError(f"--only '{only}' matches no point")
        return m
    return pts


def point_state(sweep, name):
    """(state, error, stages) from points/NAME/status.json, without running anything."""
    path = os.path.join(sweep, "points", name, STATUS_JSON)
    st = read_json(path) if os.path.isfile(path) else {"stages": {}}
    return st.get("state", "pending"), st.get("error"), st.get("stages", {})


def summary(sweep, entries, out):
    """A table of every point's stages; failed points again at the end with their error line."""
    rows = []
    failed = []
    for e in entries:
        state, err, stages = point_state(sweep, e["name"])
        cells = [stages.get(s, {}).get("state", "-") for s in STAGES]
        wall = sum(stages.get(s, {}).get("wall_s", 0) or 0 for s in STAGES)
        rows.append([str(e["index"]), e["name"], state] + cells + [f"{wall:.1f}"])
        if state == "failed":
            failed.append((e["name"], err))
    head = ["#", "point", "state"] + list(STAGES) + ["wall_s"]
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        out("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    n_done = sum(1 for r in rows if r[2] == "done")
    out(f"{n_done} of {len(rows)} points done, {len(failed)} failed")
    for name, err in failed:
        out(f"  FAILED {name}: {err}")
    return failed


def shared_pending(sweep, name):
    """True when a stage this point shares with others has not been made yet."""
    p = Point(sweep, name)
    sh = p.rec["shared"]
    shared = os.path.join(sweep, "shared")
    checks = []
    if "teacher" in sh:
        checks.append((os.path.basename(sh["teacher"]["dir"]), os.path.join(sh["teacher"]["dir"], "teacher")))
    if "data" in sh:
        checks.append((os.path.basename(sh["data"]["dir"]), sh["data"]["dir"]))
    if p.rec["eval"]["ppl"] or p.rec["eval"]["tasks"]:
        checks.append((os.path.basename(sh["teacher_eval"])[: -len(".json")], sh["teacher_eval"]))
    return any(not _shared_done(os.path.join(shared, k + ".done.json"), out) for k, out in checks)


def point_complete(sweep, name, tools):
    """True when re-running the point would do nothing."""
    p = Point(sweep, name)
    st = p.status["stages"]
    if p.status.get("state") != "done" or not p.stage_done("distil", os.path.join(p.student, "config.json")):
        return False
    ev = st.get("eval", {})
    if not (ev.get("state") == "skipped" or p.stage_done("eval", p.eval_json)):
        return False
    ex = st.get("export", {})
    return p.stage_done("export", os.path.join(p.export_dir, "config.json")) or (
        ex.get("state") == "skipped" and not tools.exists("export"))
