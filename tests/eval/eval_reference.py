"""Independent transformers implementation of the onebit-eval protocols (docs/evaluation.md),
used by tests/eval/test_eval_reference.cpp. Perplexity follows the GPTQ scripts' protocols;
the zero-shot scoring follows lm-evaluation-harness 0.4's source (HFLM), not onebit's code.

usage: eval_reference.py MODEL_DIR TEXT_FILE SEQ_LEN WINDOWS C4_SEED OUT_JSON TASK_FILE... --limit N
Prints nothing; writes {"ppl": {protocol: {...}}, "tasks": {file: {...}}} to OUT_JSON.
"""
import json
import math
import random
import sys

import numpy as np
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

    # Zero-shot: MosaicML records -> (context, continuation) requests and doc_to_choice
    # strings (docs/evaluation.md), then scored as lm-evaluation-harness 0.4's HFLM does:
    # TemplateLM.loglikelihood / _encode_pair, _loglikelihood_tokens' left truncation, and
    # ConfigurableTask.process_results' argmax metrics.
    max_length = model.config.max_position_embeddings
    prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def encode_pair(context, continuation):
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole_enc = tok.encode(context + continuation)
        context_enc = tok.encode(context)
        return context_enc, whole_enc[len(context_enc):]

    @torch.no_grad()
    def loglikelihood(context, continuation):
        if context == "":
            cont = tok.encode(continuation, add_special_tokens=False)
            ctx, cont = ([prefix_token_id], cont) if prefix_token_id != cont[0] else (cont[:1], cont[1:])
        else:
            ctx, cont = encode_pair(context, continuation)
        inp = (ctx + cont)[-(max_length + 1):][:-1]
        logits = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)
        logits = logits[len(inp) - len(cont):]
        return logits.gather(1, torch.tensor(cont)[:, None]).double().sum().item()

    for f in task_files:
        lls_all, hits, hits_norm, hits_bytes = [], 0, 0, 0
        for line in open(f, encoding="utf-8").read().splitlines()[:limit]:
            d = json.loads(line)
            delim = lambda c: c if c[:1].isspace() else " " + c
            if "query" in d:
                choices = d["choices"]
                reqs = [(d["query"], delim(c)) for c in choices]
            else:
                choices = d["context_options"]
                reqs = [(c, delim(d["continuation"])) for c in choices]
            lls = np.array([loglikelihood(c, k) for c, k in reqs])
            completion_len = np.array([float(len(i)) for i in choices])
            byte_length = np.array([float(len(i.encode("utf-8"))) for i in choices])
            hits += int(np.argmax(lls)) == d["gold"]
            hits_norm += int(np.argmax(lls / completion_len)) == d["gold"]
            hits_bytes += int(np.argmax(lls / byte_length)) == d["gold"]
            lls_all.append(lls.tolist())
        n = len(lls_all)
        res["tasks"][f] = {"n": n, "acc": hits / n, "acc_norm": hits_norm / n, "acc_bytes": hits_bytes / n,
                           "loglik": lls_all}
    json.dump(res, open(out, "w"))


if __name__ == "__main__":
    main()
