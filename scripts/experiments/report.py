"""Rows of results from sweeps, points and run folders, and their Markdown and CSV tables
(docs/experiments.md, "onebit-report")."""
import csv
import io
import json
import math
import os
import statistics
import struct

from .common import (POINT_JSON, STATUS_JSON, SWEEP_JSON, ToolError, is_point_dir, is_sweep_dir, read_json,
                     read_jsonl, read_yaml)

MAX_HEADER = 100 << 20  # safetensors header cap (the reference implementation's)


def safetensors_tensors(path):
    """{name: (dtype, shape)} from a safetensors file's header."""
    try:
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise ToolError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            n = struct.unpack("<Q", raw)[0]
            if n > MAX_HEADER:
                raise ToolError(f"{path}: safetensors header of {n} bytes is over the 100 MB cap")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        raise ToolError(f"{path}: cannot read the safetensors header: {e}")
    return {k: (v["dtype"], v["shape"]) for k, v in header.items() if k != "__metadata__"}


def student_size(student_dir):
    """Deployed size of a OneBit student, counted from its tensors as the export stores them:
    1 bit per latent weight, 16 bits per g, h, bias and per other tensor (embeddings, norms,
    lm_head). Returns {params, bytes, bits_per_param (1-bit linears: bits / (W + g + h + bias))}."""
    path = os.path.join(student_dir, "model.safetensors")
    if not os.path.isfile(path):
        return None
    t = safetensors_tensors(path)
    numel = {k: math.prod(shape) for k, (_, shape) in t.items()}
    layers = [k[:-2] for k in t if k.endswith(".g") and k[:-2] + ".h" in t and k[:-2] + ".weight" in t]
    lin_bits = lin_params = 0
    used = set()
    for L in layers:
        w, g, h, b = L + ".weight", L + ".g", L + ".h", L + ".bias"
        extra = numel[g] + numel[h] + numel.get(b, 0)
        lin_bits += numel[w] + 16 * extra
        lin_params += numel[w] + extra
        used.update([w, g, h, b])
    other = sum(n for k, n in numel.items() if k not in used)
    params = sum(n for k, n in numel.items() if not (k in used and k.endswith((".g", ".h"))))
    return {"params": params, "bytes": (lin_bits + 16 * other) / 8,
            "bits_per_param": lin_bits / lin_params if lin_params else None, "onebit_layers": len(layers)}


def folder_bytes(path, ext=".safetensors"):
    total, found = 0, False
    for root, _, files in os.walk(path):
        for f in files:
            if f.endswith(ext):
                total += os.path.getsize(os.path.join(root, f))
                found = True
    return total if found else None


def _num(x):
    return x if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def eval_section(sec):
    """{'ppl': {stem: ppl}, 'tasks': {task: {acc, acc_norm}}, 'avg_acc', 'avg_acc_norm'} of one
    model in an onebit-eval JSON."""
    if not sec:
        return None
    ppl = {}
    for p in sec.get("perplexity") or []:
        stem = os.path.splitext(os.path.basename(p.get("file", "text")))[0]
        ppl[stem] = _num(p.get("ppl"))
    tasks = {t["task"]: {"acc": _num(t.get("acc")), "acc_norm": _num(t.get("acc_norm"))}
             for t in sec.get("tasks") or []}
    avg = sec.get("average") or {}
    return {"ppl": ppl, "tasks": tasks, "avg_acc": _num(avg.get("acc")), "avg_acc_norm": _num(avg.get("acc_norm"))}


def _read_eval(path):
    js = read_json(path, "evaluation")
    if js.get("format") != "onebit-eval/1":
        raise ToolError(f"{path}: not an onebit-eval --json file (format {js.get('format')!r})")
    return js


def _curves(metrics, tokens_per_step):
    loss, ppl = [], []
    final = None
    for m in metrics:
        step = m.get("step")
        if not isinstance(step, int):
            continue
        tok = step * tokens_per_step if tokens_per_step else step
        if "final_ppl" in m:
            final = {k: _num(v) for k, v in (m["final_ppl"] or {}).items()}
            continue
        if "kl" in m and not m.get("skipped"):
            loss.append((tok, _num(m.get("loss")), _num(m.get("kl")), _num(m.get("hidden"))))
        if "eval_ppl" in m:
            ppl.append((tok, _num(m["eval_ppl"])))
    return loss, ppl, final


