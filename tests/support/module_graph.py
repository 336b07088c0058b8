#!/usr/bin/env python3
"""The library's module graph, from the source: which top-level module of
src/ names which (`crate::name`, also inside `use crate::{…}` groups).
Exits 1, naming it, when the graph has a cycle. `make lint` runs it.

    python tests/support/module_graph.py [--print]
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "src")


def modules():
    """Top-level modules: name -> the files that make it up."""
    out = {}
    for entry in sorted(os.listdir(SRC)):
        path = os.path.join(SRC, entry)
        if entry.endswith(".rs") and entry not in ("lib.rs",):
            out[entry[:-3]] = [path]
        elif os.path.isdir(path) and entry != "bin":
            files = []
            for root, _, names in os.walk(path):
                files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
            out[entry] = sorted(files)
    return out


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.split("\n"))


def names_in_group(group):
    """The first segment of each path in a `use crate::{…}` group."""
    depth, current, out = 0, "", []
    for ch in group:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current)
            current = ""
        else:
            current += ch
    out.append(current)
    return [re.split(r"[:{\s]", p.strip(), maxsplit=1)[0] for p in out if p.strip()]


def edges(mods):
    graph = {}
    for name, files in mods.items():
        text = strip_comments("".join(open(f).read() for f in files))
        used = set(re.findall(r"\bcrate::([a-z_][a-z0-9_]*)", text))
        for m in re.finditer(r"\bcrate::\{", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            used.update(names_in_group(text[m.end():i - 1]))
        graph[name] = sorted(u for u in used if u in mods and u != name)
    return graph


def cycle(graph):
    """One cycle of the graph, as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def main(argv):
    graph = edges(modules())
    if "--print" in argv:
        for name, used in graph.items():
            print(f"{name}: {', '.join(used) or '-'}")
    found = cycle(graph)
    if found:
        print("module cycle: " + " -> ".join(found), file=sys.stderr)
        return 1
    print(f"module graph: {len(graph)} modules, no cycle")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
