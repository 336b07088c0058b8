//! Stamps the build: `FPGEN_REVISION` is the git commit the module was built
//! from (12 hex digits, `unknown` outside a git checkout), with
//! `-<FPGEN_BUILD_LABEL>` appended when that variable is set (a build an
//! operator wants to tell apart, such as the upgrade test's second module).
//! The module reports it in its configure log line and its build stat.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (out.status.success() && !text.is_empty()).then(|| text.to_owned())
}

fn main() {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    // Only [a-z0-9-]: the build is a segment of a stat name (no dots).
    let label: String = std::env::var("FPGEN_BUILD_LABEL")
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    let build = if label.is_empty() {
        revision
    } else {
        format!("{revision}-{label}")
    };
    println!("cargo:rustc-env=FPGEN_REVISION={build}");
    // The dynamic module binds every Envoy callback it imports when Envoy
    // loads it (not at first call): an Envoy that lacks one refuses the
    // module at load instead of crashing on a request.
    if std::env::var_os("CARGO_FEATURE_DYNAMIC_MODULE").is_some() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,now");
    }
    println!("cargo:rerun-if-env-changed=FPGEN_BUILD_LABEL");
    // A new commit or checkout changes HEAD or its reflog (`logs/HEAD`,
    // which every commit appends to); `--git-path` finds them in a worktree
    // too. Only files that exist: cargo reruns the script every time for
    // one that does not.
    let mut watched: Vec<String> = ["HEAD", "logs/HEAD", "packed-refs"]
        .iter()
        .filter_map(|p| git(&["rev-parse", "--git-path", p]))
        .collect();
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.extend(git(&["rev-parse", "--git-path", &branch]));
    }
    for path in watched.iter().filter(|p| std::path::Path::new(p).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}
