"""transformers reference numbers for SmolLM2-135M-Instruct (scripts/fetch-smollm2.sh), used by
tests/models/test_smollm2.cpp.

usage: smollm2_reference.py MODEL_DIR PROMPT_FILE TEXT_FILE SEQ_LEN NEW_TOKENS OUT_JSON
Writes {"prompt_ids", "logits_last" (fp32 logits of the prompt's last 3 positions),
"logits_sum" (sum of all prompt logits), "greedy_ids", "text_ids_head", "text_tokens", "nll"}:
the greedy continuation of the prompt (HF generate, do_sample=False) and the mean NLL of the
text's first SEQ_LEN tokens (tokenizer default special tokens) in one window.
"""
import json
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    model_dir, prompt_file, text_file, seq_len, new_tokens, out = sys.argv[1:7]
    seq_len, new_tokens = int(seq_len), int(new_tokens)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    prompt = open(prompt_file, encoding="utf-8").read()
    text = open(text_file, encoding="utf-8").read()
    ids = tok(prompt).input_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
        gen = model.generate(torch.tensor([ids]), max_new_tokens=new_tokens, do_sample=False,
                             attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=tok.eos_token_id)
        text_ids = tok(text).input_ids[:seq_len]
        lp = torch.log_softmax(model(torch.tensor([text_ids])).logits[0, :-1].float(), -1)
        nll = -lp.gather(1, torch.tensor(text_ids[1:])[:, None]).double().mean().item()
    res = {"prompt_ids": ids, "logits_last": logits[-3:].tolist(), "logits_sum": logits.double().sum().item(),
           "greedy_ids": gen[0, len(ids):].tolist(), "text_ids_head": text_ids[:64], "text_tokens": len(text_ids),
           "nll": nll}
    json.dump(res, open(out, "w"))


if __name__ == "__main__":
    main()
