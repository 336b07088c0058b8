//! End-to-end harness: runs a real Envoy 1.40 with the fpgen module on free
//! loopback ports and talks byte-exact HTTP/1.1 to it.
//!
//! Use it from an integration test with `mod common;`.
//!
//! * [`shared()`]: one Envoy per test binary with [`DEMO_CONFIG`] (the
//!   configuration of `envoy/envoy.yaml`), started on first use.
//! * [`Envoy::start`] / [`Envoy::start_with`]: a private Envoy with any filter
//!   configuration; it is killed when dropped. [`Envoy::try_start`] is for
//!   configurations that Envoy must reject: it returns the log instead of
//!   panicking.
//! * [`get`], [`post_form`], [`request`], [`raw`]: a raw HTTP/1.1 client over
//!   `TcpStream`, so a test controls every byte (an unencoded `+` in the
//!   query, odd headers, broken framing).
//!
//! The Envoy binary and the module come from `FPGEN_ENVOY` and `FPGEN_WASM`
//! (set by `make test`), else from `.venv/bin/envoy` and
//! `target/wasm32-wasip1/release/fpgen.wasm` in the project. When they are
//! missing, or Envoy does not come up, the tests fail: they never skip.
//!
//! Every Envoy is spawned from one thread that lives as long as the test
//! process, with `PR_SET_PDEATHSIG(SIGKILL)`: when the test process ends,
//! however it ends, the kernel kills its Envoys (the shared one is in a
//! static and is never dropped).
#![allow(dead_code)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The demo's filter configuration (`envoy/envoy.yaml`) and the
/// authenticator it accepts: the library's shared fixtures.
#[allow(unused_imports)]
pub use fpgen_fixtures::{AUTHENTICATOR as DEMO_AUTHENTICATOR, DEMO_CONFIG};

/// Bodies of the harness's routes (direct responses, no upstream).
pub const NOT_FOUND_BODY: &str = "not found\n";
pub const RIGHTS_BODY: &str = "licence server stand-in\n";
pub const PASSTHROUGH_BODY: &str = "passthrough ok\n";

/// How long Envoy may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, read and write timeout of the HTTP client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The same, for one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How an Envoy is started. `Options::default()` is what [`Envoy::start`]
/// uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads (`--concurrency`); 1 by default, 2 to exercise one VM
    /// per worker.
    pub concurrency: u32,
    /// `--log-level`.
    pub log_level: &'static str,
    /// The plugin's `failure_policy`.
    pub failure_policy: &'static str,
    /// When set, `/hms/fp/rights/` is routed to a cluster at 127.0.0.1:port
    /// (e.g. a [`RecordingUpstream`]) instead of the direct-response stand-in.
    pub upstream_port: Option<u16>,
    /// Serve the listener through LDS from a watched file (a fixed free
    /// port), so that [`Envoy::replace_filter_config`] can swap the filter
    /// configuration while Envoy runs.
    pub dynamic: bool,
    /// How long to wait for readiness.
    pub ready_timeout: Duration,
    /// The HTTP connection manager's hardening as in every shipped
    /// configuration ([`HARDENED_HCM`]: path normalisation, merged slashes,
    /// escaped slashes refused, underscore headers dropped). `false` shows
    /// what the filter alone holds, for an operator who left them out.
    pub hardened: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            concurrency: 1,
            log_level: "info",
            failure_policy: "FAIL_RELOAD",
            upstream_port: None,
            dynamic: false,
            ready_timeout: READY_TIMEOUT,
            hardened: true,
        }
    }
}

impl Options {
    /// The defaults with `n` worker threads.
    pub fn concurrency(n: u32) -> Self {
        Options {
            concurrency: n,
            ..Options::default()
        }
    }

    /// The defaults, with `/hms/fp/rights/` routed to 127.0.0.1:`port`.
    pub fn upstream(port: u16) -> Self {
        Options {
            upstream_port: Some(port),
            ..Options::default()
        }
    }

    /// The same without the HCM hardening: the filter is the only wall.
    pub fn unhardened(mut self) -> Self {
        self.hardened = false;
        self
    }
}

/// The HCM settings every shipped configuration carries (a test in
/// `e2e_edge.rs` checks the files against this list), as JSON members.
pub const HARDENED_HCM: &str = r#""normalize_path": true,
        "merge_slashes": true,
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "common_http_protocol_options": {"headers_with_underscores_action": "DROP_HEADER"},"#;

