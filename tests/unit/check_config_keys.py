#!/usr/bin/env python3
"""No silent config keys: every key the schema marks supported must be read by some code.

    check_config_keys.py PRINT_CONFIG_KEYS SOURCE_ROOT

PRINT_CONFIG_KEYS (tests/unit/print_config_keys.c) lists the schema of common/core/config.h.
For every key marked supported (or filled from the model flavor), this script looks through
the C and CUDA sources of common/, roles/ and kernels/ -- not common/core/config.[ch], which
handle every key generically, and not tests/ -- for a read of the field as a C field access,
`.section.key` or `->section.key`, that is not the left side of a plain assignment. Comments
and string literals do not count. A key that run/ scripts read through --print-launch counts
because the C code that prints it reads the field.

A supported key that no code reads is a lie to the user: it is accepted and silently ignored.
Every such key is printed with a hint and the script exits 1. Keys whose schema admits only
their default are exempt: there is nothing to ignore.
"""

import os
import re
import subprocess
import sys

SOURCE_DIRS = ("common", "roles", "kernels")
SOURCE_SUFFIXES = (".c", ".h", ".cu", ".cuh")
# The schema itself: it reads and writes every key through the generated table.
SCHEMA_FILES = (os.path.join("common", "core", "config.c"), os.path.join("common", "core", "config.h"))


def strip_comments_and_strings(text):
    """The C text with comments and string/character literals blanked (newlines kept)."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:end]))
            i = end
        elif c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            if j < n and text[j] == c:
                j += 1
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def read_pattern(section, key):
    """`.section.key` or `->section.key`, not followed by a plain `=` (a write)."""
    return re.compile(
        r"(?:\.|->)\s*" + re.escape(section) + r"\s*\.\s*" + re.escape(key) + r"\b(?!\s*=(?!=))"
    )


def self_test():
    """The scanner tells reads from writes, comments, strings and longer names."""
    cases = {
        "x = cfg->training.steps;": True,
        "f(c.training.steps + 1);": True,
        "if (cfg->training.steps == 3) {}": True,
        "cfg->training.steps += 1;": True,
        "cfg->training . steps": True,
        "cfg->training.steps = 3;": False,
        "// cfg->training.steps\n": False,
        "/* cfg->training.steps\n */": False,
        'puts("cfg->training.steps");': False,
        "x = cfg->training.steps_total;": False,
        "x = cfg->other_training.steps;": False,
    }
    pattern = read_pattern("training", "steps")
    for text, expected in cases.items():
        found = bool(pattern.search(strip_comments_and_strings(text)))
        if found != expected:
            sys.exit(f"check_config_keys.py: scanner self-test failed on {text!r}: "
                     f"read {found}, expected {expected}")


def schema(printer):
    """[(dotted key, status, values)] from the key printer."""
    lines = subprocess.run([printer], check=True, capture_output=True, text=True).stdout
    keys = [tuple(line.split("\t")) for line in lines.splitlines() if line]
    if not keys or any(len(k) != 3 for k in keys):
        sys.exit(f"check_config_keys.py: unexpected output of {printer}:\n{lines}")
    return keys


def sources(root):
    """{relative path: text without comments and strings} of the code that may read keys."""
    found = {}
    for top in SOURCE_DIRS:
        for folder, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, root)
                if not name.endswith(SOURCE_SUFFIXES) or relative in SCHEMA_FILES:
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    found[relative] = strip_comments_and_strings(f.read())
    return found


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    printer, root = sys.argv[1], sys.argv[2]
    self_test()
    keys = schema(printer)
    code = sources(root)
    if not any(path.startswith("common" + os.sep) for path in code):
        sys.exit(f"check_config_keys.py: no C sources under {root}/common")

    silent, checked = [], 0
    for dotted, status, values in keys:
        section, key = dotted.split(".", 1)
        readers = [p for p, text in sorted(code.items()) if read_pattern(section, key).search(text)]
        if status == "not_yet":
            if readers:
                print(f"note: {dotted} is marked not supported yet but {readers[0]} reads it; "
                      f"if its feature works now, mark it supported")
            continue
        checked += 1
        if readers:
            continue
        if values == "only_default":
            print(f"exempt: {dotted} is read by no code, but its schema admits only its default")
            continue
        silent.append(dotted)

    for dotted in silent:
        section, key = dotted.split(".", 1)
        print(f"error: {dotted} is marked supported, but no code in common/, roles/ or kernels/ "
              f"reads cfg->{section}.{key}: a user who sets it is silently ignored. Make the code "
              f"use it, or mark it DSV3_NOT_YET(\"the capability it waits for\") in "
              f"common/core/config.h.")
    print(f"{checked} supported keys checked, {len(silent)} read by no code")
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
