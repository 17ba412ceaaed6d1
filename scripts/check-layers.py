#!/usr/bin/env python3
"""Checks the layering of crm-core: storage (crm-core/src/store/) may import
models, never a service. A module counts as a service when it calls storage
(`crate::store` or `store::`). Prints each storage import and exits 1 on a cycle.

Run: python3 scripts/check-layers.py
"""
import pathlib
import re
import sys

src = pathlib.Path(__file__).resolve().parent.parent / "crm-core" / "src"


def module_file(parts):
    """The file of module path `parts` (below the crate root), if it exists."""
    base = src.joinpath(*parts)
    for f in (base.with_suffix(".rs"), base / "mod.rs"):
        if f.exists():
            return f
    return None


def uses_store(f):
    text = f.read_text()
    return re.search(r"\bcrate::store\b|^\s*use super::super::store|\bstore::\w+::", text, re.M) is not None


bad = []
for f in sorted((src / "store").glob("*.rs")):
    text = f.read_text()
    paths = [m.group(1) for m in re.finditer(r"^use crate::([\w:]+?)(?:::\{|::[A-Z]\w*|;| as )", text, re.M)]
    # `use crate::{a::B, c};`: every member with a module path
    for m in re.finditer(r"^use crate::\{([^}]*)\};", text, re.M):
        paths += [p.strip() for p in m.group(1).split(",") if "::" in p]
    for path in paths:
        parts = path.split("::")
        # walk up to the longest prefix that is a module file
        while parts and module_file(parts) is None:
            parts = parts[:-1]
        if not parts:
            continue  # an item of the crate root (Error, Result)
        target = module_file(parts)
        if target.is_relative_to(src / "store"):
            continue
        status = "SERVICE" if uses_store(target) else "ok"
        print(f"{f.relative_to(src)} -> {target.relative_to(src)}: {status}")
        if status != "ok":
            bad.append((f, target))

if bad:
    print(f"{len(bad)} storage imports reach a service module", file=sys.stderr)
    sys.exit(1)