/// A running Envoy. Dropping it kills it (SIGKILL) and removes its work
/// directory, which is kept when the thread is panicking (a failed test).
pub struct Envoy {
    /// The HTTP listener (HTTP/1.1 and h2c) on 127.0.0.1.
    pub port: u16,
    /// The admin interface on 127.0.0.1.
    pub admin_port: u16,
    child: Mutex<Child>,
    workdir: PathBuf,
    /// Envoy's logs and access log, kept after the test under
    /// `target/e2e-logs/` (see [`E2E_LOG_DIR`]) for the secrets audit.
    logdir: PathBuf,
    /// For dynamic (LDS) Envoys: what regenerates the listener resource.
    dynamic: Option<DynamicListener>,
    /// Readiness includes `GET /passthrough` answering 200 (the harness's
    /// own bootstraps have that route; shipped files do not).
    probe_passthrough: bool,
}

struct DynamicListener {
    wasm: PathBuf,
    options: Options,
    access_log: PathBuf,
    port: u16,
    lds_dir: PathBuf,
}

impl DynamicListener {
    /// The LDS resource file for `filter_config_json`.
    fn resource(&self, filter_config_json: &str) -> String {
        let bootstrap = bootstrap_json(
            &self.wasm,
            filter_config_json,
            &self.options,
            &self.access_log,
        );
        let mut b: serde_json::Value = serde_json::from_str(&bootstrap).unwrap();
        let mut listener = b["static_resources"]["listeners"][0].take();
        listener["address"]["socket_address"]["port_value"] = self.port.into();
        listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener".into();
        serde_json::json!({ "resources": [listener] }).to_string()
    }

    /// Writes the resource atomically (a rename), as Envoy's file watch wants.
    fn write(&self, filter_config_json: &str) {
        let tmp = self.lds_dir.join(".lds.json.tmp");
        fs::write(&tmp, self.resource(filter_config_json)).unwrap();
        fs::rename(&tmp, self.lds_dir.join("lds.json")).unwrap();
    }
}

impl Envoy {
    /// For an Envoy started with `Options { dynamic: true, .. }`: replaces the
    /// filter configuration through LDS while Envoy runs. Envoy drains the
    /// old listener and starts the new one on the same port; a configuration
    /// it rejects leaves the old one serving (and a log line).
    pub fn replace_filter_config(&self, filter_config_json: &str) {
        let dynamic = self.dynamic.as_ref().expect("not a dynamic Envoy");
        dynamic.write(filter_config_json);
    }

    /// Starts Envoy with `filter_config_json` as the filter's configuration
    /// and waits until it serves requests; panics with Envoy's log if it
    /// does not.
    pub fn start(filter_config_json: &str) -> Envoy {
        Envoy::start_with(filter_config_json, &Options::default())
    }

    /// [`Envoy::start`] with options (e.g. `Options::concurrency(2)`).
    pub fn start_with(filter_config_json: &str, options: &Options) -> Envoy {
        match Envoy::try_start_with(filter_config_json, options) {
            Ok(envoy) => envoy,
            Err(log) => panic!("Envoy did not start:\n{}", tail(&log, 80)),
        }
    }

    /// Starts Envoy; `Err` holds Envoy's whole log (and its stderr) when it
    /// exits or is not ready in time. For configurations that Envoy must
    /// reject. Panics only when Envoy or the module cannot be found.
    pub fn try_start(filter_config_json: &str) -> Result<Envoy, String> {
        Envoy::try_start_with(filter_config_json, &Options::default())
    }

