#!/usr/bin/env python3
"""transformers side of bench-sample: LLM-QAT self-sampling with transformers.generate.

usage: self_sample.py MODEL_DIR THREADS PLAN_JSON
PLAN_JSON: {"max_length": L, "eos": id or -1, "batches": [{"first": [ids...], "greedy": g}, ...]}
Each batch starts from its first tokens, takes `greedy` tokens greedily, then samples from the
full softmax (temperature 1, no top-k, no top-p) up to L tokens or EOS, as onebit does.
Prints one JSON line: seconds, samples, tokens (EOS not counted, as onebit stores them).
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, LogitsProcessor, LogitsProcessorList


class GreedyPrefix(LogitsProcessor):
    """The first `greedy` generated tokens are the argmax (sampling from a one-token support)."""

    def __init__(self, prompt_len, greedy):
        self.prompt_len, self.greedy = prompt_len, greedy

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_len >= self.greedy:
            return scores
        keep = scores.argmax(-1, keepdim=True)
        return torch.full_like(scores, -float("inf")).scatter(1, keep, scores.gather(1, keep))


def main(model_dir, threads, plan_path):
    torch.set_num_threads(threads)
    with open(plan_path) as f:
        plan = json.load(f)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    L, eos = plan["max_length"], plan["eos"]
    eos_kw = dict(eos_token_id=eos, pad_token_id=eos) if eos >= 0 else dict(eos_token_id=None, pad_token_id=0)
    torch.manual_seed(0)

    def run(batch, new_tokens=L - 1):
        prompt = torch.tensor(batch["first"]).unsqueeze(1)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=1.0,
                             top_k=0, top_p=1.0, max_new_tokens=new_tokens, min_new_tokens=0,
                             logits_processor=LogitsProcessorList([GreedyPrefix(1, batch["greedy"])]), **eos_kw)
        tokens = 0
        for row in out.tolist():
            n = len(row)
            if eos >= 0 and eos in row[1:]:
                n = row[1:].index(eos) + 1
            tokens += n
        return tokens

    with torch.inference_mode():
        run(plan["batches"][0], 4)  # warm-up
        t0 = time.perf_counter()
        tokens = sum(run(b) for b in plan["batches"])
        seconds = time.perf_counter() - t0
    samples = sum(len(b["first"]) for b in plan["batches"])
    print(json.dumps({"seconds": seconds, "samples": samples, "tokens": tokens}))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), a[2])
