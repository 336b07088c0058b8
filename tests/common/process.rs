//! Processes and files: where Envoy and the module are, work and log
//! directories, and children that die with the test process.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;

/// Paths of the Envoy binary and the module: `FPGEN_ENVOY` and `FPGEN_WASM`,
/// else the project's `.venv/bin/envoy` and release module. Panics when
/// either is missing.
pub fn tool_paths() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let envoy = from_env_or("FPGEN_ENVOY", root.join(".venv/bin/envoy"));
    let wasm = from_env_or(
        "FPGEN_WASM",
        root.join("target/wasm32-wasip1/release/fpgen.wasm"),
    );
    assert!(
        envoy.is_file(),
        "Envoy not found at {} (FPGEN_ENVOY). Run the tests with `make test`, or install it with `make venv`.",
        envoy.display()
    );
    assert!(
        wasm.is_file(),
        "the module is not built at {} (FPGEN_WASM). Run the tests with `make test`, or build it with `make build`.",
        wasm.display()
    );
    (envoy, wasm)
}

/// The release of the Envoy under test (`FPGEN_ENVOY`; `make test` runs
/// 1.40.0, `make test-envoys` each release of its matrix), from `envoy
/// --version` (`<commit>/<major>.<minor>.<patch>/…`), read once. Where
/// Envoy itself behaves differently across releases, a test states its
/// expectation per release with this.
pub fn envoy_release() -> (u32, u32, u32) {
    static RELEASE: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    *RELEASE.get_or_init(|| {
        let out = std::process::Command::new(tool_paths().0)
            .arg("--version")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // "<path>  version: <commit>/<release>/<status>/<type>/<ssl>"
        let version = text
            .split_once("version: ")
            .and_then(|(_, v)| v.split('/').nth(1))
            .unwrap_or_else(|| panic!("no version in {text:?}"));
        let mut parts = version.split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().unwrap()
        });
        let mut next = || {
            parts
                .next()
                .unwrap_or_else(|| panic!("version {version:?}"))
        };
        (next(), next(), next())
    })
}

/// Which fpgen module a harness Envoy runs: the proxy-wasm module (the
/// default) or the native dynamic module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Module {
    Wasm,
    Native,
}

impl Module {
    /// The module's file: the Wasm module, or the test build of the
    /// dynamic module (`FPGEN_NATIVE`, else `make native-test`'s
    /// `target/native-test/release/libfpgen.so`).
    pub fn path(self) -> PathBuf {
        match self {
            Module::Wasm => tool_paths().1,
            Module::Native => {
                let root = Path::new(env!("CARGO_MANIFEST_DIR"));
                let so = from_env_or(
                    "FPGEN_NATIVE",
                    root.join("target/native-test/release/libfpgen.so"),
                );
                assert!(
                    so.is_file(),
                    "the dynamic module is not built at {} (FPGEN_NATIVE). Run the tests with `make test`, or build it with `make native-test`.",
                    so.display()
                );
                // Envoy finds it as lib<name>.so in its directory
                assert!(
                    so.file_name().is_some_and(|n| n == "libfpgen.so"),
                    "FPGEN_NATIVE must name a libfpgen.so, not {}",
                    so.display()
                );
                so
            }
        }
    }

    /// The HTTP filter's name, as routes enable it.
    pub fn filter_name(self) -> &'static str {
        match self {
            Module::Wasm => "envoy.filters.http.wasm",
            Module::Native => "envoy.filters.http.dynamic_modules",
        }
    }

    /// A Wasm module stat name (`wasmcustom.fpgen.…`) as this module names
    /// it: the native module's counters carry labels, which `/stats` shows
    /// as `.name.value` segments (`dynamicmodulescustom.fpgen.tokens_minted.fpgen_customer.100001`).
    pub fn stat_name(self, wasm_name: &str) -> String {
        let Some(rest) = wasm_name.strip_prefix("wasmcustom.fpgen.") else {
            return wasm_name.to_owned();
        };
        if self == Module::Wasm {
            return wasm_name.to_owned();
        }
        let parts: Vec<&str> = rest.split('.').collect();
        let native = match parts.as_slice() {
            ["customer", id, "tokens_minted"] => format!("tokens_minted.fpgen_customer.{id}"),
            ["customer", id, "redemptions_accepted"] => {
                format!("redemptions_accepted.fpgen_customer.{id}")
            }
            ["customer", id, "rejected", code] => {
                format!("rejected.fpgen_customer.{id}.fpgen_code.{code}")
            }
            ["rejected", code] => format!("rejected.fpgen_customer..fpgen_code.{code}"),
            ["redemptions_rejected", reason] => {
                format!("redemptions_rejected.fpgen_reason.{reason}")
            }
            ["customer", id, "fleet_lease_tokens"] => {
                format!("fleet_lease_tokens.fpgen_customer.{id}")
            }
            ["fleet_budget_failed", reason] => format!("fleet_budget_failed.fpgen_reason.{reason}"),
            ["fleet_budget_token_calls"] => "fleet_budget_token_calls".to_owned(),
            ["fleet_budget_lease_calls"] => "fleet_budget_lease_calls".to_owned(),
            ["drm", drm, what @ ("minted" | "redeemed")] => format!("{what}.fpgen_drm.{drm}"),
            ["build", version @ .., build] => format!(
                "build.fpgen_version.{}.fpgen_build.{build}",
                version.join(".")
            ),
            [""] => String::new(), // the prefix alone
            _ => panic!("{wasm_name}: no such stat in the native module"),
        };
        format!("dynamicmodulescustom.fpgen.{native}")
    }
}

