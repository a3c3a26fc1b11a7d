"""Shared by onebit-sweep and onebit-report: the interpreter hand-off, one-line errors, atomic
writes, YAML/JSON reading and the sweep folder's file names."""
import json
import os
import sys
import tempfile

# The venv that scripts/setup.sh makes (it installs PyYAML and matplotlib there).
VENV_PYTHON = os.path.expanduser("~/.cache/onebit/venv-torch-2.11.0/bin/python")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ToolError(Exception):
    """A mistake of the user or of a file: printed as one line 'PROG: error: ...', exit code 1."""


def ensure_modules(prog, modules):
    """Re-executes the program under ONEBIT_PYTHON or the project venv when this interpreter
    lacks one of `modules` (e.g. a system python3 without PyYAML)."""
    missing = []
    for m in modules:
        try:
            __import__(m)
        except ImportError:
            missing.append(m)
    if not missing:
        return
    if not os.environ.get("ONEBIT_TOOLS_REEXEC"):
        for cand in (os.environ.get("ONEBIT_PYTHON"), VENV_PYTHON):
            # (not realpath: a venv's python links to the interpreter it was made from)
            if cand and os.path.isfile(cand) and os.path.abspath(cand) != os.path.abspath(sys.executable):
                os.environ["ONEBIT_TOOLS_REEXEC"] = "1"
                os.execv(cand, [cand] + sys.argv)
    sys.stderr.write(f"{prog}: error: this Python ({sys.executable}) lacks {', '.join(missing)}; run "
                     f"scripts/setup.sh (it installs them in {os.path.dirname(os.path.dirname(VENV_PYTHON))}) "
                     f"or set ONEBIT_PYTHON to a Python that has them\n")
    sys.exit(1)


def run_main(prog, main):
    """Calls main(); ToolError and interrupts become one line on stderr and a non-zero exit."""
    try:
        sys.exit(main())
    except ToolError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file in the same folder, fsync and rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path, obj):
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path, what="file"):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such {what}")
    except (OSError, ValueError) as e:
        raise ToolError(f"{path}: cannot read {what}: {e}")


def read_yaml(path, strings=False):
    """A YAML file as Python objects. strings=True keeps every scalar as the text written
    (PyYAML's BaseLoader), so '1e-4' and '0.10' reach onebit-train exactly as typed."""
    import yaml
    try:
        with open(path) as f:
            return yaml.load(f, Loader=yaml.BaseLoader if strings else yaml.SafeLoader)
    except FileNotFoundError:
        raise ToolError(f"{path}: no such file")
    except OSError as e:
        raise ToolError(f"{path}: {e}")
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ToolError(f"{path}: invalid YAML{line}: {problem}")


def read_jsonl(path):
    """The JSON lines of a file (metrics.jsonl); a torn last line (a run killed mid-write) is skipped."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
    except FileNotFoundError:
        return []
    return rows


# The folder of a sweep (docs/experiments.md, "The sweep folder").
SWEEP_JSON = "sweep.json"
POINT_JSON = "point.json"
STATUS_JSON = "status.json"


def is_sweep_dir(path):
    return os.path.isfile(os.path.join(path, SWEEP_JSON))


def is_point_dir(path):
    return os.path.isfile(os.path.join(path, POINT_JSON))
