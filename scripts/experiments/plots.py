"""PNG plots of report rows (matplotlib, Agg): loss curves, student perplexity against tokens,
ablation bars with the seed spread, perplexity against model size."""
import os

from . import report as rp

MAX_LEGEND = 12


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colors(n):
    plt = _plt()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _by_group(rows):
    gs = rp.groups(rows)
    return [(label, rs, c) for (label, _, rs), c in zip(gs, _colors(len(gs)))]


def _plain_log(ax, axis="y"):
    """Log scale with tick labels as plain numbers (2, 3, 5 between the decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator
    a = ax.yaxis if axis == "y" else ax.xaxis
    (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_locator(LogLocator(subs=(2, 3, 5)))
    a.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _legend(ax, n):
    if 0 < n <= MAX_LEGEND:
        ax.legend(fontsize=7, loc="best")


def _xlabel(rows):
    return "training tokens" if any(r["tokens"] for r in rows) else "optimizer steps"


def loss_curves(rows, path):
    """KL and hidden-state terms of the KD loss against tokens (one line per point, one colour per
    group of keys: the seeds of a group share it)."""
    rows = [r for r in rows if r["loss_curve"]]
    if not rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    groups = _by_group(rows)
    for label, rs, color in groups:
        for i, r in enumerate(rs):
            t = [p[0] for p in r["loss_curve"]]
            for ax, col in zip(axes, (2, 3)):
                ax.plot(t, [p[col] for p in r["loss_curve"]], color=color, alpha=0.85, lw=1.2,
                        label=label if i == 0 else None)
    for ax, name in zip(axes, ("KL(teacher ‖ student) (before kd_loss_scale)", "hidden-state term (before α)")):
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(_xlabel(rows))
        _plain_log(ax)
        ax.grid(alpha=0.3, which="both")
    _legend(axes[1], len(groups))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ppl_vs_tokens(rows, stems):
    """Per row: the student perplexity during training (train.eval_every, train.eval_windows
    windows) and the final evaluation (the eval stage), as (row, curve, final point or None)."""
    pts = []
    for r in rows:
        curve = [(t, p) for t, p in r["ppl_curve"] if p]
        final = rp.ppl(r, "student", stems[0]) if stems else None
        end = (r["tokens"], final) if final and r["tokens"] else None
        if curve or end:
            pts.append((r, curve, end))
    return pts


def student_ppl(rows, stems, path):
    """Lines: perplexity during training; stars: the final evaluation of the whole text."""
    pts = ppl_vs_tokens(rows, stems)
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    colors = {label: c for label, _, c in _by_group([r for r, _, _ in pts])}
    seen = set()
    for r, curve, end in pts:
        label = rp.groups([r])[0][0]
        if curve:
            ax.plot([c[0] for c in curve], [c[1] for c in curve], marker="o", ms=3, lw=1.2, color=colors[label],
                    label=None if label in seen else label)
        if end:
            ax.plot([end[0]], [end[1]], marker="*", ms=10, ls="none", color=colors[label],
                    label=None if label in seen or curve else label)
        seen.add(label)
    if any(end for _, _, end in pts):
        ax.plot([], [], marker="*", ms=8, ls="none", color="grey", label="final eval")
    teach = [rp.ppl(r, "teacher", stems[0]) for r, _, _ in pts] if stems else []
    teach = [t for t in teach if t]
    if teach:
        ax.axhline(min(teach), color="k", ls="--", lw=1, label="teacher")
    ax.set_xlabel(_xlabel(rows))
    ax.set_ylabel("student perplexity" + (f" ({stems[0]})" if stems else ""))
    _plain_log(ax)
    ax.grid(alpha=0.3, which="both")
    _legend(ax, len(seen) + 2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ablation_bars(rows, stems, path):
    """Mean student perplexity per group of keys, the sample standard deviation over seeds as
    the error bar, each seed as a dot, the teacher as a dashed line."""
    if not stems:
        return None
    gs = [(label, [rp.ppl(r, "student", stems[0]) for r in rs]) for label, _, rs in rp.groups(rows)]
    gs = [(label, [v for v in vals if v]) for label, vals in gs]
    gs = [g for g in gs if g[1]]
    if len(gs) < 2 and not any(len(v) > 1 for _, v in gs):
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(gs) + 2), 4.5))
    means, sds = [], []
    for label, vals in gs:
        m, s, _ = rp.mean_spread(vals)
        means.append(m)
        sds.append(s)
    x = list(range(len(gs)))
    ax.bar(x, means, yerr=sds, capsize=4, color=_colors(len(gs)), alpha=0.75)
    for i, (_, vals) in enumerate(gs):
        ax.scatter([i] * len(vals), vals, color="k", s=10, zorder=3)
    teach = [rp.ppl(r, "teacher", stems[0]) for r in rows if rp.ppl(r, "teacher", stems[0])]
    if teach:
        ax.axhline(min(teach), color="k", ls="--", lw=1, label="teacher")
        ax.legend(fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels([g[0] for g in gs], rotation=30 if len(gs) > 3 else 0, ha="right" if len(gs) > 3 else "center",
                       fontsize=8)
    ax.set_ylabel(f"student perplexity ({stems[0]})")
    n = max(len(v) for _, v in gs)
    ax.set_title(f"mean ± sd over {n} seed{'s' if n > 1 else ''}" if n > 1 else "one run each", fontsize=10)
    lo = min(min(v) for _, v in gs)
    ax.set_ylim(bottom=max(0, min(lo, min(teach) if teach else lo) * 0.9))
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def ppl_vs_size(rows, stems, path):
    """Teacher and student perplexity against the number of parameters, when sizes differ."""
    rs = [r for r in rows if r["params"] and stems and rp.ppl(r, "student", stems[0])]
    if len({r["params"] for r in rs}) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    by = {}
    for r in rs:
        by.setdefault(r["params"], []).append(r)
    xs = sorted(by)
    for side, style in (("teacher", "s--"), ("student", "o-")):
        ys = [rp.mean_spread([rp.ppl(r, side, stems[0]) for r in by[x]]) for x in xs]
        ax.errorbar(xs, [y[0] for y in ys], yerr=[y[1] for y in ys], fmt=style, capsize=3, label=side)
    from matplotlib.ticker import FuncFormatter, LogLocator
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(LogLocator(subs=(2, 5)))
    human = FuncFormatter(lambda v, _: next((f"{v / d:g}{u}" for d, u in ((1e9, "B"), (1e6, "M"), (1e3, "k"))
                                             if v >= d), f"{v:g}"))
    ax.xaxis.set_major_formatter(human)
    ax.xaxis.set_minor_formatter(human)
    _plain_log(ax)
    ax.set_xlabel("parameters (mean over the rows of each size)")
    ax.set_ylabel(f"perplexity ({stems[0]})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_all(rows, out_dir):
    """Draws every plot the rows allow; returns the file names written (relative to out_dir)."""
    stems = rp.ppl_files(rows)
    done = [r for r in rows if r.get("student") or r["loss_curve"]]
    made = []
    for name, fn in (("loss_curves.png", lambda p: loss_curves(done, p)),
                     ("student_ppl_vs_tokens.png", lambda p: student_ppl(done, stems, p)),
                     ("ablation.png", lambda p: ablation_bars([r for r in done if r.get("student")], stems, p)),
                     ("ppl_vs_size.png", lambda p: ppl_vs_size(done, stems, p))):
        path = os.path.join(out_dir, name)
        if fn(path):
            made.append(name)
        elif os.path.exists(path):
            os.unlink(path)  # a plot from an earlier report that these rows no longer allow
    return made
