#!/usr/bin/env python3
"""transformers side of bench-model: times forward and greedy generate of a saved model.

usage: bench_transformers.py MODEL_DIR THREADS BATCH SEQ NEW_TOKENS REPEATS
Prints one JSON line: forward_tok_s, generate_tok_s, gen_tokens (first row, for agreement).
"""
import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM


def main(model_dir, threads, batch, seq, new_tokens, repeats):
    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq), generator=gen)
    with torch.inference_mode():
        model(ids)  # warm-up
        t0 = time.perf_counter()
        for _ in range(repeats):
            model(ids)
        fwd = batch * seq * repeats / (time.perf_counter() - t0)
        prompt = ids[:, :8]
        kw = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, eos_token_id=None,
                  pad_token_id=0, attention_mask=torch.ones_like(prompt))
        model.generate(prompt, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        t0 = time.perf_counter()
        out = model.generate(prompt, **kw)
        gen_s = batch * new_tokens / (time.perf_counter() - t0)
    print(json.dumps({"forward_tok_s": fwd, "generate_tok_s": gen_s, "gen_tokens": out[0, 8:].tolist()}))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), int(a[5]))
