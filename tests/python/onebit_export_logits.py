"""Logits of an onebit export through transformers (trust_remote_code: modeling_onebit.py).

usage: onebit_export_logits.py EXPORT_DIR IDS_SAFETENSORS OUT_SAFETENSORS
Reads int64 "ids" [B, T], writes fp32 "logits" [B, T, V] and the greedy continuation
"greedy" [1, T0 + 8] of the first row's first 4 tokens, all in fp32 on CPU.
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

folder, ids_path, out_path = sys.argv[1:4]
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32)
ids = load_file(ids_path)["ids"]
with torch.no_grad():
    logits = model(input_ids=ids).logits.float()
    model.generation_config.eos_token_id = None
    greedy = model.generate(ids[:1, :4], max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=0)
save_file({"logits": logits.contiguous(), "greedy": greedy.contiguous()}, out_path)
