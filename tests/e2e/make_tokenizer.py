"""Writes a small byte-level BPE tokenizer (tokenizer.json + tokenizer_config.json) into a folder,
with the Python standard library only, for the e2e tests of text data.

    make_tokenizer.py FOLDER

Vocabulary: the 256 byte tokens (GPT-2's byte alphabet), a few merges, then BOS and EOS as
special added tokens; DeepSeek-V3's pre-tokenizer regexes.
"""
import json
import os
import sys


def byte_alphabet():
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return chars


def main():
    folder = sys.argv[1]
    os.makedirs(folder, exist_ok=True)
    alphabet = byte_alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    for pair in ["t h", "h e", "th e", "\u0120 t", "\u0120t he", "i n", "a n", "e r", "o n", "r e", "\u0120 a", "in g"]:
        a, b = pair.split(" ")
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
        merges.append([a, b])
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    added = [{"id": len(vocab) + i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate([bos, eos])]
    splits = [r"\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
              r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""]
    tokenizer = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": []},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers":
                          [{"type": "Split", "pattern": {"Regex": p}, "behavior": "Isolated", "invert": False}
                           for p in splits] +
                          [{"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                            "use_regex": False}]},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False, "bos_token": bos,
                   "eos_token": {"__type": "AddedToken", "content": eos}}, f)


if __name__ == "__main__":
    main()
