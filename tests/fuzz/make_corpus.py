"""Writes the fuzz seed corpora in tests/fuzz/corpus/ (run once; the files are in git).

    python tests/fuzz/make_corpus.py

Each seed is a small valid input in the target's input layout (see tests/fuzz/fuzz_*.cpp), made
with the reference libraries (safetensors, tokenizers) where one exists.
"""
import json
import os
import struct
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import save

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")


def put(target, name, data):
    os.makedirs(os.path.join(OUT, target), exist_ok=True)
    with open(os.path.join(OUT, target, name), "wb") as f:
        f.write(data)


# safetensors: files written by the reference library.
g = torch.Generator().manual_seed(0)
put("safetensors", "f32_bf16_i64", save({"w": torch.randn(2, 3, generator=g),
                                          "b": torch.randn(4, generator=g).bfloat16(),
                                          "ids": torch.arange(5)}, metadata={"format": "pt"}))
put("safetensors", "empty_and_scalar", save({"e": torch.zeros(0, 4, dtype=torch.float16),
                                              "s": torch.tensor(1.5)}))
put("safetensors", "u8_bool", save({"m": torch.tensor([True, False]), "p": torch.arange(8, dtype=torch.uint8)}))
# A libFuzzer finding kept as a seed: an empty F64 tensor at a misaligned offset (the reader's
# aligned copy passed a null data pointer to memcpy for its zero bytes; UBSan nonnull-arg).
put("safetensors", "regression_empty_misaligned",
    b"p" + bytes(7) + b'{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F64","shape":[0,4],'
    b'"data_offsets":[4,4]}}    ' + struct.pack("<f", 1.5))

# config: the shipped recipes, one with overrides after NUL bytes.
for name in ("quickstart", "stories260k", "llama7b", "opt-1.3b"):
    path = os.path.join(ROOT, "configs", name + ".yaml")
    if os.path.exists(path):
        put("config", name, open(path, "rb").read())
put("config", "overrides", open(os.path.join(ROOT, "configs", "quickstart.yaml"), "rb").read() +
    b"\0kd.alpha=0\0optim.lr=1e-3\0train.resume=never")

# tokenizer: tokenizer.json files from the reference library, NUL, text to encode.
TEXT = "Once upon a time, caf\u00e9 \u6771\u4eac 123 don't \U0001F600\n\t x".encode() + b"\xff\xfe bad utf8"
with tempfile.TemporaryDirectory() as d:
    for kind in ("gpt2", "llama3", "qwen2", "wordlevel"):
        out = os.path.join(d, kind)
        os.makedirs(out)
        strings = os.path.join(d, "strings.json")
        with open(strings, "w") as f:
            json.dump(["hello world"], f)
        subprocess.run([sys.executable, os.path.join(ROOT, "tests", "python", "make_tokenizers.py"), kind, out,
                        strings], check=True, stdout=subprocess.DEVNULL)
        put("tokenizer", kind, open(os.path.join(out, "tokenizer.json"), "rb").read() + b"\0" + TEXT)

# token_dataset: two uint16 sizes, then index.json, tokens.bin, offsets.bin (split_sized).
samples = [[5, 6, 7], [1], [9, 9, 2, 3]]
tokens = b"".join(struct.pack("<H", t) for s in samples for t in s)
ends, n = [], 0
for s in samples:
    n += len(s)
    ends.append(n)
offsets = b"".join(struct.pack("<Q", e) for e in ends)
index = json.dumps({"format": "onebit-token-dataset", "version": 1, "vocab_size": 16, "dtype": "uint16",
                    "num_samples": len(samples), "num_tokens": n, "tokens_file": "tokens.bin",
                    "offsets_file": "offsets.bin", "generator": {"program": "seed"}}).encode()
put("token_dataset", "three_samples", struct.pack("<HH", len(index), len(tokens)) + index + tokens + offsets)

# eval_tasks: a task name, NUL, the task file. The HF rows of each paper task (the test data),
# and MosaicML multiple_choice / schema files under a name that is not a paper task.
ROWS = os.path.join(ROOT, "tests", "eval", "data", "hf_rows")
for f in sorted(os.listdir(ROWS)):
    put("eval_tasks", f[: -len(".jsonl")], f[: -len(".jsonl")].encode() + b"\0" + open(os.path.join(ROWS, f), "rb").read())
mc = [{"query": "Question: Which is hot?\nAnswer:", "choices": ["fire", "ice", "snow"], "gold": 0},
      {"query": "2 + 2 =", "choices": ["4", "5"], "gold": 0}]
put("eval_tasks", "mosaic_multiple_choice", b"mosaic\0" + "\n".join(json.dumps(r) for r in mc).encode() + b"\n")
schema = [{"context_options": ["The cat sat on the mat because it", "The cat sat on the mat because the mat"],
           "continuation": "was tired.", "gold": 0}]
put("eval_tasks", "mosaic_schema", b"mosaic\0" + "\n".join(json.dumps(r) for r in schema).encode() + b"\n")

# packed_model: a uint16 size, config.json, model.safetensors. A real onebit-export of a tiny
# student (1 LLaMA layer x 16, vocab 370), made with the built programs, and the same with
# post_layernorm off.
BUILD = os.environ.get("ONEBIT_BUILD_DIR", os.path.join(ROOT, "build"))
TINY = """output_dir: {out}/run
model: {{teacher: embedded, dtype: fp32, device: cpu}}
embedded: {{hidden_size: 16, intermediate_size: 24, num_layers: 1, num_heads: 2, num_kv_heads: 1,
           train_tokens: 2048, batch_size: 4, seq_len: 16, lr: 3.0e-3, seed: 7}}
data: {{source: sample, num_samples: 8, sample_length: 16, sample_batch: 8, seq_len: 16, batch_size: 4}}
train: {{max_steps: 1, precision: fp32, log_every: 1, save_every: 0, eval_every: 0}}
"""
with tempfile.TemporaryDirectory() as d:
    with open(os.path.join(d, "tiny.yaml"), "w") as f:
        f.write(TINY.format(out=d))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([os.path.join(BUILD, "onebit-train"), "--config", os.path.join(d, "tiny.yaml")], check=True,
                   stdout=subprocess.DEVNULL, env=env)
    subprocess.run([os.path.join(BUILD, "onebit-export"), "--model", os.path.join(d, "run", "student"), "--out",
                    os.path.join(d, "export")], check=True, stdout=subprocess.DEVNULL, env=env)
    config = json.load(open(os.path.join(d, "export", "config.json")))
    weights = open(os.path.join(d, "export", "model.safetensors"), "rb").read()
    for name, post_ln in (("llama_export", True), ("llama_export_no_post_ln", False)):
        config["quantization_config"]["post_layernorm"] = post_ln
        text = json.dumps(config, indent=1).encode()
        put("packed_model", name, struct.pack("<H", len(text)) + text + weights)
