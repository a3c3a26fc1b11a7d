"""Builds small tokenizer.json files with the Hugging Face `tokenizers` library and records
its ids and decodes for the C++ tests (tests/tokenizer/test_tokenizer.cpp).

    python make_tokenizers.py KIND OUT_DIR STRINGS_JSON

KIND: gpt2 (ByteLevel BPE, GPT-2 regex, merges saved as "a b" strings), llama3 (Split regex +
ByteLevel(use_regex=False), ignore_merges, special tokens, BOS template), qwen2 (NFC, Qwen2's
Split regex, ChatML special tokens), wordlevel
(WhitespaceSplit), wordlevel_ws (Whitespace), gpt2_files (the gpt2 tokenizer as vocab.json +
merges.txt, no tokenizer.json), gpt2_prefix (gpt2 with add_prefix_space=True, as RoBERTa). Writes OUT_DIR/tokenizer.json,
OUT_DIR/tokenizer_config.json and OUT_DIR/expected.json = {"ids": [...], "decoded": [...]}.
"""
import json
import sys

from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                        processors, trainers)

CORPUS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside.",
    "The quick brown fox jumps over the lazy dog 1234567890 times!",
    "Don't stop; we'll see what they've done. I'm sure it's fine, you'd agree.",
    "Ünïcödé tëxt: café, naïve, Straße, 東京, Привет мир, 😀 🚀 emoji.",
    "    indented code:\n\tfor i in range(10):\n\t\tprint(i)  # comment\n\n",
    "Numbers 3.14159 and 2,718 and 1e-9; dates 2024-05-01.",
] * 20

QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def bpe(kind):
    if kind in ("gpt2", "gpt2_files", "gpt2_prefix"):
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=kind == "gpt2_prefix")
        specials = ["<|endoftext|>"]
        config = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
                  "add_bos_token": False}
    elif kind == "qwen2":
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.NFC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        config = {"bos_token": None, "eos_token": "<|im_end|>", "add_bos_token": False}
    else:
        tok = Tokenizer(models.BPE(ignore_merges=True))
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        specials = ["<|begin_of_text|>", "<|end_of_text|>"]
        config = {"bos_token": {"content": "<|begin_of_text|>", "special": True},
                  "eos_token": "<|end_of_text|>"}
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          special_tokens=[("<|begin_of_text|>", bos)])])
        tok.add_tokens(["<custom>"])  # a non-special added token: kept by decode
    return tok, config


def wordlevel(kind):
    words = sorted(set(" ".join(CORPUS[:6]).replace(",", " , ").replace(".", " . ").split()))
    vocab = {"[UNK]": 0, "<bos>": 1, "<eos>": 2}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = (pre_tokenizers.WhitespaceSplit() if kind == "wordlevel"
                         else pre_tokenizers.Whitespace())
    tok.add_special_tokens(["<bos>", "<eos>"])
    return tok, {"bos_token": "<bos>", "eos_token": "<eos>", "add_bos_token": True}


def main():
    kind, out_dir, strings_path = sys.argv[1:4]
    tok, config = wordlevel(kind) if kind.startswith("wordlevel") else bpe(kind)
    tok.save(f"{out_dir}/tokenizer.json")
    if kind == "gpt2_files":
        import os
        tok.model.save(out_dir)
        os.remove(f"{out_dir}/tokenizer.json")
    if kind == "gpt2":  # the older merges layout, "a b" strings, as GPT-2/OPT files have
        j = json.load(open(f"{out_dir}/tokenizer.json", encoding="utf-8"))
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m
                                for m in j["model"]["merges"]]
        json.dump(j, open(f"{out_dir}/tokenizer.json", "w", encoding="utf-8"), ensure_ascii=False)
        tok = Tokenizer.from_file(f"{out_dir}/tokenizer.json")
    json.dump(config, open(f"{out_dir}/tokenizer_config.json", "w"))
    strings = json.load(open(strings_path, encoding="utf-8"))
    ids = [tok.encode(s, add_special_tokens=False).ids for s in strings]
    decoded = [tok.decode(i, skip_special_tokens=True) for i in ids]
    with_special = [tok.encode(s).ids for s in strings]
    json.dump({"ids": ids, "decoded": decoded, "with_special": with_special},
              open(f"{out_dir}/expected.json", "w", encoding="utf-8"))


if __name__ == "__main__":
    main()
