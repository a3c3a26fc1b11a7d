"""Runs lm-evaluation-harness itself (pip lm_eval, pinned in scripts/setup.sh) on local task
rows, for tests/eval/test_lm_eval.cpp.

usage: run_lm_eval.py MODEL_DIR ROWS_DIR WORK_DIR OUT_JSON
ROWS_DIR holds NAME.jsonl Hugging Face rows for piqa, hellaswag, winogrande, boolq, arc_easy,
arc_challenge, lambada. Each task is lm-eval's own default config (`include` of the yaml that
ships with lm_eval), pointed at the local rows; nothing is re-implemented here. Writes
{task: {"metrics": {...}, "loglik": [[per request, doc order]], "greedy": [[...]]}}.
"""
import json
import os
import sys

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

TASKS = {  # onebit name -> lm-eval config shipped with lm_eval
    "piqa": "piqa/piqa.yaml",
    "hellaswag": "hellaswag/hellaswag.yaml",
    "winogrande": "winogrande/default.yaml",
    "boolq": "super_glue/boolq/default.yaml",
    "arc_easy": "arc/arc_easy.yaml",
    "arc_challenge": "arc/arc_challenge.yaml",
    "lambada": "lambada/lambada_openai.yaml",
}


def main():
    model_dir, rows_dir, work, out = sys.argv[1:5]
    tasks_root = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    os.makedirs(work, exist_ok=True)
    names = []
    for name, yaml in TASKS.items():
        split = "test" if name == "lambada" else "validation"
        with open(os.path.join(work, f"onebit_{name}.yaml"), "w") as f:
            f.write(f"include: {os.path.join(tasks_root, yaml)}\n"
                    f"task: onebit_{name}\n"
                    "tag: []\n"
                    "dataset_path: json\n"
                    "dataset_name: null\n"
                    f"dataset_kwargs:\n  data_files:\n    {split}: {os.path.join(rows_dir, name + '.jsonl')}\n"
                    "training_split: null\n"
                    f"validation_split: {'null' if split == 'test' else 'validation'}\n"
                    f"test_split: {'test' if split == 'test' else 'null'}\n")
        names.append(f"onebit_{name}")
    res = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=names, num_fewshot=0,
        batch_size=1, device="cpu", task_manager=TaskManager(include_path=work, include_defaults=False),
        log_samples=True, bootstrap_iters=100)
    report = {}
    for name in TASKS:
        key = f"onebit_{name}"
        samples = sorted(res["samples"][key], key=lambda s: s["doc_id"])
        metrics = {k.split(",")[0]: v for k, v in res["results"][key].items() if "," in k}
        report[name] = {
            "metrics": {k: (v if isinstance(v, (int, float)) else None) for k, v in metrics.items()},
            "loglik": [[float(r[0]) for r in s["resps"] for r in [r[0]]] for s in samples],
            "greedy": [[bool(r[0][1]) for r in s["resps"]] for s in samples],
        }
    with open(out, "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main()
