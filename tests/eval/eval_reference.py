"""Independent transformers implementation of the onebit-eval protocols (docs/evaluation.md),
used by tests/eval/test_eval_reference.cpp.

usage: eval_reference.py MODEL_DIR TEXT_FILE SEQ_LEN WINDOWS C4_SEED OUT_JSON TASK_FILE... --limit N
Prints nothing; writes {"ppl": {protocol: {...}}, "tasks": {file: {...}}} to OUT_JSON.
"""
import json
import math
import random
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def paragraphs(text):
    docs, cur = [], []
    for line in text.split("\n"):
        if line.endswith("\r"):
            line = line[:-1]
        if line.strip(" \t\r\n\v\f") == "":
            if cur:
                docs.append("\n".join(cur))
            cur = []
        else:
            cur.append(line)
    if cur:
        docs.append("\n".join(cur))
    return docs


def main():
    args = sys.argv[1:]
    limit = int(args[args.index("--limit") + 1])
    args = args[: args.index("--limit")]
    model_dir, text_file, L, W, seed, out = args[0], args[1], int(args[2]), int(args[3]), int(args[4]), args[5]
    task_files = args[6:]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    enc = lambda s: tok(s).input_ids  # add_special_tokens=True: BOS as the tokenizer adds it

    @torch.no_grad()
    def nll_of(windows):
        nll = 0.0
        for w in windows:
            ids = torch.tensor([w])
            lp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
            nll -= lp.gather(1, ids[0, 1:, None]).double().sum().item()
        return {"windows": len(windows), "mean_nll": nll / (len(windows) * (L - 1))}

    text = open(text_file, encoding="utf-8").read()
    docs = paragraphs(text)
    res = {"ppl": {}, "tasks": {}}
    stream = enc(text)  # wikitext on a plain file: the whole file is one document
    res["ppl"]["wikitext"] = nll_of([stream[i * L:(i + 1) * L] for i in range(min(len(stream) // L, W))])
    stream = [t for d in docs for t in enc(d)]
    res["ppl"]["docs"] = nll_of([stream[i * L:(i + 1) * L] for i in range(min(len(stream) // L, W))])
    random.seed(seed)  # GPTQ get_c4 draw loop
    wins = []
    for _ in range(W):
        while True:
            ids = enc(docs[random.randint(0, len(docs) - 1)])
            if len(ids) > L:
                break
        s = random.randint(0, len(ids) - L - 1)
        wins.append(ids[s:s + L])
    res["ppl"]["c4"] = nll_of(wins)

    for f in task_files:
        lls_all, hits, hits_norm = [], 0, 0
        for line in open(f, encoding="utf-8").read().splitlines()[:limit]:
            d = json.loads(line)
            delim = lambda c: c if c[:1].isspace() else " " + c
            if "query" in d:
                pairs = [(d["query"], delim(c)) for c in d["choices"]]
            else:
                pairs = [(c, delim(d["continuation"])) for c in d["context_options"]]
            lls = []
            for ctx, cont in pairs:
                n = len(ctx) - len(ctx.rstrip())  # lm-eval _encode_pair
                c2, k2 = (ctx[:-n], ctx[-n:] + cont) if n else (ctx, cont)
                c_enc = enc(c2)
                k_enc = enc(c2 + k2)[len(c_enc):]
                full = c_enc + k_enc
                with torch.no_grad():
                    lp = torch.log_softmax(model(torch.tensor([full[:-1]])).logits[0].float(), -1)
                lls.append(sum(lp[j, full[j + 1]].item() for j in range(len(full) - 1 - len(k_enc), len(full) - 1)))
            norm = [ll / len(cont.encode("utf-8")) for ll, (_, cont) in zip(lls, pairs)]
            hits += max(range(len(lls)), key=lambda i: (lls[i], -i)) == d["gold"]
            hits_norm += max(range(len(norm)), key=lambda i: (norm[i], -i)) == d["gold"]
            lls_all.append(lls)
        res["tasks"][f] = {"n": len(lls_all), "acc": hits / len(lls_all), "acc_norm": hits_norm / len(lls_all),
                           "loglik": lls_all}
    json.dump(res, open(out, "w"))


if __name__ == "__main__":
    main()
