#!/usr/bin/env python3
"""The public surface of the core, the crate fpgen-core (core/src/), from
its source: every item a user of the crate can name (its public modules'
`pub` items, the `pub` methods and fields of their types, and what a public
module re-exports with `pub use`), one line each, against the list the API
names (core/public-api.txt). Exits 1, with the difference, when an item
appears that the list does not name or one it names is gone: a new public
item is a decision, written into the list in the same change. `make lint`
runs it; `--write` rewrites the list from the source.

    python tests/support/public_api.py [--write | --self-test]

`--self-test`: the check run on a copy of the source with one public
function added, which it must name as not in the list.

What it reads as public: `pub` alone (never `pub(crate)` or `pub(super)`),
outside `#[cfg(test)]` modules, in modules that are `pub` all the way from
the crate's root, and in what the core's `macro_rules!` write where they
are invoked. Items of a private module reach the list only through a
public module's `pub use`. Enum variants are not listed (an enum that will
grow is `#[non_exhaustive]`).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
SRC = os.path.join(ROOT, "core", "src")
LIST = os.path.join(ROOT, "core", "public-api.txt")

ITEM = re.compile(
    r"^\s*pub\s+(?:const\s+|unsafe\s+|async\s+|extern\s+\"C\"\s+)*"
    r"(fn|struct|enum|trait|const|static|type|mod|use)\s+([A-Za-z_][A-Za-z0-9_]*)?"
)
IMPL = re.compile(r"^impl(?:<[^{]*?>)?\s+(?:([\w:<>, ']+?)\s+for\s+)?([\w:]+)")
FIELD = re.compile(r"^    pub\s+([a-z_][a-z0-9_]*)\s*:")


def strip(text):
    """The source without comments, strings and test modules."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = "\n".join(line.split("//", 1)[0] for line in text.split("\n"))
    text = re.sub(r"b?'(?:\\.|[^'\\])'", "' '", text)  # char literals, '"' among them
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)
    out, skip_depth, depth, pending = [], None, 0, False
    for line in text.split("\n"):
        if skip_depth is None and re.match(r"^\s*#\[cfg\(test\)\]", line):
            pending = True
            continue
        opens, closes = line.count("{"), line.count("}")
        if pending and skip_depth is None:
            pending = False
            if re.match(r"^\s*(pub(\(\w+\))?\s+)?mod\s+\w+\s*;", line):
                continue  # an out-of-line test module
            if re.match(r"^\s*(pub(\(\w+\))?\s+)?(mod|fn|impl)\b", line):
                skip_depth = depth
        if skip_depth is not None:
            depth += opens - closes
            if depth <= skip_depth:
                skip_depth = None
            continue
        out.append(line)
        depth += opens - closes
    return out


def module_files():
    """Module path -> file, for every file of the crate."""
    out = {}
    for root, _, names in os.walk(SRC):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(root, name), SRC)[:-3].split(os.sep)
            if rel[-1] in ("lib", "mod"):
                rel = rel[:-1]
            out["::".join(["fpgen_core"] + rel)] = os.path.join(root, name)
    return out


def items(module, lines):
    """The public items declared in one file, and its public submodules."""
    found, public_mods, depth, current_impl, trait_impl = [], set(), 0, None, False
    in_struct = None
    for line in lines:
        if depth == 0:
            m = IMPL.match(line)
            if m:
                current_impl = m.group(2).split("::")[-1]
                trait_impl = m.group(1) is not None
            elif line.strip():
                current_impl = None
            s = re.match(r"^pub\s+struct\s+(\w+)[^;]*\{\s*$", line)
            in_struct = s.group(1) if s else None
        if depth == 1 and in_struct:
            f = FIELD.match(line)
            if f:
                found.append(f"{module}::{in_struct}.{f.group(1)} field")
        m = ITEM.match(line)
        if m and (depth == 0 or (depth == 1 and current_impl and not trait_impl)):
            kind, name = m.group(1), m.group(2) or ""
            if kind == "use":
                used = re.sub(r"\s+", " ", line.split("use", 1)[1].strip().rstrip(";"))
                found.append(f"{module} use {used}")
            elif kind == "mod":
                public_mods.add(name)
                found.append(f"{module}::{name} mod")
            elif depth == 1:
                found.append(f"{module}::{current_impl}::{name} {kind}")
            else:
                found.append(f"{module}::{name} {kind}")
        depth += line.count("{") - line.count("}")
    return found, public_mods