    /// [`Envoy::try_start`] with options.
    pub fn try_start_with(filter_config_json: &str, options: &Options) -> Result<Envoy, String> {
        let (envoy_bin, wasm) = tool_paths();
        let workdir = new_workdir();
        let logdir = log_dir_for(&workdir);
        let bootstrap = workdir.join("envoy.json");
        let mut text = bootstrap_json(
            &wasm,
            filter_config_json,
            options,
            &logdir.join("access.log"),
        );
        let dynamic = options.dynamic.then(|| {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let lds_dir = workdir.join("lds");
            fs::create_dir_all(&lds_dir).unwrap();
            let d = DynamicListener {
                wasm: wasm.clone(),
                options: options.clone(),
                access_log: logdir.join("access.log"),
                port,
                lds_dir,
            };
            d.write(filter_config_json);
            let mut b: serde_json::Value = serde_json::from_str(&text).unwrap();
            b["static_resources"].as_object_mut().unwrap().remove("listeners");
            b["node"] = serde_json::json!({"id": "fpgen-e2e", "cluster": "fpgen-e2e"});
            b["dynamic_resources"] = serde_json::json!({"lds_config": {"resource_api_version": "V3",
                "path_config_source": {"path": d.lds_dir.join("lds.json"), "watched_directory": {"path": d.lds_dir}}}});
            text = b.to_string();
            d
        });
        fs::write(&bootstrap, text)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", bootstrap.display()));

        let mut cmd = envoy_command(
            &envoy_bin,
            &bootstrap,
            options.concurrency,
            options.log_level,
            &workdir,
            &logdir,
        );
        cmd.current_dir(&workdir);
        let child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy_bin.display()));

        // From here on, dropping `envoy` (an early return) kills Envoy.
        let mut envoy = Envoy {
            port: 0,
            admin_port: 0,
            child: Mutex::new(child),
            workdir,
            logdir,
            dynamic,
            probe_passthrough: true,
        };
        envoy.wait_ready(options.ready_timeout)?;
        Ok(envoy)
    }

    /// Runs a configuration file as it is (e.g. one of `envoy/`), with its
    /// admin port set to 0 by the caller and `port` as its listener (the
    /// caller puts it in the text). Logs go where the harness's go, so the
    /// secrets audit reads them too.
    pub fn start_yaml(yaml: &str, port: u16, log_level: &str) -> Envoy {
        let (envoy_bin, _) = tool_paths();
        let workdir = new_workdir();
        let logdir = log_dir_for(&workdir);
        let config = workdir.join("envoy.yaml");
        fs::write(&config, yaml).unwrap();
        // relative paths in the file (the module) are from the project root
        let mut cmd = envoy_command(&envoy_bin, &config, 1, log_level, &workdir, &logdir);
        cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
        let child = spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", envoy_bin.display()));
        let mut envoy = Envoy {
            port,
            admin_port: 0,
            child: Mutex::new(child),
            workdir,
            logdir,
            dynamic: None,
            probe_passthrough: false,
        };
        if let Err(log) = envoy.wait_ready(READY_TIMEOUT) {
            panic!("Envoy did not start:\n{}", tail(&log, 80));
        }
        envoy
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let envoy = self;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = envoy.exit_status() {
                return Err(format!(
                    "Envoy exited ({status}) before it was ready\n{}",
                    envoy.envoy_log()
                ));
            }
            let last = match envoy.probe() {
                Ok(()) => return Ok(()),
                Err(state) => state,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "Envoy was not ready after {timeout:?} (last: {last})\n{}",
                    envoy.envoy_log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// One step of readiness: admin address known, admin `/ready` is 200,
    /// listener port known, and a request through the filter chain (so the
    /// module is loaded and passes other paths through) answers
    /// `GET /passthrough` with 200 "passthrough ok".
    fn probe(&mut self) -> Result<(), String> {
        if self.admin_port == 0 {
            let text = fs::read_to_string(self.workdir.join("admin-address")).unwrap_or_default();
            let addr: SocketAddr = text
                .trim()
                .parse()
                .map_err(|_| "admin address not written yet".to_owned())?;
            self.admin_port = addr.port();
        }
        let ready = exchange(
            self.admin_port,
            PROBE_TIMEOUT,
            &request_bytes("GET", "/ready", &[], None),
        )?;
        if ready.status != 200 {
            return Err(format!(
                "admin /ready answered {} {:?}",
                ready.status,
                ready.text()
            ));
        }
        if self.port == 0 {
            let listeners = exchange(
                self.admin_port,
                PROBE_TIMEOUT,
                &request_bytes("GET", "/listeners?format=json", &[], None),
            )?;
            self.port = first_port_value(&listeners.text())
                .ok_or_else(|| format!("no listener port in /listeners: {:?}", listeners.text()))?;
        }
        if !self.probe_passthrough {
            return TcpStream::connect_timeout(
                &SocketAddr::from(([127, 0, 0, 1], self.port)),
                PROBE_TIMEOUT,
            )
            .map(|_| ())
            .map_err(|e| format!("listener: {e}"));
        }
        let answer = exchange(
            self.port,
            PROBE_TIMEOUT,
            &request_bytes("GET", "/passthrough", &[], None),
        )?;
        if answer.status == 200 && answer.body == PASSTHROUGH_BODY.as_bytes() {
            Ok(())
        } else {
            Err(format!("GET /passthrough answered {answer:?}"))
        }
    }

    /// The access log so far (one line per request; format
    /// [`ACCESS_LOG_FORMAT`]). Envoy flushes it every 50 ms.
    pub fn access_log(&self) -> String {
        fs::read_to_string(self.logdir.join("access.log")).unwrap_or_default()
    }

    /// Envoy's log so far (`--log-path`), followed by anything it wrote to
    /// stderr. Envoy flushes the file every 50 ms.
    pub fn envoy_log(&self) -> String {
        let mut text = fs::read_to_string(self.logdir.join("envoy.log")).unwrap_or_default();
        for name in ["stderr.log", "stdout.log"] {
            let extra = fs::read_to_string(self.logdir.join(name)).unwrap_or_default();
            if !extra.trim().is_empty() {
                text.push_str(&format!("\n--- {name} ---\n{extra}"));
            }
        }
        text
    }

    /// The directory with the bootstrap (`envoy.json`) and the logs.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The Envoy process's id.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Whether the Envoy process is still running.
    pub fn is_running(&self) -> bool {
        self.exit_status().is_none()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.try_wait().ok().flatten()
    }

    /// `GET` on the listener.
    pub fn get(&self, path_and_query: &str) -> HttpResponse {
        get(self.port, path_and_query)
    }

    /// `GET` on the admin interface, e.g. `/stats?filter=wasm`.
    pub fn admin_get(&self, path_and_query: &str) -> HttpResponse {
        get(self.admin_port, path_and_query)
    }

    /// The value of the counter or gauge `name` (e.g.
    /// `wasm.envoy.wasm.runtime.v8.active`), from the admin `/stats`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let stats = self.admin_get("/stats").text();
        stats.lines().find_map(|line| {
            let (key, value) = line.split_once(": ")?;
            if key == name {
                value.trim().parse().ok()
            } else {
                None
            }
        })
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        if thread::panicking() {
            eprintln!("Envoy's files are kept in {}", self.workdir.display());
        } else {
            let _ = fs::remove_dir_all(&self.workdir);
        }
    }
}

