"""Converts a GGUF checkpoint to a Hugging Face model folder (fp32 safetensors + tokenizer),
with transformers' GGUF loader (needs the `gguf` package). Used by scripts/fetch-smollm2.sh.

usage: gguf_to_hf.py FILE.gguf OUT_DIR

transformers dequantizes the GGUF tensors on load but refuses save_pretrained on a model
loaded from a quantized GGUF, so the dequantized weights are copied into a fresh model built
from the same config and that one is saved.
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    gguf, out = sys.argv[1], sys.argv[2]
    folder, name = os.path.split(os.path.abspath(gguf))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the saved weights are plain fp32
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # A tied lm_head is absent from the state dict; anything else missing is an error.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        sys.exit(f"gguf_to_hf: weights do not match the config: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    fresh.save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