def _config_tokens_per_step(cfg_path):
    from .sweep import tokens_per_step
    try:
        return tokens_per_step(read_yaml(cfg_path, strings=True))
    except (ToolError, KeyError, TypeError, ValueError, AttributeError):
        return None, False


def row_from_run(run_dir, name, keys=None, seed="", student_eval=None, teacher_eval=None, status=None,
                 tokens_per_step=None, export_dir=None, error=None):
    """One result row from a run folder (output_dir of onebit-train) and its evaluations."""
    status = status or {}
    stages = status.get("stages", {})
    ranks = stages.get("distil", {}).get("ranks", 1) or 1
    tps, all_ranks = tokens_per_step or _config_tokens_per_step(os.path.join(run_dir, "config.yaml"))
    tps = (tps or 0) * (1 if all_ranks else ranks)
    metrics = read_jsonl(os.path.join(run_dir, "metrics.jsonl"))
    loss, ppl_curve, final = _curves(metrics, tps)
    steps = max([m["step"] for m in metrics if isinstance(m.get("step"), int)] or [0])
    s_eval = t_eval = None
    if student_eval and os.path.isfile(student_eval):
        js = _read_eval(student_eval)
        s_eval = eval_section(js.get("student"))
        t_eval = eval_section(js.get("teacher"))
    if teacher_eval and os.path.isfile(teacher_eval) and t_eval is None:
        t_eval = eval_section(_read_eval(teacher_eval).get("student"))
    if s_eval is None and final:  # the trainer's own final table (train.eval_text)
        s_eval = {"ppl": {"eval_text": final.get("student")}, "tasks": {}, "avg_acc": None, "avg_acc_norm": None}
        t_eval = {"ppl": {"eval_text": final.get("teacher")}, "tasks": {}, "avg_acc": None, "avg_acc_norm": None}
    size = student_size(os.path.join(run_dir, "student"))
    measured = folder_bytes(export_dir) if export_dir and os.path.isdir(export_dir) else None
    state = status.get("state") or ("done" if s_eval else "no results")
    return {
        "point": name, "source": run_dir, "keys": dict(keys or {}), "seed": seed, "state": state,
        "error": error or status.get("error"),
        "student": s_eval, "teacher": t_eval, "naive_ppl": (final or {}).get("naive_sign"),
        "params": size["params"] if size else None,
        "size_mb": (measured if measured is not None else size["bytes"] if size else None),
        "size_source": "export" if measured is not None else ("estimate" if size else None),
        "bits_per_param": size["bits_per_param"] if size else None,
        "steps": steps, "tokens": steps * tps if tps else None,
        "wall_s": stages.get("distil", {}).get("wall_s"),
        "loss_curve": loss, "ppl_curve": ppl_curve,
    }


def rows_from_point(pdir, seed_keys):
    rec = read_json(os.path.join(pdir, POINT_JSON), "point record")
    st_path = os.path.join(pdir, STATUS_JSON)
    status = read_json(st_path) if os.path.isfile(st_path) else {"state": "pending"}
    varied = [tuple(kv) for kv in rec.get("varied", [])]
    keys = {k: v for k, v in varied if k not in seed_keys}
    seed = next((v for k, v in varied if k in seed_keys), "")
    return row_from_run(os.path.join(pdir, "run"), rec["name"], keys, seed,
                        student_eval=os.path.join(pdir, "eval.json"),
                        teacher_eval=rec.get("shared", {}).get("teacher_eval"), status=status,
                        tokens_per_step=(rec.get("tokens_per_step"), rec.get("tokens_per_step_all_ranks", False)),
                        export_dir=os.path.join(pdir, "export"))