impl fmt::Debug for Envoy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envoy")
            .field("port", &self.port)
            .field("admin_port", &self.admin_port)
            .field("workdir", &self.workdir)
            .finish_non_exhaustive()
    }
}

/// The Envoy shared by the tests of one test binary, with [`DEMO_CONFIG`],
/// started on first use. It is never dropped; it dies with the test process.
/// If it cannot start, every test that asks for it fails with the reason.
pub fn shared() -> &'static Envoy {
    static SHARED: OnceLock<Result<Envoy, String>> = OnceLock::new();
    match SHARED.get_or_init(|| Envoy::try_start(DEMO_CONFIG)) {
        Ok(envoy) => envoy,
        Err(log) => panic!("the shared Envoy did not start:\n{}", tail(log, 80)),
    }
}

/// The Envoy command line of every harness Envoy: its logs under `logdir`
/// (flushed every 50 ms, tests read them), the admin address written to
/// `workdir/admin-address` (ports are 0 or chosen free: no race with other
/// tests), no hot restart (several Envoys share the machine).
fn envoy_command(
    envoy_bin: &Path,
    config: &Path,
    concurrency: u32,
    log_level: &str,
    workdir: &Path,
    logdir: &Path,
) -> Command {
    let mut cmd = Command::new(envoy_bin);
    cmd.arg("-c")
        .arg(config)
        .arg("--disable-hot-restart")
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--log-level", log_level])
        .arg("--log-path")
        .arg(logdir.join("envoy.log"))
        .args(["--file-flush-interval-msec", "50"])
        .arg("--admin-address-path")
        .arg(workdir.join("admin-address"))
        .stdin(Stdio::null())
        .stdout(log_file(logdir, "stdout.log"))
        .stderr(log_file(logdir, "stderr.log"));
    cmd
}

#[allow(unused_imports)]
pub use fpgen_fixtures::sealed_token as seal_token;

/// The key id a token's header names (unverified: for asserting which key
/// sealed a token that is then opened).
pub fn key_id(token: &str) -> Option<String> {
    let token = fpgen::token::UntrustedToken::parse(token).ok()?;
    String::from_utf8(token.untrusted_key_id().to_vec()).ok()
}

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

fn from_env_or(var: &str, default: PathBuf) -> PathBuf {
    let path = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map_or(default, PathBuf::from);
    std::path::absolute(&path).unwrap_or(path)
}

