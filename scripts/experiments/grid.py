"""Grid files and their expansion into points (docs/experiments.md, "Grid files").

A grid file is a YAML mapping. Dotted keys at the top level (or under `grid:`) with a list are
crossed axes; with a single value they are fixed for every point (as under `set:`). `zip:` holds
groups of axes varied together; `seeds:` is crossed with everything and sets every key of
`seed_keys` (default train.seed and data.seed). Scalars stay the text written in the file.
"""
import hashlib
import itertools
import os
import re

from .common import ToolError, read_yaml

RESERVED = ("base", "set", "grid", "zip", "seeds", "seed_keys", "names", "eval", "slurm")
DEFAULT_SEED_KEYS = ("train.seed", "data.seed")
# Keys the sweep itself sets for every point.
SWEEP_KEYS = ("output_dir", "data.sample_dir")
KEY_RE = re.compile(r"^[a-z_]+(\.[a-z_0-9]+)?$")
EVAL_KEYS = ("ppl", "protocol", "seq_len", "windows", "tasks", "limit", "batch_size", "args")


class Grid:
    """A parsed grid: fixed overrides, crossed axes, zipped groups, seeds."""

    def __init__(self):
        self.path = None
        self.base = None          # base config path (absolute), or None when not in the file
        self.fixed = {}           # key -> value
        self.axes = []            # [(key, [values])], crossed in this order
        self.zips = []            # [[(key, [values]), ...]] each group zipped
        self.seeds = []           # [str]
        self.seed_keys = list(DEFAULT_SEED_KEYS)
        self.names = {}           # key -> short name used in point names
        self.eval = {}            # eval stage settings (EVAL_KEYS)
        self.slurm = {}           # defaults for `onebit-sweep submit`

    def varied_keys(self):
        keys = [k for k, _ in self.axes]
        for group in self.zips:
            keys += [k for k, _ in group]
        return keys


def _where(path, key):
    return f"{path}: '{key}'"


def _values(path, key, v, distinct=True):
    """The list of values of an axis (each a scalar string); distinct=False: repeats allowed (a
    zipped axis, whose rows are checked as a whole)."""
    if not isinstance(v, list):
        raise ToolError(f"{_where(path, key)} expects a list of values, got {type(v).__name__}")
    if not v:
        raise ToolError(f"{_where(path, key)} has an empty list of values")
    for x in v:
        if isinstance(x, (list, dict)):
            raise ToolError(f"{_where(path, key)}: every value must be a single value, got {x!r}")
    if distinct and len(set(v)) != len(v):
        raise ToolError(f"{_where(path, key)} lists a value twice: {v}")
    return list(v)


def _check_key(path, key, seen):
    if not KEY_RE.match(key) or "." not in key and key not in ("output_dir",):
        raise ToolError(f"{path}: '{key}' is neither a config key (section.key, docs/configuration.md) "
                        f"nor one of {', '.join(RESERVED)}")
    if key in SWEEP_KEYS:
        raise ToolError(f"{path}: '{key}' is set by the sweep for every point (each point runs in "
                        f"SWEEP/points/NAME/run; self-sampled data is shared in SWEEP/shared)")
    if key in seen:
        raise ToolError(f"{path}: '{key}' is given twice ({seen[key]} and another place)")