def collect(inputs):
    """Rows from sweep folders, point folders, run folders, or folders holding any of those."""
    rows = []

    def add(path, depth=0):
        path = os.path.abspath(path)
        if is_sweep_dir(path):
            rec = read_json(os.path.join(path, SWEEP_JSON), "sweep record")
            for e in rec["points"]:
                rows.append(rows_from_point(os.path.join(path, "points", e["name"]), rec.get("seed_keys") or []))
        elif is_point_dir(path):
            # A point named alone keeps its sweep's seed keys (a seed, not a key to group by).
            sweep = os.path.dirname(os.path.dirname(path))
            seed_keys = read_json(os.path.join(sweep, SWEEP_JSON), "sweep record").get("seed_keys") or [] \
                if is_sweep_dir(sweep) else []
            rows.append(rows_from_point(path, seed_keys))
        elif os.path.isfile(os.path.join(path, "metrics.jsonl")) or os.path.isdir(os.path.join(path, "student")):
            ev = next((p for p in (os.path.join(path, "eval.json"), os.path.join(path, "student", "eval.json"))
                       if os.path.isfile(p)), None)
            rows.append(row_from_run(path, os.path.basename(path), {"run": os.path.basename(path)},
                                     student_eval=ev, export_dir=os.path.join(path, "export")))
        elif os.path.isdir(path) and depth == 0:
            subs = sorted(os.path.join(path, d) for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
            n = len(rows)
            for s in subs:
                add(s, depth + 1)
            if len(rows) == n:
                raise ToolError(f"{path}: no sweep, point or run folder in it (expected sweep.json, point.json "
                                f"or metrics.jsonl)")
        elif depth == 0:
            raise ToolError(f"{path}: not a sweep, point or run folder" if os.path.exists(path)
                            else f"{path}: no such folder")

    for p in inputs:
        add(p)
    return rows


# ---------------------------------------------------------------------------------------------
# Tables


def _first_seen(items):
    out = []
    for x in items:
        if x not in out:
            out.append(x)
    return out


def key_columns(rows):
    return _first_seen(k for r in rows for k in r["keys"])


def ppl_files(rows):
    return _first_seen(s for r in rows for side in ("teacher", "student") for s in ((r.get(side) or {}).get("ppl") or {}))


def task_names(rows):
    return _first_seen(t for r in rows for t in ((r.get("student") or {}).get("tasks") or {}))


def ppl(r, side, stem):
    return ((r.get(side) or {}).get("ppl") or {}).get(stem)


def retention(r, stems):
    """Zero-shot retention (student avg acc / teacher avg acc) when tasks ran, else the
    perplexity retention teacher/student of the first text."""
    s, t = r.get("student") or {}, r.get("teacher") or {}
    if s.get("avg_acc") and t.get("avg_acc"):
        return s["avg_acc"] / t["avg_acc"]
    if stems and ppl(r, "student", stems[0]) and ppl(r, "teacher", stems[0]):
        return ppl(r, "teacher", stems[0]) / ppl(r, "student", stems[0])
    return None


def columns(rows):
    """[(header, function(row) -> value)] for the CSV (every number) and the Markdown table."""
    stems, tasks, keys = ppl_files(rows), task_names(rows), key_columns(rows)
    one = len(stems) == 1
    cols = [("point", lambda r: r["point"])]
    cols += [(k, (lambda k: lambda r: r["keys"].get(k, ""))(k)) for k in keys]
    if any(r["seed"] for r in rows):
        cols.append(("seed", lambda r: r["seed"]))
    for s in stems:
        tag = "" if one else f" {s}"
        cols.append((f"teacher ppl{tag}", (lambda s: lambda r: ppl(r, "teacher", s))(s)))
        cols.append((f"student ppl{tag}", (lambda s: lambda r: ppl(r, "student", s))(s)))
    for t in tasks:
        for m in ("acc", "acc_norm"):
            cols.append((f"{t} {m}", (lambda t, m: lambda r: ((r.get("student") or {}).get("tasks", {})
                                                               .get(t) or {}).get(m))(t, m)))
    if tasks:
        cols.append(("teacher avg acc", lambda r: (r.get("teacher") or {}).get("avg_acc")))
        cols.append(("student avg acc", lambda r: (r.get("student") or {}).get("avg_acc")))
    cols += [("retention", lambda r: retention(r, stems)),
             ("size MB", lambda r: r["size_mb"] / 1e6 if r["size_mb"] is not None else None),
             ("bits/param", lambda r: r["bits_per_param"]),
             ("tokens", lambda r: r["tokens"]),
             ("wall s", lambda r: r["wall_s"])]
    return cols


def _fmt(header, v):
    if v is None or v == "":
        return "" if v == "" else "–"
    if isinstance(v, str):
        return v
    if header == "tokens":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k" if v >= 1e4 else str(int(v))
    if header == "bits/param":
        return f"{v:.4f}"
    if header == "wall s":
        return f"{v:.0f}" if v >= 10 else f"{v:.1f}"
    if header == "size MB":
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if "ppl" in header:
        return f"{v:.3f}" if v < 1000 else f"{v:.0f}"
    return f"{v:.3f}"


def markdown_table(headers, cells):
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(out)


def csv_text(rows):
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([h for h, _ in cols] + ["state", "source", "error"])
    for r in rows:
        vals = []
        for _, f in cols:
            v = f(r)
            vals.append("" if v is None else (repr(v) if isinstance(v, float) else v))
        w.writerow(vals + [r["state"], r["source"], r.get("error") or ""])
    return buf.getvalue()


def groups(rows):
    """Rows with the same keys (all but the seed): [(label, keys, [rows])] in first-seen order."""
    out = {}
    for r in rows:
        k = tuple(sorted(r["keys"].items()))
        out.setdefault(k, []).append(r)
    return [(", ".join(f"{a.split('.')[-1]}={b}" for a, b in r[0]["keys"].items()) or r[0]["point"],
             dict(k), r) for k, r in out.items()]


def mean_spread(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None, 0
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


def _pm(m, s, n, digits=3):
    if m is None:
        return "–"
    return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def aggregate_table(rows):
    """Mean ± sample standard deviation over the seeds of each group of keys."""
    stems, tasks = ppl_files(rows), task_names(rows)
    keys = key_columns(rows)
    headers = keys + ["seeds"]
    if stems:
        headers += ["teacher ppl", "student ppl (mean ± sd)"]
    if tasks:
        headers += ["student avg acc (mean ± sd)"]
    headers += ["retention"]
    cells = []
    for label, k, rs in groups(rows):
        c = [k.get(key, "") for key in keys]
        done = [r for r in rs if r.get("student")]
        c.append(str(len(done)))
        if stems:
            c.append(_pm(*mean_spread([ppl(r, "teacher", stems[0]) for r in done])[:1], 0, 1))
            c.append(_pm(*mean_spread([ppl(r, "student", stems[0]) for r in done])))
        if tasks:
            c.append(_pm(*mean_spread([(r.get("student") or {}).get("avg_acc") for r in done])))
        c.append(_pm(*mean_spread([retention(r, stems) for r in done])))
        cells.append(c)
    return markdown_table(headers, cells)


def markdown(rows, title, command, plots):
    cols = columns(rows)
    done = [r for r in rows if r.get("student")]
    lines = [f"# {title}", "", f"Made by: `{command}`", ""]
    stems = ppl_files(rows)
    if stems:
        lines.append("Perplexity on " + ", ".join(f"`{s}`" for s in stems) +
                     "; retention = student/teacher average zero-shot accuracy when tasks ran, else teacher/student "
                     "perplexity. Size: " + ("the export's files" if any(r["size_source"] == "export" for r in rows)
                                             else "1-bit signs + fp16 g/h/bias/other tensors, counted from the "
                                                  "student's tensors") +
                     "; bits/param of the 1-bit linears; tokens = optimizer steps × tokens per step; wall = distil "
                     "stage.")
        lines.append("")
    lines.append(markdown_table([h for h, _ in cols], [[_fmt(h, f(r)) for h, f in cols] for r in done]))
    gs = groups(done)
    if done and len(gs) < len(done):
        lines += ["", "## Mean ± standard deviation over seeds", "", aggregate_table(done)]
    missing = [r for r in rows if not r.get("student")]
    if missing:
        lines += ["", "## Points without results", ""]
        lines += [f"- `{r['point']}`: {r['state']}" + (f": {r['error']}" if r.get("error") else "") for r in missing]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{os.path.splitext(p)[0]}]({p})" for p in plots]
    return "\n".join(lines) + "\n"
