//! A real Envoy with the fpgen module, on free loopback ports.

use super::bootstrap::{bootstrap, lds_resource, with_lds, PASSTHROUGH_BODY};
use super::http::{exchange, get, request_bytes, HttpResponse};
use super::process::{
    log_dir_for, log_file, new_workdir, spawn_tied_to_process, tail, tool_paths, Module,
};
use super::DEMO_CONFIG;
use std::fmt;
use std::fs;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// The environment the shipped configurations read secrets from
/// (`envoy/gate.yaml`'s sealing keys), with the values the tests use.
pub const SHIPPED_ENV: [(&str, &str); 2] = [
    (
        "FPGEN_SEALING_KEY_2026_11",
        "1111111111111111111111111111111111111111111111111111111111111111",
    ),
    (
        "FPGEN_SEALING_KEY_2027_01",
        "2222222222222222222222222222222222222222222222222222222222222222",
    ),
];

/// How long Envoy may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect, read and write timeout of the HTTP client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The same, for one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// How an Envoy is started. [`Options::of`] a module is what
/// [`Envoy::start`] uses. A test names its module: the shared suites' copy
/// of each module binds it lexically (`this_module!()`, `tests/e2e/main.rs`).
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
    /// configuration ([`hardened_hcm`](super::hardened_hcm): path normalisation, merged slashes,
    /// escaped slashes refused, underscore headers dropped). `false` shows
    /// what the filter alone holds, for an operator who left them out.
    pub hardened: bool,
    /// The filter scoped to its routes as in every shipped configuration:
    /// `disabled: true` in the HCM, enabled on the token route and the
    /// licence route. `false` (the default) runs it on every request.
    pub scoped: bool,
    /// Variables set in Envoy's environment and handed to the VM
    /// (`vm_config.environment_variables.host_env_keys`), for secrets given
    /// as `{"env": …}`.
    pub host_env: Vec<(String, String)>,
    /// When set, a cluster `ratelimit` (HTTP/2) at 127.0.0.1:port, for the
    /// configuration's `rate_limit_service` (e.g. a [`Service`](super::Service)).
    pub ratelimit_port: Option<u16>,
    /// When set, the `ratelimit` cluster speaks TLS, trusting the authority
    /// of the first file and presenting the certificate and key of the
    /// other two (mutual TLS).
    pub ratelimit_tls: Option<[PathBuf; 3]>,
    /// A second listener on this port, with this filter configuration (two
    /// configurations in one Envoy, as `envoy/two-environments.yaml` runs
    /// a test and a production one).
    pub second_listener: Option<(String, u16)>,
    /// The module Envoy runs.
    pub module: Module,
    /// Another Envoy executable than `FPGEN_ENVOY`'s (a test's copy).
    pub envoy_bin: Option<PathBuf>,
}

impl Options {
    /// The defaults, for an Envoy running `module`.
    pub fn of(module: Module) -> Self {
        Options {
            concurrency: 1,
            log_level: "info",
            failure_policy: "FAIL_RELOAD",
            upstream_port: None,
            dynamic: false,
            ready_timeout: READY_TIMEOUT,
            hardened: true,
            scoped: false,
            host_env: Vec::new(),
            ratelimit_port: None,
            ratelimit_tls: None,
            second_listener: None,
            module,
            envoy_bin: None,
        }
    }

    /// The defaults with `n` worker threads.
    pub fn concurrency(module: Module, n: u32) -> Self {
        Options {
            concurrency: n,
            ..Options::of(module)
        }
    }

    /// The defaults, with `/hms/fp/rights/` routed to 127.0.0.1:`port`.
    pub fn upstream(module: Module, port: u16) -> Self {
        Options {
            upstream_port: Some(port),
            ..Options::of(module)
        }
    }

    /// The same with the filter scoped to its routes.
    pub fn scoped(mut self) -> Self {
        self.scoped = true;
        self
    }

