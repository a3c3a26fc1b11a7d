"""Baseline of bench-eval: lm-evaluation-harness's HF backend (lm_eval.models.huggingface.HFLM)
scoring the same (context, continuation) requests.

usage: lm_eval_loglik.py MODEL_DIR REQUESTS_JSON BATCH_SIZE THREADS
REQUESTS_JSON: [[context, continuation], ...]. Prints one JSON line:
{"seconds": wall time of HFLM.loglikelihood, "loglik": [...]} (model load not timed).
"""
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.models.huggingface import HFLM  # noqa: E402


def main():
    model_dir, req_file, batch, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    pairs = json.load(open(req_file, encoding="utf-8"))
    lm = HFLM(pretrained=model_dir, dtype="float32", batch_size=batch, device="cpu")
    reqs = [Instance(request_type="loglikelihood", doc={}, arguments=(c, k), idx=i) for i, (c, k) in enumerate(pairs)]
    t0 = time.perf_counter()
    out = lm.loglikelihood(reqs, disable_tqdm=True)
    seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "loglik": [float(ll) for ll, _ in out]}))


if __name__ == "__main__":
    main()
