//! The fleet-budget parts: Redis on a free loopback port and `fpgen
//! ratelimit` on it, both killed when dropped.

use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed when dropped.
pub struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Redis on a free loopback port, nothing persisted; `make test` names the
/// binary in FPGEN_REDIS (`make redis`). With a password (`requirepass`)
/// and over TLS (its port speaks only TLS) when asked.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    password: Option<String>,
    tls: Option<(PathBuf, PathBuf)>,
    durable: bool,
    process: Option<Process>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None, None)
    }

    /// With `requirepass password`, and TLS with the server certificate of
    /// `pki` (clients not asked for one).
    pub fn start_with(password: Option<&str>, pki: Option<&super::Pki>) -> Redis {
        let mut redis = Redis::unstarted();
        redis.password = password.map(str::to_owned);
        redis.tls = pki.map(|p| (p.path("server.pem"), p.path("server.key")));
        redis.restart();
        redis
    }

    /// Its port and directory, not started yet ([`Redis::restart`] starts it).
    pub fn unstarted() -> Redis {
        Redis {
            port: super::free_port(),
            dir: super::new_workdir(),
            password: None,
            tls: None,
            durable: false,
            process: None,
        }
    }

    /// Started with every write in its append-only file before it is
    /// acknowledged (`appendfsync always`): killed and restarted, it has
    /// every count it answered.
    pub fn start_durable() -> Redis {
        let mut redis = Redis::unstarted();
        redis.durable = true;
        redis.restart();
        redis
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        let bin = std::env::var("FPGEN_REDIS").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        let port = self.port.to_string();
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((cert, key)) => cmd
                .args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key),
        };
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let appendonly = if self.durable { "yes" } else { "no" };
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", appendonly])
            .args(["--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = super::spawn_tied_to_process(cmd)
            .unwrap_or_else(|e| panic!("cannot run {bin} (make redis): {e}"));
        self.process = Some(Process(child));
        wait_for_port(self.port, "redis-server");
    }

    pub fn stop(&mut self) {
        self.process = None;
    }

    /// Its URL, without the password.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }
}

/// How to start `fpgen ratelimit` beyond its addresses: arguments and
/// environment variables.
#[derive(Default)]
pub struct ServiceArgs {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl ServiceArgs {
    /// `--redis <url of redis>`.
    pub fn on(redis: &Redis) -> ServiceArgs {
        ServiceArgs::default().arg("--redis").arg(&redis.url())
    }

    pub fn arg(mut self, arg: &str) -> ServiceArgs {
        self.args.push(arg.to_owned());
        self
    }

    /// Mutual TLS with `pki`'s server certificate, clients of its
    /// authority alone.
    pub fn mutual_tls(self, pki: &super::Pki) -> ServiceArgs {
        let path = |f: &str| pki.path(f).to_str().unwrap().to_owned();
        self.arg("--tls-cert")
            .arg(&path("server.pem"))
            .arg("--tls-key")
            .arg(&path("server.key"))
            .arg("--tls-client-ca")
            .arg(&path("ca.pem"))
    }

    pub fn env(mut self, name: &str, value: &str) -> ServiceArgs {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }
}

/// `fpgen ratelimit` on free ports, its standard error in a file of its own.
pub struct Service {
    pub port: u16,
    pub admin: u16,
    stderr: PathBuf,
    process: Process,
}

impl Service {
    pub fn start(redis: &Redis) -> Service {
        let service = Service::launch(ServiceArgs::on(redis));
        service.wait_until_ready();
        service
    }

    /// Waits (10 s at most) until its `/ready` answers 200: its link to
    /// Redis answers a ping, so a first call is served (listening alone is
    /// not enough: on a loaded machine a call made at once could find the
    /// link not up yet and get UNAVAILABLE).
    pub fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while super::get(self.admin, "/ready").status != 200 {
            assert!(
                Instant::now() < deadline,
                "fpgen ratelimit not ready within 10 s: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// With `args` after `--listen`, `--admin` and `--redis-timeout-ms 500`.
    pub fn launch(args: ServiceArgs) -> Service {
        let (port, admin) = (super::free_port(), super::free_port());
        let stderr = super::new_workdir().join("ratelimit.stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fpgen"));
        cmd.arg("ratelimit")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--redis-timeout-ms", "500"])
            .args(&args.args)
            .env_remove("FPGEN_REDIS_URL")
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap());
        let mut service = Service {
            port,
            admin,
            stderr,
            process: Process(super::spawn_tied_to_process(cmd).unwrap()),
        };
        service.wait_until_listening();
        service
    }

    /// Waits (20 s at most) until both its ports take connections; fails
    /// with its standard error as soon as it has exited.
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        for port in [self.port, self.admin] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                if let Ok(Some(status)) = self.process.0.try_wait() {
                    panic!("fpgen ratelimit exited ({status}): {}", self.stderr());
                }
                assert!(
                    Instant::now() < deadline,
                    "fpgen ratelimit did not listen on {port}: {}",
                    self.stderr()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// What it has written on standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Its command line as the kernel shows it to every local user.
    pub fn cmdline(&self) -> String {
        let raw = std::fs::read(format!("/proc/{}/cmdline", self.process.0.id())).unwrap();
        String::from_utf8_lossy(&raw).replace('\0', " ")
    }

    /// Waits (`seconds` at most) until its log holds `text`.
    pub fn wait_for_log(&self, text: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let log = self.stderr();
            if log.contains(text) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub async fn client(&self) -> RateLimitServiceClient<tonic::transport::Channel> {
        RateLimitServiceClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }

    /// A client over TLS that trusts `pki`'s authority and presents the
    /// certificate `identity` (`"client"`, `"stranger"`) or none.
    pub async fn tls_client(
        &self,
        pki: &super::Pki,
        identity: Option<&str>,
    ) -> Result<RateLimitServiceClient<tonic::transport::Channel>, tonic::transport::Error> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pki.read("ca.pem")))
            .domain_name("localhost");
        if let Some(name) = identity {
            tls = tls.identity(Identity::from_pem(
                pki.read(&format!("{name}.pem")),
                pki.read(&format!("{name}.key")),
            ));
        }
        let channel =
            tonic::transport::Channel::from_shared(format!("https://127.0.0.1:{}", self.port))
                .unwrap()
                .tls_config(tls)?
                .connect()
                .await?;
        Ok(RateLimitServiceClient::new(channel))
    }

    pub fn stat(&self, name: &str) -> u64 {
        let text = super::get(self.admin, "/stats").text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("fpgen_ratelimit.{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}