    /// The same with `vars` in Envoy's environment, handed to the VM.
    pub fn host_env(mut self, vars: &[(&str, &str)]) -> Self {
        self.host_env = vars
            .iter()
            .map(|&(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        self
    }

    /// The same with a `ratelimit` cluster reaching 127.0.0.1:`port`.
    pub fn ratelimit(mut self, port: u16) -> Self {
        self.ratelimit_port = Some(port);
        self
    }

    /// The same with the `ratelimit` cluster over mutual TLS: `pki`'s
    /// authority trusted, its `identity` certificate presented.
    pub fn ratelimit_tls(mut self, pki: &super::Pki, identity: &str) -> Self {
        self.ratelimit_tls = Some([
            pki.path("ca.pem"),
            pki.path(&format!("{identity}.pem")),
            pki.path(&format!("{identity}.key")),
        ]);
        self
    }

    /// The same without the HCM hardening: the filter is the only wall.
    pub fn unhardened(mut self) -> Self {
        self.hardened = false;
        self
    }
}

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
    /// The module it runs (stat names differ).
    pub module: Module,
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
        lds_resource(
            &self.wasm,
            filter_config_json,
            &self.options,
            &self.access_log,
            self.port,
        )
        .to_string()
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
    pub fn start(module: Module, filter_config_json: &str) -> Envoy {
        Envoy::start_with(filter_config_json, &Options::of(module))
    }

    /// [`Envoy::start`] with options (e.g. `Options::concurrency(module, 2)`).
    pub fn start_with(filter_config_json: &str, options: &Options) -> Envoy {
        match Envoy::try_start_with(filter_config_json, options) {
            Ok(envoy) => envoy,
            Err(log) => panic!("Envoy did not start:\n{}", tail(&log, 80)),
        }
    }

    /// Starts Envoy; `Err` holds Envoy's whole log (and its stderr) when it
    /// exits or is not ready in time. For configurations that Envoy must
    /// reject. Panics only when Envoy or the module cannot be found.
    pub fn try_start(module: Module, filter_config_json: &str) -> Result<Envoy, String> {
        Envoy::try_start_with(filter_config_json, &Options::of(module))
    }

    /// [`Envoy::try_start`] with options.
    pub fn try_start_with(filter_config_json: &str, options: &Options) -> Result<Envoy, String> {
        let envoy_bin = options.envoy_bin.clone().unwrap_or_else(|| tool_paths().0);
        let wasm = options.module.path();
        let workdir = new_workdir();
        let logdir = log_dir_for(&workdir);
        let bootstrap_file = workdir.join("envoy.json");
        let mut config = bootstrap(
            &wasm,
            filter_config_json,
            options,
            &logdir.join("access.log"),
        );
        let dynamic = options.dynamic.then(|| {
            let port = free_port();
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
            config = with_lds(config.take(), &d.lds_dir);
            d
        });
        fs::write(&bootstrap_file, config.to_string())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", bootstrap_file.display()));

        let mut cmd = envoy_command(
            &envoy_bin,
            &bootstrap_file,
            options.concurrency,
            options.log_level,
            &workdir,
            &logdir,
        );
        cmd.current_dir(&workdir);
        cmd.envs(options.host_env.iter().map(|(k, v)| (k, v)));
        if let (Module::Native, Some(dir)) = (options.module, wasm.parent()) {
            cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
        }
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
            module: options.module,
        };
        envoy.wait_ready(options.ready_timeout)?;
        Ok(envoy)
    }

    /// Runs a shipped configuration (`file`, relative to the project, e.g.
    /// `envoy/gate.yaml`) with each `port_value: from` of `ports` changed to
    /// `to` (its admin port to 0, its listeners to free ports) and the
    /// module of [`tool_paths`]. The first listener's `to` is the one
    /// waited on.
    pub fn start_shipped(file: &str, ports: &[(u16, u16)]) -> Envoy {
        Envoy::start_shipped_env(file, ports, &SHIPPED_ENV)
    }

    /// [`Envoy::start_shipped`] with `env` as Envoy's environment variables
    /// (for the files that read secrets from them).
    pub fn start_shipped_env(file: &str, ports: &[(u16, u16)], env: &[(&str, &str)]) -> Envoy {
        Envoy::start_shipped_workers(file, ports, env, 1)
    }

    /// [`Envoy::start_shipped_env`] with `workers` worker threads.
    pub fn start_shipped_workers(
        file: &str,
        ports: &[(u16, u16)],
        env: &[(&str, &str)],
        workers: u32,
    ) -> Envoy {
        let (_, wasm) = tool_paths();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let mut yaml = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .replace(
                "target/wasm32-wasip1/release/fpgen.wasm",
                &wasm.display().to_string(),
            );
        for (from, to) in ports {
            let (from, to) = (format!("port_value: {from}"), format!("port_value: {to}"));
            assert!(yaml.contains(&from), "{file} has no {from}");
            yaml = yaml.replace(&from, &to);
        }
        let listener = ports.iter().map(|&(_, to)| to).find(|&p| p != 0);
        let port = listener.expect("a listener port");
        Envoy::start_yaml_workers(&yaml, port, "info", env, workers)
    }

