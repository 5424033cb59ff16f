#!/usr/bin/env python3
"""Checks lock-runtime's module layering (run by scripts/test.sh).

1. No import cycle among the top-level modules of lock-runtime/src (an edge
   A -> B for every `crate::B` path written in A's files, code only).
2. The lock engine (`lock/`) imports only `store`, `error` and `options`.
3. The backend kit (`testing/`) uses only the public API: no path into a
   private module of the crate root (it is what a backend outside the crate
   would write).
Exits 1 and prints what is wrong otherwise.
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lock-runtime", "src")
ENGINE_MAY_IMPORT = {"store", "error", "options"}


def code(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def top_module(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    return rel[0] if rel[0] not in ("lib",) else None


def main():
    modules = set()
    edges = {}
    for folder, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            module = top_module(path)
            if module is None:
                continue
            modules.add(module)
            with open(path, encoding="utf-8") as handle:
                text = code(handle.read())
            targets = set(re.findall(r"\bcrate::(\w+)", text))
            for group in re.findall(r"\buse\s+crate::\{([^;]*)\}", text, flags=re.S):
                targets.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            edges.setdefault(module, set()).update(t for t in targets if t != module)
    # `#[path = "macro_support.rs"] pub mod __private` in lib.rs
    if "macro_support" in edges:
        edges["__private"] = edges.pop("macro_support")
    problems = []
    extra = sorted(t for t in edges.get("lock", ()) if t not in ENGINE_MAY_IMPORT and t in modules)
    if extra:
        problems.append(f"lock/ (the engine) imports {', '.join(extra)}; it may import only "
                        f"{', '.join(sorted(ENGINE_MAY_IMPORT))}")
    # Cycle search (DFS with colours).
    colour = {}
    stack = []

    def visit(node):
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in modules and nxt != "__private":
                continue
            if colour.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                problems.append("import cycle: " + " -> ".join(cycle))
            elif colour.get(nxt) is None:
                visit(nxt)
        stack.pop()
        colour[node] = 2

    for node in sorted(edges):
        if colour.get(node) is None:
            visit(node)
    problems.extend(file_cycles())
    problems.extend(kit_uses_public_api_only())
    if problems:
        for problem in problems:
            print(f"check_layers: {problem}")
        return 1
    print(f"check_layers: {len(modules)} modules of lock-runtime, no import cycle, "
          f"the engine imports only {', '.join(sorted(ENGINE_MAY_IMPORT))}, "
          f"the backend kit uses only the public API")
    return 0


def file_cycles():
    """Import cycles among the files (modules and submodules) of lock-runtime/src."""
    files = {}
    for folder, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
                if rel[-1] in ("mod", "lib"):
                    rel = rel[:-1]
                files[tuple(rel)] = path

    def resolve(parts):
        for n in range(len(parts), 0, -1):
            if tuple(parts[:n]) in files:
                return tuple(parts[:n])
        return None

    edges = {}
    for module, path in files.items():
        if module == ():
            continue
        with open(path, encoding="utf-8") as handle:
            text = code(handle.read())
        outs = set()
        for m in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            outs.add(resolve(m.group(1).split("::")))
        parent = module[:-1] if not path.endswith("mod.rs") else module
        for m in re.finditer(r"\bsuper::((?:\w+::)*\w+)", text):
            base = list(parent[:-1] if path.endswith("mod.rs") else parent)
            outs.add(resolve(base + m.group(1).split("::")))
        # A module declaring or re-exporting its own children is not an import.
        edges[module] = {t for t in outs if t and t != module and t[: len(module)] != module}
    found = []
    colour = {}
    stack = []

    def visit(node):
        colour[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if colour.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                found.append("import cycle among files: " + " -> ".join("/".join(c) for c in cycle))
            elif colour.get(nxt) is None:
                visit(nxt)
        stack.pop()
        colour[node] = 2

    for node in sorted(edges):
        if colour.get(node) is None:
            visit(node)
    return found


def kit_uses_public_api_only():
    """Paths from testing/ into private modules of lib.rs (`mod x;`, not `pub mod x;`)."""
    with open(os.path.join(SRC, "lib.rs"), encoding="utf-8") as handle:
        private = set(re.findall(r"^mod\s+(\w+)\s*;", code(handle.read()), flags=re.M))
    found = []
    kit = os.path.join(SRC, "testing")
    for folder, _, names in os.walk(kit):
        for name in sorted(names):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            with open(path, encoding="utf-8") as handle:
                text = code(handle.read())
            targets = set(re.findall(r"\bcrate::(\w+)", text))
            for group in re.findall(r"\buse\s+crate::\{([^;]*)\}", text, flags=re.S):
                targets.update(re.findall(r"(?:^|,)\s*(\w+)", group))
            for target in sorted(targets & private):
                rel = os.path.relpath(path, SRC)
                found.append(f"{rel} (the backend kit) uses crate::{target}, a private module; "
                             f"use the public API (the crate root's re-exports, crate::store)")
    return found


if __name__ == "__main__":
    sys.exit(main())