// ---------------------------------------------------------------------------
// Bootstrap

/// The bootstrap, as JSON (Envoy reads `.json` as JSON). Same shape as
/// `envoy/envoy.yaml`, with ports 0 and `filter_config_json` embedded as a
/// JSON string.
pub fn bootstrap_json(
    wasm: &Path,
    filter_config_json: &str,
    options: &Options,
    access_log: &Path,
) -> String {
    let wasm = json_string(&wasm.to_string_lossy());
    let access_log = json_string(&access_log.to_string_lossy());
    let access_format = json_string(ACCESS_LOG_FORMAT);
    let stats_tags = fpgen::stats::TAG_RULES
        .iter()
        .map(|(name, regex)| {
            format!(
                r#"{{"tag_name": {}, "regex": {}}}"#,
                json_string(name),
                json_string(regex)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let stats_tags = format!("[{stats_tags}]");
    let config = json_string(filter_config_json);
    let failure_policy = json_string(options.failure_policy);
    let not_found = json_string(NOT_FOUND_BODY);
    let rights = json_string(RIGHTS_BODY);
    let passthrough = json_string(PASSTHROUGH_BODY);
    let hardening = if options.hardened { HARDENED_HCM } else { "" };
    let not_found_route = format!(
        r#"{{"match": {{"prefix": "/"}}, "direct_response": {{"status": 404, "body": {{"inline_string": {not_found}}}}}}}"#
    );
    // With an upstream, it gets the licence route and also every path that
    // no other route serves (a route wider than the gate's prefix, as an
    // operator might write it); it accepts request trailers over HTTP/1.1.
    let (rights_route, catch_all, clusters) = match options.upstream_port {
        None => (
            format!(r#"{{"match": {{"prefix": "/hms/fp/rights/"}}, "direct_response": {{"status": 200, "body": {{"inline_string": {rights}}}}}}}"#),
            not_found_route,
            String::new(),
        ),
        Some(port) => (
            r#"{"match": {"prefix": "/hms/fp/rights/"}, "route": {"cluster": "licence_server", "timeout": "5s"}}"#.to_owned(),
            r#"{"match": {"prefix": "/"}, "route": {"cluster": "licence_server", "timeout": "5s"}}"#.to_owned(),
            format!(
                r#""clusters": [{{"name": "licence_server", "type": "STATIC", "connect_timeout": "1s",
                  "typed_extension_protocol_options": {{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {{
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {{"http_protocol_options": {{"enable_trailers": true}}}}}}}},
                  "load_assignment": {{"cluster_name": "licence_server", "endpoints": [{{"lb_endpoints": [{{"endpoint": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": {port}}}}}}}}}]}}]}}}}],"#
            ),
        ),
    };
    format!(
        r#"{{
  "stats_config": {{"stats_tags": {stats_tags}}},
  "admin": {{"address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}}}},
  "static_resources": {{{clusters}"listeners": [{{
    "name": "fpgen",
    "address": {{"socket_address": {{"address": "127.0.0.1", "port_value": 0}}}},
    "filter_chains": [{{"filters": [{{
      "name": "envoy.filters.network.http_connection_manager",
      "typed_config": {{
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "fpgen",
        "use_remote_address": true,
        {hardening}
        "access_log": [{{"name": "envoy.access_loggers.file", "typed_config": {{
          "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
          "path": {access_log},
          "log_format": {{"text_format_source": {{"inline_string": {access_format}}}}}
        }}}}],
        "codec_type": "AUTO",
        "route_config": {{"name": "local", "virtual_hosts": [{{
          "name": "fpgen",
          "domains": ["*"],
          "routes": [
            {rights_route},
            {{"match": {{"prefix": "/passthrough"}}, "direct_response": {{"status": 200, "body": {{"inline_string": {passthrough}}}}}}},
            {catch_all}
          ]
        }}]}},
        "http_filters": [
          {{
            "name": "envoy.filters.http.wasm",
            "typed_config": {{
              "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
              "config": {{
                "name": "fpgen",
                "root_id": "fpgen",
                "allow_on_headers_stop_iteration": true,
                "failure_policy": {failure_policy},
                "vm_config": {{
                  "runtime": "envoy.wasm.runtime.v8",
                  "code": {{"local": {{"filename": {wasm}}}}}
                }},
                "configuration": {{
                  "@type": "type.googleapis.com/google.protobuf.StringValue",
                  "value": {config}
                }}
              }}
            }}
          }},
          {{
            "name": "envoy.filters.http.router",
            "typed_config": {{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
          }}
        ]
      }}
    }}]}}]
  }}]}}
}}
"#
    )
}

/// `s` as a JSON string literal (quotes included).
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The first `"port_value": N` in Envoy's `/listeners?format=json`.
fn first_port_value(json: &str) -> Option<u16> {
    let rest = &json[json.find("\"port_value\"")? + "\"port_value\"".len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&p| p != 0)
}

// ---------------------------------------------------------------------------
// Processes and files

/// A fresh directory `target/e2e-tmp/<pid>-<n>`. The first call also removes
/// the directories of test processes that are gone.
fn new_workdir() -> PathBuf {
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

/// The access-log line of `envoy/envoy.yaml` (a test checks they agree).
pub const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %PATH(NQ)%\" %RESPONSE_CODE% %FILTER_STATE(wasm.fpgen:PLAIN)%\n";

fn log_dir_for(workdir: &Path) -> PathBuf {
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

fn log_file(dir: &Path, name: &str) -> File {
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

// ---------------------------------------------------------------------------
// HTTP/1.1 client

/// A parsed HTTP/1.1 response (chunked bodies decoded, 1xx skipped).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header called `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

/// `GET path_and_query` on 127.0.0.1:`port`.
pub fn get(port: u16, path_and_query: &str) -> HttpResponse {
    request(port, "GET", path_and_query, &[], None)
}

/// `POST` of a form body (`Content-Type: application/x-www-form-urlencoded`).
pub fn post_form(port: u16, path_and_query: &str, body: &[u8]) -> HttpResponse {
    request(
        port,
        "POST",
        path_and_query,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body),
    )
}

/// Any request. The request line is sent exactly as given. `Host: localhost`
/// and `Connection: close` are added unless `headers` has them;
/// `Content-Length` is added for a body unless `headers` has it or
/// `Transfer-Encoding` (then `body` is sent as it is, already framed).
pub fn request(
    port: u16,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    raw(port, &request_bytes(method, path_and_query, headers, body))
}

/// The bytes [`request`] sends.
pub fn request_bytes(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path_and_query} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str("Host: localhost\r\n");
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

/// Sends `bytes` as they are to 127.0.0.1:`port` and reads one response
/// (until it is complete by its framing, or until the server closes).
/// Panics on a connection error, a timeout or an unparsable answer.
pub fn raw(port: u16, bytes: &[u8]) -> HttpResponse {
    try_raw(port, bytes).unwrap_or_else(|e| panic!("HTTP to 127.0.0.1:{port} failed: {e}"))
}

/// [`raw`], with the failure as `Err`.
pub fn try_raw(port: u16, bytes: &[u8]) -> Result<HttpResponse, String> {
    exchange(port, IO_TIMEOUT, bytes)
}

fn exchange(port: u16, timeout: Duration, bytes: &[u8]) -> Result<HttpResponse, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // A server may answer and close before it has read everything (e.g. a
    // body that is too large): a failed write is reported only if no
    // response can be read.
    let write_error = stream.write_all(bytes).and_then(|()| stream.flush()).err();
    let head_request = bytes.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true, head_request)?.ok_or_else(|| {
                    let why = write_error
                        .as_ref()
                        .map(|e| format!(" (write failed: {e})"))
                        .unwrap_or_default();
                    format!(
                        "connection closed before a complete response{why}; got {:?}",
                        String::from_utf8_lossy(&buf)
                    )
                });
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(response) = parse_response(&buf, false, head_request)? {
                    return Ok(response);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A reset right after a close-delimited response still
                // delivered that response.
                if e.kind() == io::ErrorKind::ConnectionReset {
                    if let Ok(Some(response)) = parse_response(&buf, true, head_request) {
                        return Ok(response);
                    }
                }
                let why = write_error
                    .as_ref()
                    .map(|w| format!(" (write failed: {w})"))
                    .unwrap_or_default();
                return Err(format!(
                    "read: {e}{why}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
}

/// Parses one response from `buf`: `Ok(None)` while it is incomplete (and
/// the connection is open), `Err` when it cannot be one.
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    head_request: bool,
) -> Result<Option<HttpResponse>, String> {
    let mut buf = buf;
    loop {
        let Some(end) = find(buf, b"\r\n\r\n") else {
            return if eof && !buf.is_empty() {
                Err(format!(
                    "incomplete response head: {:?}",
                    String::from_utf8_lossy(buf)
                ))
            } else {
                Ok(None)
            };
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| "response head is not UTF-8".to_owned())?;
        let rest = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1 status line: {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
        let mut headers = Vec::new();
        for line in lines {
            let (k, v) = line
                .split_once(':')
                .ok_or_else(|| format!("bad header line: {line:?}"))?;
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
        if (100..200).contains(&status) && status != 101 {
            buf = rest; // interim response (100 Continue): the real one follows
            continue;
        }
        let response = |body: Vec<u8>| HttpResponse {
            status,
            headers: headers.clone(),
            body,
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if head_request || status == 204 || status == 304 {
            return Ok(Some(response(Vec::new())));
        }
        if header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            return match decode_chunked(rest)? {
                Some(body) => Ok(Some(response(body))),
                None if eof => Err(format!(
                    "chunked body cut short: {:?}",
                    String::from_utf8_lossy(rest)
                )),
                None => Ok(None),
            };
        }
        if let Some(length) = header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| format!("bad content-length: {length:?}"))?;
            return if rest.len() >= length {
                Ok(Some(response(rest[..length].to_vec())))
            } else if eof {
                Err(format!("body cut short: {} of {length} bytes", rest.len()))
            } else {
                Ok(None)
            };
        }
        // Delimited by the end of the connection.
        return Ok(eof.then(|| response(rest.to_vec())));
    }
}

/// Decodes a chunked body: `Ok(None)` while incomplete.
pub fn decode_chunked(mut buf: &[u8]) -> Result<Option<Vec<u8>>, String> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(buf, b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[..line_end])
            .map_err(|_| "chunk size is not UTF-8".to_owned())?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size: {line:?}"))?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailers, then an empty line.
            loop {
                let Some(end) = find(buf, b"\r\n") else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(body));
                }
                buf = &buf[end + 2..];
            }
        }
        if buf.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".to_owned());
        }
        buf = &buf[size + 2..];
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

// ---------------------------------------------------------------------------
// A recording upstream (the licence server stand-in of the gate tests)

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked when it came chunked).
    pub body: Vec<u8>,
    /// Trailers of a chunked body, names lower-cased.
    pub trailers: Vec<(String, String)>,
    /// Every byte of the request as it arrived: request line, headers,
    /// framing, body and trailers.
    pub raw: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Every header and trailer name that a CGI/WSGI server would read as
    /// `HTTP_<prefix>…`: letter case ignored, `_` and `-` alike.
    pub fn names_like(&self, prefix: &str) -> Vec<String> {
        let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .chain(&self.trailers)
            .map(|(k, _)| k.clone())
            .filter(|k| fold(k).starts_with(&fold(prefix)))
            .collect()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// `200 licence ok`. It serves until the test process ends (its thread is
/// detached; the listener is closed with the process).
pub struct RecordingUpstream {
    pub port: u16,
    requests: std::sync::Arc<Mutex<Vec<Recorded>>>,
}

impl RecordingUpstream {
    pub fn start() -> RecordingUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let sink = sink.clone();
                thread::spawn(move || serve_recording(conn, &sink));
            }
        });
        RecordingUpstream { port, requests }
    }

    /// What has been received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads from `conn` into `buf` until `done(buf)` gives a length; `None`
/// when the connection ends first.
fn read_until(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Option<usize>,
) -> Option<usize> {
    loop {
        if let Some(n) = done(buf) {
            return Some(n);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Header or trailer fields, names lower-cased.
type Fields = Vec<(String, String)>;

/// A complete chunked body at the start of `buf`: (bytes used, body,
/// trailers).
fn chunked_body(buf: &[u8]) -> Option<(usize, Vec<u8>, Fields)> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let line_end = pos + find(&buf[pos..], b"\r\n")?;
        let size_text = String::from_utf8_lossy(&buf[pos..line_end]);
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            let mut trailers = Vec::new();
            loop {
                let end = pos + find(&buf[pos..], b"\r\n")?;
                if end == pos {
                    return Some((end + 2, body, trailers));
                }
                let line = String::from_utf8_lossy(&buf[pos..end]);
                if let Some((k, v)) = line.split_once(':') {
                    trailers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
                }
                pos = end + 2;
            }
        }
        body.extend_from_slice(buf.get(pos..pos + size)?);
        pos += size + 2;
        buf.get(pos - 2..pos)?;
    }
}

fn serve_recording(mut conn: TcpStream, sink: &Mutex<Vec<Recorded>>) {
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(head_end) =
            read_until(&mut conn, &mut buf, |b| find(b, b"\r\n\r\n").map(|i| i + 4))
        else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut start = lines.next().unwrap_or("").split(' ');
        let method = start.next().unwrap_or("").to_owned();
        let path = start.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        let (end, body, trailers) = if chunked {
            let Some(used) = read_until(&mut conn, &mut buf, |b| {
                chunked_body(&b[head_end..]).map(|(used, _, _)| used)
            }) else {
                return;
            };
            let (_, body, trailers) = chunked_body(&buf[head_end..]).unwrap();
            (head_end + used, body, trailers)
        } else {
            let length: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(0);
            let Some(end) = read_until(&mut conn, &mut buf, |b| {
                (b.len() >= head_end + length).then_some(head_end + length)
            }) else {
                return;
            };
            (end, buf[head_end..end].to_vec(), Vec::new())
        };
        let raw: Vec<u8> = buf.drain(..end).collect();
        sink.lock().unwrap().push(Recorded {
            method,
            path,
            headers,
            body,
            trailers,
            raw,
        });
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nlicence ok\n";
        if conn.write_all(reply).is_err() {
            return;
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 cleartext (prior knowledge): a minimal client

fn hpack_len(out: &mut Vec<u8>, len: usize) {
    if len < 127 {
        out.push(len as u8);
    } else {
        out.push(127);
        let mut rest = len - 127;
        while rest >= 128 {
            out.push((rest % 128) as u8 | 0x80);
            rest /= 128;
        }
        out.push(rest as u8);
    }
}

fn hpack_block(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in headers {
        block.push(0x00); // literal, not indexed, new name
        hpack_len(&mut block, name.len());
        block.extend_from_slice(name.as_bytes());
        hpack_len(&mut block, value.len());
        block.extend_from_slice(value.as_bytes());
    }
    block
}

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// One h2c request on 127.0.0.1:`port`: the pseudo-headers, then
/// `headers`, the body (if any) and trailers (if any; they end the stream).
/// Returns the first byte of the response header block (0x88 is HPACK's
/// indexed `:status: 200`) and the body.
pub fn h2c(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    trailers: &[(&str, &str)],
) -> (u8, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut all = vec![
        (":method", method),
        (":scheme", "http"),
        (":authority", "localhost"),
        (":path", path),
    ];
    all.extend_from_slice(headers);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(h2_frame(4, 0, 0, &[]));
    let ends_here = body.is_none() && trailers.is_empty();
    out.extend(h2_frame(
        1,
        0x4 | u8::from(ends_here),
        1,
        &hpack_block(&all),
    ));
    if let Some(body) = body {
        out.extend(h2_frame(0, u8::from(trailers.is_empty()), 1, body));
    }
    if !trailers.is_empty() {
        out.extend(h2_frame(1, 0x4 | 0x1, 1, &hpack_block(trailers)));
    }
    s.write_all(&out).unwrap();
    let (mut status, mut data) = (0u8, Vec::new());
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload).unwrap();
        match (kind, stream) {
            (4, 0) if flags & 1 == 0 => s.write_all(&h2_frame(4, 1, 0, &[])).unwrap(),
            (1, 1) => {
                status = payload[0];
                if flags & 1 == 1 {
                    return (status, data);
                }
            }
            (0, 1) => {
                data.extend_from_slice(&payload);
                if flags & 1 == 1 {
                    return (status, data);
                }
            }
            (3, 1) => panic!("RST_STREAM: {payload:?}"),
            (7, _) => panic!("GOAWAY: {payload:?}"),
            _ => {}
        }
    }
}

// ---------------------------------------------------------------------------
// `fpgen serve`, the token endpoint without Envoy

/// `fpgen serve` on a free loopback port with `config_json`, killed (and
/// its config file removed) when dropped.
pub struct Serve {
    pub port: u16,
    child: Child,
    config: PathBuf,
}

impl Serve {
    /// Starts it and waits until it answers.
    pub fn start(config_json: &str) -> Serve {
        let config = new_workdir().join("serve.json");
        std::fs::write(&config, config_json).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fpgen"));
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_tied_to_process(cmd).unwrap();
        let serve = Serve {
            port,
            child,
            config,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "fpgen serve did not start");
            thread::sleep(Duration::from_millis(20));
        }
        serve
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
