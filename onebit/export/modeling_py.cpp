#include "onebit/export/modeling_py.h"

namespace onebit::packed {

// Kept in step with onebit/export/format.h and PackedOneBitLinear's math (tested in
// tests/export/test_modeling_py.cpp against onebit's logits).
const std::string& modeling_onebit_py() {
  static const std::string text = R"PY(# modeling_onebit.py: written by onebit-export. Loads this folder with transformers:
#   AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
# The model is the config's own transformers architecture (LLaMA, Mistral, Qwen2, OPT) with the
# layers listed in quantization_config["modules"] replaced by PackedOneBitLinear:
#   y = LayerNorm_noaffine(((x * g) @ sign(W).T) * h + bias)  (norm when post_layernorm)
# sign(W) comes from weight_packed, uint8 [out, ceil(in/8)]: bit (i % 8) of byte i // 8 is 1
# where W[o, i] = -1 (least significant bit first, padding bits 0). This reference unpacks
# the signs on every call; onebit's own kernels never do.
import json
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

FORMAT_VERSION = 1


class PackedOneBitLinear(nn.Module):
    def __init__(self, in_features, out_features, bias, post_layernorm, ln_eps):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.post_layernorm, self.ln_eps = post_layernorm, ln_eps
        self.register_buffer("weight_packed", torch.zeros(out_features, (in_features + 7) // 8, dtype=torch.uint8))
        self.register_buffer("g", torch.ones(in_features))
        self.register_buffer("h", torch.ones(out_features))
        if bias:
            self.register_buffer("bias", torch.zeros(out_features))
        else:
            self.bias = None

    def signs(self, dtype):
        shifts = torch.arange(8, device=self.weight_packed.device, dtype=torch.uint8)
        bits = (self.weight_packed.unsqueeze(-1) >> shifts) & 1
        bits = bits.reshape(self.out_features, -1)[:, : self.in_features]
        return (1 - 2 * bits.to(torch.int8)).to(dtype)

    def forward(self, x):
        low = x.dtype in (torch.float16, torch.bfloat16)
        ct = torch.float32 if low else x.dtype
        y = F.linear(x * self.g.to(x.dtype), self.signs(x.dtype)).to(ct) * self.h.to(ct)
        if self.bias is not None:
            y = y + self.bias.to(ct)
        if self.post_layernorm:
            y = F.layer_norm(y, (self.out_features,), eps=self.ln_eps)
        return y.to(x.dtype)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _quant_config(config):
    q = getattr(config, "quantization_config", None)
    if q is not None and not isinstance(q, dict):
        q = q.to_dict()
    if not q or q.get("quant_method") != "onebit":
        raise ValueError("config.json has no onebit quantization_config")
    if q.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"onebit format_version {q.get('format_version')} is not supported (reads {FORMAT_VERSION})")
    if q.get("bit_order") != "lsb_first" or q.get("sign_bit") != "one_is_negative":
        raise ValueError("unsupported onebit bit_order/sign_bit")
    return q


def _state_dict(folder):
    from safetensors.torch import load_file

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    sd = {}
    for name in files:
        sd.update(load_file(os.path.join(folder, name)))
    return sd


class OneBitForCausalLM:
    """Builds the config's transformers CausalLM with packed 1-bit layers (see the top of this file)."""

    @classmethod
    def register_for_auto_class(cls, auto_class="AutoModelForCausalLM"):
        pass

    @classmethod
    def from_pretrained(cls, folder, *args, config=None, dtype=None, torch_dtype=None, device_map=None, **kwargs):
        if config is None:
            config = AutoConfig.from_pretrained(folder)
        q = _quant_config(config)
        model = MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)
        biased = set(q.get("biased", []))
        for name in q["modules"]:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name)
            lin = getattr(parent, child)
            setattr(parent, child, PackedOneBitLinear(lin.in_features, lin.out_features, name in biased,
                                                      q["post_layernorm"], q["ln_eps"]))
        missing, unexpected = model.load_state_dict(_state_dict(folder), strict=False)
        tied = getattr(config, "tie_word_embeddings", False)
        missing = [m for m in missing if not (tied and m == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"{folder}: missing tensors {missing}, unexpected tensors {unexpected}")
        if tied:
            model.tie_weights()
        target = dtype if dtype is not None else torch_dtype
        if target is None or target == "auto":
            target = getattr(config, "torch_dtype", None) or "float32"
        if isinstance(target, str):
            target = getattr(torch, target)
        model.to(target)
        if device_map is not None:
            if not isinstance(device_map, (str, torch.device)):
                raise ValueError("modeling_onebit: device_map must be one device (e.g. 'cpu', 'cuda:0')")
            model.to(device_map)
        model.eval()
        return model
)PY";
  return text;
}

}  // namespace onebit::packed