def reexported(module, found, files):
    """What `module` re-exports from a private child module (`pub use
    child::{A, B}`): those items of the child, their methods and fields,
    as the re-exporting module's."""
    out = []
    for line in found:
        m = re.match(rf"^{re.escape(module)} use (\w+)::\{{?([\w, ]+)\}}?$", line)
        child = m and files.get(f"{module}::{m.group(1)}")
        if not child:
            continue
        names = {n.strip() for n in m.group(2).split(",")}
        with open(child, encoding="utf-8") as f:
            inner, _ = items(f"{module}::{m.group(1)}", strip(f.read()))
        prefix = f"{module}::{m.group(1)}::"
        for item in inner:
            rest = item[len(prefix):] if item.startswith(prefix) else ""
            if re.split(r"[:.\s]", rest, maxsplit=1)[0] in names:
                out.append(f"{module}::{rest}")
    return out


def expanded(lines):
    """The file with each of its `macro_rules!` invocations written out: the
    macro's first arm, its `$name` the invocation's first CamelCase word
    (how the core's macros name what they declare), added at the top level."""
    import textwrap
    macros, depth, current, body = {}, 0, None, []
    for line in lines:
        m = re.match(r"^macro_rules!\s+(\w+)", line) if depth == 0 else None
        if m:
            current, body = m.group(1), []
        elif current is not None:
            body.append(line)
        depth += line.count("{") - line.count("}")
        if current is not None and depth == 0 and not m:
            macros[current] = arm_of(body)
            current = None
    out, depth, calling, words = list(lines), 0, None, []
    for line in lines:
        m = re.match(r"^(\w+)!\s*[{(]", line) if depth == 0 else None
        if m and m.group(1) in macros:
            calling, words = m.group(1), []
        elif calling is not None:
            words += re.findall(r"\b[A-Z][a-z]\w*\b", line)
        depth += line.count("{") - line.count("}") + line.count("(") - line.count(")")
        if calling is not None and depth == 0:
            name = words[0] if words else ""
            text = textwrap.dedent("\n".join(macros[calling])).replace("$name", name)
            out += text.split("\n")
            calling = None
    return out


def arm_of(body):
    """The lines of a macro's first arm's expansion (inside its `=> {`)."""
    out, depth, inside = [], 0, False
    for line in body:
        if not inside:
            if "=>" in line:
                inside, depth = True, 1
            continue
        depth += line.count("{") - line.count("}")
        if depth <= 0:
            break
        out.append(line)
    return out


def surface():
    files = module_files()
    reachable, todo, out = set(), ["fpgen_core"], []
    while todo:
        module = todo.pop()
        reachable.add(module)
        path = files.get(module)
        if path is None:
            continue
        with open(path, encoding="utf-8") as f:
            found, mods = items(module, expanded(strip(f.read())))
        out += found + reexported(module, found, files)
        todo += [f"{module}::{m}" for m in mods if f"{module}::{m}" not in reachable]
    return sorted(set(out))


def self_test():
    """The check bites: a public function added to a copy of the source is
    reported."""
    import shutil
    import tempfile
    global SRC
    with tempfile.TemporaryDirectory() as tmp:
        copy = os.path.join(tmp, "src")
        shutil.copytree(SRC, copy)
        with open(os.path.join(copy, "lifecycle.rs"), "a", encoding="utf-8") as f:
            f.write("\npub fn fpgen_self_test_added() {}\n")
        real, SRC = SRC, copy
        try:
            added = set(surface())
        finally:
            SRC = real
    new = added - set(surface())
    if new != {"fpgen_core::lifecycle::fpgen_self_test_added fn"}:
        print(f"self-test: expected the added function alone, found {sorted(new)}")
        return 1
    print("self-test: a public function added to the core is reported")
    return 0


def main():
    if "--self-test" in sys.argv:
        return self_test()
    lines = surface()
    text = "".join(line + "\n" for line in lines)
    if "--write" in sys.argv:
        with open(LIST, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{LIST}: {len(lines)} public items")
        return 0
    with open(LIST, encoding="utf-8") as f:
        named = set(f.read().splitlines())
    new, gone = sorted(set(lines) - named), sorted(named - set(lines))
    for line in new:
        print(f"public, not named by core/public-api.txt: {line}")
    for line in gone:
        print(f"named by core/public-api.txt, not public: {line}")
    if new or gone:
        print("a change to fpgen-core's public API is a decision: name it in "
              "core/public-api.txt (python tests/support/public_api.py --write)")
        return 1
    print(f"fpgen-core: {len(lines)} public items, each named by core/public-api.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
