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
