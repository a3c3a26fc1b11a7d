"""Rows in the published formats of HellaSwag, BoolQ and ARC, made from any English text, for
throughput benchmarks only (bench-eval): the words are the text's, the answers meaningless, and
the lengths near the datasets' means (HellaSwag: context about 30 words, four endings of about 17;
BoolQ: passage about 108 words, question about 9, answers yes/no; ARC: question about 22 words,
four choices of about 4). No accuracy measured on these rows means anything.

usage: synthetic_tasks.py TEXT OUT_DIR [--n 64] [--seed 0]
writes OUT_DIR/hellaswag.jsonl, boolq.jsonl, arc_easy.jsonl (the rows of onebit-eval --tasks NAME=FILE).
"""
import argparse
import json
import os
import random


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("text")
    ap.add_argument("out")
    ap.add_argument("--n", type=int, default=64, help="rows per task")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    words = open(a.text, encoding="utf-8", errors="replace").read().split()
    if len(words) < 1000:
        raise SystemExit(f"synthetic_tasks.py: {a.text} has {len(words)} words; need at least 1000")
    rng = random.Random(a.seed)

    def span(mean):  # a run of about `mean` words (±30%) from a random place in the text
        n = max(1, round(mean * rng.uniform(0.7, 1.3)))
        i = rng.randrange(0, len(words) - n)
        return " ".join(words[i:i + n])

    rows = {
        "hellaswag": lambda: {"activity_label": span(2), "ctx_a": span(22), "ctx_b": span(8),
                              "endings": [span(17) for _ in range(4)], "label": rng.randrange(4)},
        "boolq": lambda: {"passage": span(108), "question": span(9), "answer": rng.random() < 0.5},
        "arc_easy": lambda: {"question": span(22),
                             "choices": {"text": [span(4) for _ in range(4)], "label": ["A", "B", "C", "D"]},
                             "answerKey": rng.choice("ABCD")},
    }
    os.makedirs(a.out, exist_ok=True)
    for name, make in rows.items():
        path = os.path.join(a.out, name + ".jsonl")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            for _ in range(a.n):
                f.write(json.dumps(make()) + "\n")
        os.replace(path + ".tmp", path)
        print(path)


if __name__ == "__main__":
    main()
