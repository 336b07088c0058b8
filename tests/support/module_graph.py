#!/usr/bin/env python3
"""The module graph, from the source: which module of the core (the crate
fpgen-core, core/src/) or of the hosts (the crate fpgen, src/hosts/) names
which (`crate::name`, also inside `use crate::{…}` groups; in the hosts,
`fpgen_core::name` too). Exits 1, naming it, when the graph has a cycle,
when a core module names a host (the build refuses that too: the core's
crate has no host to name), when a host names another, or when a core
module imports one that the map in core/src/lib.rs does not allow.
`make lint` runs it.

    python tests/support/module_graph.py [--print]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
LAYERS = {"core": os.path.join(ROOT, "core", "src"), "hosts": os.path.join(ROOT, "src", "hosts")}
CORE_LIB = os.path.join(LAYERS["core"], "lib.rs")


def modules():
    """The modules of the core (`core/src/`) and of the hosts
    (`src/hosts/`): "core::name" or "hosts::name" -> the files of it."""
    out = {}
    for layer, base in LAYERS.items():
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            if entry.endswith(".rs") and entry not in ("mod.rs", "lib.rs"):
                out[f"{layer}::{entry[:-3]}"] = [path]
            elif os.path.isdir(path):
                files = []
                for root, _, names in os.walk(path):
                    files += [os.path.join(root, n) for n in names if n.endswith(".rs")]
                out[f"{layer}::{entry}"] = sorted(files)
    return out


def resolve(layer, first, rest, mods):
    """The module a path `crate::first::rest…` names, from a module of
    `layer`. In the core, a core module. In the hosts' crate, the core's
    modules are re-exported at its root (`crate::config`; `crate::stats`
    adds the build's stamp to the core's), and so are the hosts' public
    ones (`crate::serve`, `crate::ratelimit`, `crate::wasm_stats`)."""
    if layer == "core":
        return f"core::{first}" if f"core::{first}" in mods else None
    if first == "hosts":
        name = f"hosts::{rest}"
        return name if name in mods else None
    if first == "wasm_stats":  # re-exported from the proxy-wasm host
        return "hosts::proxy_wasm"
    for layer in ("core", "hosts"):
        if f"{layer}::{first}" in mods:
            return f"{layer}::{first}"
    return None


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
    path = re.compile(r"\b(?:crate|fpgen_core)::([a-z_][a-z0-9_]*)(?:::([a-z_][a-z0-9_]*))?")
    for name, files in mods.items():
        layer = name.split("::")[0]
        text = strip_comments("".join(open(f).read() for f in files))
        used = {resolve(layer, m.group(1), m.group(2), mods) for m in path.finditer(text)}
        for m in re.finditer(r"\b(?:crate|fpgen_core)::\{", text):
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            for first in names_in_group(text[m.end():i - 1]):
                used.add(resolve(layer, first, None, mods))
        graph[name] = sorted(u for u in used if u and u != name)
    return graph


def layering(graph):
    """What breaks the layers: a core module that names a host, a host that
    names another host."""
    out = []
    for name, used in graph.items():
        for u in used:
            if name.startswith("core::") and u.startswith("hosts::"):
                out.append(f"{name} (the core) names {u} (a host)")
            if name.startswith("hosts::") and u.startswith("hosts::"):
                out.append(f"{name} names another host, {u}")
    return out


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


def map_of_lib(core):
    """What the core crate's map (core/src/lib.rs) lets each core
    module import: `- [`name`]: … (`a`, `b`)` (a private module: `- `name`
    (private; …): …`), or (nothing), (the modules above), (the modules
    above but `x`), (the whole core)."""
    text = open(CORE_LIB).read()
    line = re.compile(r"^//! - (?:\[`([a-z_]+)`\]|`([a-z_]+)` \(private[^()]*\)): .*\(([^()]*)\)\.$")
    allowed, order = {}, []
    for l in text.split("\n"):
        m = line.match(l)
        if not m:
            continue
        name, what = f"core::{m.group(1) or m.group(2)}", m.group(3)
        named = {f"core::{n}" for n in re.findall(r"`([a-z_]+)`", what)}
        if what == "nothing":
            allowed[name] = set()
        elif what.startswith("the modules above"):
            allowed[name] = set(order) - named
        elif what == "the whole core":
            allowed[name] = set(core)
        else:
            allowed[name] = named
        order.append(name)
    return allowed


def against_map(graph):
    core = [n for n in graph if n.startswith("core::")]
    allowed = map_of_lib(core)
    out = [f"{n}: no line in the map of core/src/lib.rs" for n in core if n not in allowed]
    for name, ok in allowed.items():
        if name not in graph:
            out.append(f"{name}: in the map of core/src/lib.rs, but no such module")
            continue
        extra = sorted(set(graph[name]) - ok - {name})
        if extra:
            out.append(f"{name} imports {', '.join(extra)}, which the map of core/src/lib.rs does not allow")
    return out


def main(argv):
    graph = edges(modules())
    if "--print" in argv:
        for name, used in graph.items():
            print(f"{name}: {', '.join(used) or '-'}")
    found = cycle(graph)
    if found:
        print("module cycle: " + " -> ".join(found), file=sys.stderr)
        return 1
    broken = layering(graph) + against_map(graph)
    for line in broken:
        print(line, file=sys.stderr)
    if broken:
        return 1
    print(f"module graph: {len(graph)} modules, no cycle, the core names no host")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
