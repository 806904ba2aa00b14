#!/usr/bin/env python3
"""Prints the crate's module dependency graph (top-level modules, and the
submodules of `sd`) from `use crate::…` / `crate::…::` paths, and its cycles.

usage: scripts/module-graph.py [--check]
With --check, exits 1 on any cycle not listed in KNOWN_CYCLES (empty: the graph
has none; `tests/module_graph.rs` checks the same in `cargo test`).
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "src"
# Cycles that exist today, as sorted tuples of their members; remove an entry
# when its cycle is broken.
KNOWN_CYCLES = set()


def module_of(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "mod":
        parts = parts[:-1]
    if parts and parts[0] == "sd" and len(parts) > 1:
        return "sd::" + parts[1]
    return parts[0] if parts else "lib"


def targets(text: str, here: str):
    out = set()
    for m in re.finditer(r"crate::([a-z_]+)(?:::([a-z_]+\b)(?!\())?", text):
        top, sub = m.group(1), m.group(2)
        if top == "sd" and sub:
            out.add(f"sd::{sub}")
        elif top == "sd" and here.startswith("sd::"):
            continue  # the sd root only re-exports its own submodules
        else:
            out.add(top)
    if here.startswith("sd::"):
        for m in re.finditer(r"super::([a-z_]+)", text):
            out.add(f"sd::{m.group(1)}")
    out.discard(here)
    return out


def graph():
    edges = {}
    for path in ROOT.rglob("*.rs"):
        here = module_of(path)
        if here in ("lib", "main"):
            continue
        text = path.read_text()
        # Tests may reach anywhere.
        text = text.split("#[cfg(test)]")[0]
        edges.setdefault(here, set()).update(targets(text, here))
    # `crate::sd::StableDiffusion` goes through the root's re-exports.
    root = (ROOT / "sd" / "mod.rs").read_text()
    edges["sd"] = {f"sd::{m}" for m in re.findall(r"pub use ([a-z_]+)::", root)}
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(tuple(sorted(comp)))

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    for m in sorted(edges):
        print(f"{m} -> {', '.join(sorted(edges[m])) or '(nothing)'}")
    found = cycles(edges)
    for c in found:
        print("cycle: " + " <-> ".join(c))
    if "--check" in sys.argv:
        new = [c for c in found if c not in KNOWN_CYCLES]
        if new:
            print(f"{len(new)} new cycle(s)", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
