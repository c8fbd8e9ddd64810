#!/usr/bin/env python3
"""The layering check (DESIGN.md): a module of src/ may use only the modules below it.

The order, lowest first (modules on one level may not use each other either):

    sys (the ringstage-sys crate)
    queue, metrics
    control
    buf
    reactor
    stage
    net, fs
    runtime

Every `crate::<module>` path in code (not comments, doc text or strings) is checked. Exits
non-zero, naming each back-import, if any.

    ci/layers.py [SRC_DIR]
"""
import os
import re
import sys

LAYERS = [["queue", "metrics"], ["control"], ["buf"], ["reactor"], ["stage"], ["net", "fs"], ["runtime"]]
LEVEL = {m: i for i, group in enumerate(LAYERS) for m in group}
# Top-level files that are not layers: the crate root (re-exports) and the error type, which
# every layer may use and which uses none of them.
FREE = {"lib", "error"}


def strip_comments(text):
    """Blanks out // and /* */ comments and string literals (keeping their line breaks, so
    line numbers stay true), so only code is searched."""
    out, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
        elif text[i] == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j += 1
        else:
            out.append(text[i])
            i += 1
            continue
        out.append("\n" * text.count("\n", i, j))
        i = j
    return "".join(out)


def module_of(src, path):
    rel = os.path.relpath(path, src)
    top = rel.split(os.sep)[0]
    return top[:-3] if top.endswith(".rs") else top


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")
    problems = []
    for root, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            me = module_of(src, path)
            if me in FREE:
                continue
            if me not in LEVEL:
                problems.append(f"{path}: module '{me}' has no place in the layer order (ci/layers.py)")
                continue
            code = strip_comments(open(path, encoding="utf-8").read())
            for m in re.finditer(r"\bcrate::([a-z_]+)", code):
                other = m.group(1)
                if other in FREE or other == me:
                    continue
                if other not in LEVEL:
                    continue  # a macro or item at the crate root
                if LEVEL[other] >= LEVEL[me]:
                    line = code[: m.start()].count("\n") + 1
                    problems.append(f"{path}:{line}: '{me}' uses 'crate::{other}', which is not below it")
    for p in sorted(set(problems)):
        print(p)
    if problems:
        print(f"layering check failed: {len(set(problems))} back-import(s); the order is in ci/layers.py")
        return 1
    print("layering check: every module uses only the ones below it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