impl Module {
    /// A Prometheus sample line of the Wasm module (`fpgen_rejected{fpgen_code="2017"} 1`)
    /// as this module writes it: the native module's metrics are
    /// `envoy_dynamicmodulescustom_fpgen_*`, with the same labels, and a
    /// customer that is not known is an empty `fpgen_customer` rather than
    /// none.
    pub fn prometheus_line(self, wasm_line: &str) -> String {
        if self == Module::Wasm {
            return wasm_line.to_owned();
        }
        let line = format!("envoy_dynamicmodulescustom_{wasm_line}");
        if line.contains("fpgen_rejected{") && !line.contains("fpgen_customer=") {
            return line.replacen("fpgen_rejected{", "fpgen_rejected{fpgen_customer=\"\",", 1);
        }
        line
    }
}

/// The upgrade test's second module: the same source built with
/// `FPGEN_BUILD_LABEL=upgrade-test` (`make upgrade-module`, which `make test`
/// runs), so it reports another build. `FPGEN_WASM_UPGRADE`, else
/// `target/upgrade/wasm32-wasip1/release/fpgen.wasm`.
pub fn upgrade_wasm() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wasm = from_env_or(
        "FPGEN_WASM_UPGRADE",
        root.join("target/upgrade/wasm32-wasip1/release/fpgen.wasm"),
    );
    assert!(
        wasm.is_file(),
        "the upgrade module is not built at {} (FPGEN_WASM_UPGRADE). Run the tests with `make test`, or build it with `make upgrade-module`.",
        wasm.display()
    );
    wasm
}

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or(default, PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}

/// A fresh directory `target/e2e-tmp/<pid>-<n>`. The first call also removes
/// the directories of test processes that are gone.
pub fn new_workdir() -> PathBuf {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let base = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("e2e-tmp");
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    if n == 0 {
        prune_stale_workdirs(&base);
    }
    let dir = base.join(format!("{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn prune_stale_workdirs(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Where every Envoy of the end-to-end tests leaves its logs:
/// `target/e2e-logs/<test binary>-<pid>-<n>/{envoy,access,stdout,stderr}.log`.
/// `make test` empties it first and audits it after the tests (no secret may
/// appear in any of them: `tests/log_audit.rs`).
pub const E2E_LOG_DIR: &str = "target/e2e-logs";

pub(super) fn log_dir_for(workdir: &Path) -> PathBuf {
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "tests".into());
    let name = workdir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(E2E_LOG_DIR)
        .join(format!("{binary}-{name}"));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

pub(super) fn log_file(dir: &Path, name: &str) -> File {
    let path = dir.join(name);
    File::create(&path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
}

/// Spawns `cmd` from a thread that lives as long as the process, with
/// `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills the child when that thread
/// ends, which is when the test process ends. (The signal follows the thread
/// that forked, so the spawning must not happen on short-lived test threads.)
pub fn spawn_tied_to_process(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("envoy-spawner".into())
            .spawn(move || {
                // The sender lives in a static, so this loop never ends.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(spawn_with_pdeathsig(&mut cmd));
                }
            })
            .expect("cannot start the spawner thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .send((cmd, reply_tx))
        .expect("the spawner thread is gone");
    reply_rx.recv().expect("the spawner thread did not answer")
}

#[allow(unsafe_code)]
fn spawn_with_pdeathsig(cmd: &mut Command) -> io::Result<Child> {
    use std::os::unix::process::CommandExt;
    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: no signal will come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[... {skip} earlier lines ...]\n"));
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}
