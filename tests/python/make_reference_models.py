#!/usr/bin/env python3
"""Tiny random-weight Hugging Face models + reference outputs for onebit's conformance tests.

usage: make_reference_models.py OUT_DIR
Writes OUT_DIR/<name>/{config.json, model.safetensors, reference.safetensors} for each family
and OUT_DIR/done last. reference.safetensors holds input_ids, attention_mask (left padding in
row 1), logits, hidden_<i>, logits_padded, gen_prompt and gen_out (greedy, 32 new tokens).
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, OPTConfig,
                          OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM)

VOCAB = 128


def models():
    yield "llama_gqa", LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        rope_theta=10000.0))
    yield "qwen2_bias", Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=False, rope_theta=1000.0,
        rope_scaling={"rope_type": "linear", "factor": 2.0}))
    yield "mistral_window", MistralForCausalLM(MistralConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, max_position_embeddings=256,
        sliding_window=5, tie_word_embeddings=False))
    yield "opt_pre", OPTForCausalLM(OPTConfig(
        vocab_size=VOCAB, hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=128, do_layer_norm_before=True, word_embed_proj_dim=64,
        pad_token_id=1, bos_token_id=2, eos_token_id=2))
    yield "opt_post_proj", OPTForCausalLM(OPTConfig(
        vocab_size=VOCAB, hidden_size=64, ffn_dim=96, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=128, do_layer_norm_before=False, word_embed_proj_dim=32,
        pad_token_id=1, bos_token_id=2, eos_token_id=2))


def randomize(model, gen):
    # Larger than HF's init so logits are far from uniform and greedy choices are unambiguous.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.15)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
            else:  # norm weights
                p.copy_(1.0 + torch.randn(p.shape, generator=gen) * 0.1)


def main(out):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    for name, model in models():
        randomize(model, gen)
        model.eval()
        folder = os.path.join(out, name)
        model.save_pretrained(folder, safe_serialization=True)
        ids = torch.randint(3, VOCAB, (2, 12), generator=gen)
        mask = torch.ones_like(ids)
        mask[1, :3] = 0
        ref = {"input_ids": ids, "attention_mask": mask}
        with torch.no_grad():
            o = model(ids, output_hidden_states=True)
            ref["logits"] = o.logits
            for i, h in enumerate(o.hidden_states):
                ref[f"hidden_{i}"] = h
            ref["logits_padded"] = model(ids, attention_mask=mask).logits
            prompt = ids[:, :5]
            ref["gen_prompt"] = prompt
            ref["gen_out"] = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                            max_new_tokens=32, min_new_tokens=32, eos_token_id=None,
                                            pad_token_id=0)
        save_file({k: v.contiguous() for k, v in ref.items()}, os.path.join(folder, "reference.safetensors"))
    with open(os.path.join(out, "done"), "w") as f:
        f.write("ok\n")


if __name__ == "__main__":
    main(sys.argv[1])
