#!/usr/bin/env python3
"""Checks that every Rust block of docs/guide.md is a piece of examples/pubsub.rs, verbatim, so
the guide shows code that ci/test builds and tests. Usage: ci/guide.py"""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parent.parent
guide = (root / "docs" / "guide.md").read_text()
program = (root / "examples" / "pubsub.rs").read_text()
blocks = re.findall(r"```rust\n(.*?)```", guide, re.S)
missing = [b for b in blocks if b not in program]
for b in missing:
    print("docs/guide.md shows code that is not in examples/pubsub.rs:\n" + b, file=sys.stderr)
if not blocks:
    print("docs/guide.md has no Rust blocks to check", file=sys.stderr)
sys.exit(1 if missing or not blocks else 0)