    /// Runs a configuration file as it is (e.g. one of `envoy/`), with its
    /// admin port set to 0 by the caller and `port` as its listener (the
    /// caller puts it in the text). Logs go where the harness's go, so the
    /// secrets audit reads them too.
    pub fn start_yaml(yaml: &str, port: u16, log_level: &str) -> Envoy {
        Envoy::start_yaml_env(yaml, port, log_level, &[])
    }

    /// [`Envoy::start_yaml`] with `env` in Envoy's environment.
    pub fn start_yaml_env(yaml: &str, port: u16, log_level: &str, env: &[(&str, &str)]) -> Envoy {
        Envoy::start_yaml_workers(yaml, port, log_level, env, 1)
    }

    /// [`Envoy::start_yaml_env`] with `workers` worker threads.
    pub fn start_yaml_workers(
        yaml: &str,
        port: u16,
        log_level: &str,
        env: &[(&str, &str)],
        workers: u32,
    ) -> Envoy {
        let (envoy_bin, _) = tool_paths();
        let workdir = new_workdir();
        let logdir = log_dir_for(&workdir);
        let config = workdir.join("envoy.yaml");
        fs::write(&config, yaml).unwrap();
        // relative paths in the file (the module) are from the project root
        let mut cmd = envoy_command(&envoy_bin, &config, workers, log_level, &workdir, &logdir);
        cmd.current_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
        cmd.envs(env.iter().copied());
        // a shipped file of the native module (envoy/native.yaml) finds it
        // as lib<name>.so in the search path: the test build's directory
        let module = if yaml.contains("filters.http.dynamic_modules") {
            Module::Native
        } else {
            Module::Wasm
        };
        if let (Module::Native, Some(dir)) = (module, Module::Native.path().parent()) {
            cmd.env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir);
        }
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
            module,
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
    /// listener port known, and `GET /passthrough` answers 200
    /// "passthrough ok" (through the filter, which passes other paths on,
    /// unless the Envoy is scoped: then the route does not enable it).
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
            self.port = listener_port(&listeners.text())
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

    /// Envoy's log once it holds `needle` (Envoy flushes it every 50 ms,
    /// so a line logged just now may not be in the file yet); the log as it
    /// is after 5 s without it.
    pub fn envoy_log_with(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.envoy_log();
            if log.contains(needle) || Instant::now() >= deadline {
                return log;
            }
            thread::sleep(Duration::from_millis(50));
        }
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
        let name = &self.module.stat_name(name);
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

/// The Envoy shared by the tests of one test binary that run one module
/// (`module`), with [`DEMO_CONFIG`], started on first use.
/// It is never dropped; it dies with the test process. If it cannot start,
/// every test that asks for it fails with the reason.
pub fn shared(module: Module) -> &'static Envoy {
    static WASM: OnceLock<Result<Envoy, String>> = OnceLock::new();
    static NATIVE: OnceLock<Result<Envoy, String>> = OnceLock::new();
    let shared = match module {
        Module::Wasm => &WASM,
        Module::Native => &NATIVE,
    };
    match shared.get_or_init(|| Envoy::try_start(module, DEMO_CONFIG)) {
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

/// The port of the first listener in Envoy's `/listeners?format=json`
/// (`None` while it is 0 or absent).
fn listener_port(json: &str) -> Option<u16> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let port = &v["listener_statuses"][0]["local_address"]["socket_address"]["port_value"];
    port.as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .filter(|&p| p != 0)
}

/// A port that was free a moment ago on 127.0.0.1, never handed out twice
/// by this test process.
///
/// It is taken below Linux's ephemeral range (32768–60999): a port the
/// kernel hands out for `bind(0)` is also what it hands to the next
/// outgoing connection, and with load generators and hundreds of clients
/// running beside the test, one of them took a port between its release
/// here and the server's bind (a CI run lost `fpgen ratelimit` that way).
/// Each test process starts at an offset of its own, so two test binaries
/// run side by side seldom try the same ports, and every port is checked
/// free before it is handed out.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 20_000; // 12000..32000, below the ephemeral range
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        let port = u16::try_from(FIRST + offset).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port on 127.0.0.1 between {FIRST} and {}",
        FIRST + SPAN
    )
}