def parse_grid(path, data=None):
    """Reads and checks a grid file (or `data`, the mapping, for tests)."""
    g = Grid()
    g.path = os.path.abspath(path) if path else None
    if data is None:
        data = read_yaml(path, strings=True)
    where = path or "grid"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolError(f"{where}: a grid file is a mapping (key: [values]), got {type(data).__name__}")
    seen = {}

    def add_fixed(key, value, origin):
        _check_key(where, key, seen)
        if isinstance(value, (list, dict)):
            raise ToolError(f"{_where(where, key)} under '{origin}' expects a single value, got {value!r}")
        seen[key] = origin
        g.fixed[key] = value

    def add_axis(key, values, origin):
        _check_key(where, key, seen)
        seen[key] = origin
        g.axes.append((key, _values(where, key, values)))

    for key, value in data.items():
        if key == "base":
            if not isinstance(value, str) or not value:
                raise ToolError(f"{where}: 'base' expects a config file path")
            g.base = os.path.normpath(os.path.join(os.path.dirname(g.path or "."), value))
        elif key == "set":
            if not isinstance(value, dict):
                raise ToolError(f"{where}: 'set' expects a mapping key: value")
            for k, v in value.items():
                add_fixed(k, v, "set")
        elif key == "grid":
            if not isinstance(value, dict):
                raise ToolError(f"{where}: 'grid' expects a mapping key: [values]")
            for k, v in value.items():
                add_axis(k, v, "grid")
        elif key == "zip":
            groups = value if isinstance(value, list) else [value]
            for i, group in enumerate(groups):
                if not isinstance(group, dict) or not group:
                    raise ToolError(f"{where}: 'zip' expects a list of mappings key: [values]")
                axes = []
                for k, v in group.items():
                    _check_key(where, k, seen)
                    seen[k] = f"zip group {i + 1}"
                    axes.append((k, _values(where, k, v, distinct=False)))
                n = {k: len(v) for k, v in axes}
                if len(set(n.values())) != 1:
                    raise ToolError(f"{where}: zip group {i + 1} has lists of different lengths "
                                    f"({', '.join(f'{k}: {m}' for k, m in n.items())})")
                # An axis may repeat a value (one-at-a-time designs); a whole row may not.
                rows = [tuple(str(x) for x in row) for row in zip(*(v for _, v in axes))]
                for j, row in enumerate(rows):
                    if row in rows[:j]:
                        raise ToolError(f"{where}: zip group {i + 1} lists the same values twice (rows "
                                        f"{rows.index(row) + 1} and {j + 1}: "
                                        f"{', '.join(f'{k}={x}' for (k, _), x in zip(axes, row))})")
                g.zips.append(axes)
        elif key == "seeds":
            seeds = _values(where, "seeds", value if isinstance(value, list) else [value])
            for s in seeds:
                if not re.fullmatch(r"[0-9]+", str(s)):
                    raise ToolError(f"{where}: 'seeds' expects non-negative integers, got '{s}'")
            g.seeds = [str(int(s)) for s in seeds]
        elif key == "seed_keys":
            keys = value if isinstance(value, list) else [value]
            if not keys or not all(isinstance(k, str) and KEY_RE.match(k) and "." in k for k in keys):
                raise ToolError(f"{where}: 'seed_keys' expects a list of config keys, e.g. [train.seed, data.seed]")
            g.seed_keys = list(keys)
        elif key == "names":
            if not isinstance(value, dict) or not all(isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_-]+", v)
                                                      for v in value.values()):
                raise ToolError(f"{where}: 'names' maps keys to short names of letters, digits, _ and -")
            g.names = dict(value)
        elif key == "eval":
            if not isinstance(value, dict):
                raise ToolError(f"{where}: 'eval' expects a mapping ({', '.join(EVAL_KEYS)})")
            for k in value:
                if k not in EVAL_KEYS:
                    raise ToolError(f"{where}: unknown key 'eval.{k}' (expected one of {', '.join(EVAL_KEYS)})")
            g.eval = dict(value)
        elif key == "slurm":
            if not isinstance(value, dict):
                raise ToolError(f"{where}: 'slurm' expects a mapping of submit options")
            g.slurm = dict(value)
        elif isinstance(value, list):
            add_axis(key, value, "top level")
        elif isinstance(value, dict):
            raise ToolError(f"{where}: '{key}' is a mapping; write config keys dotted (optim.lr: [1e-4, 2e-4]) "
                            f"or use one of {', '.join(RESERVED)}")
        else:
            add_fixed(key, value, "top level")
    if g.seeds:
        for k in g.seed_keys:
            if k in seen:
                raise ToolError(f"{where}: '{k}' is set by 'seeds' (seed_keys) and also in {seen[k]}")
    return g


def add_sets(g, sets):
    """Adds command-line KEY=VALUE overrides to the fixed keys of a parsed grid."""
    varied = set(g.varied_keys()) | (set(g.seed_keys) if g.seeds else set())
    for kv in sets:
        key, eq, value = kv.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ToolError(f"--set '{kv}' is not of the form key=value")
        if key in varied:
            raise ToolError(f"--set {key}: the grid varies '{key}'")
        _check_key("--set", key, {})
        g.fixed[key] = value.strip()


def _short_names(g):
    """key -> the short name used in point names: `names:`, else the last part of the key,
    else the whole key with dots as dashes when two keys end alike."""
    keys = g.varied_keys()
    last = [k.split(".")[-1] for k in keys]
    out = {}
    for k, s in zip(keys, last):
        out[k] = g.names.get(k) or (s if last.count(s) == 1 else k.replace(".", "-"))
    return out


def _value_text(v):
    """A value as it appears in a point name: a path's last part, unsafe characters as '_'."""
    v = str(v)
    if "/" in v:
        v = [p for p in v.split("/") if p][-1] if v.strip("/") else "root"
    v = re.sub(r"[^A-Za-z0-9.+-]", "_", v)
    return v or "empty"


def _digest(items):
    return hashlib.sha1(repr(items).encode()).hexdigest()[:6]


def expand(g):
    """The points of a grid: a list of (name, overrides) in a fixed order (crossed axes in file
    order, then zip groups, then seeds). overrides = ordered [(key, value)] including the fixed
    keys; the name depends only on the point's own varied values."""
    dims = []  # each dim: list of alternatives, each a list of (key, value)
    for key, values in g.axes:
        dims.append([[(key, v)] for v in values])
    for group in g.zips:
        n = len(group[0][1])
        dims.append([[(k, vals[i]) for k, vals in group] for i in range(n)])
    if g.seeds:
        dims.append([[(k, s) for k in g.seed_keys] for s in g.seeds])
    short = _short_names(g)
    points = []
    for combo in itertools.product(*dims) if dims else [()]:
        varied = [kv for alt in combo for kv in alt]
        parts = [f"{short[k]}={_value_text(v)}" for k, v in varied if k in short]
        if g.seeds:
            parts.append(f"seed={dict(varied)[g.seed_keys[0]]}")
        name = "_".join(parts) if parts else "base"
        if len(name) > 120:
            name = name[:100] + "-" + _digest(varied)
        points.append({"name": name, "varied": varied, "overrides": list(g.fixed.items()) + varied})
    # Two points whose values read alike in a name (a/b/x and c/x) get a digest of their values.
    names = [p["name"] for p in points]
    for p in points:
        if names.count(p["name"]) > 1:
            p["clash"] = True
    for p in points:
        if p.pop("clash", False):
            p["name"] = p["name"] + "-" + _digest(p["varied"])
    return [(p["name"], p["overrides"], p["varied"]) for p in points]
