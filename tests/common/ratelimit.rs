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
/// binary in FPGEN_REDIS (`make redis`).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    process: Option<Process>,
}

impl Redis {
    pub fn start() -> Redis {
        let mut redis = Redis {
            port: super::free_port(),
            dir: super::new_workdir(),
            process: None,
        };
        redis.restart();
        redis
    }

    /// Starts it (again) on the same port.
    pub fn restart(&mut self) {
        let bin = std::env::var("FPGEN_REDIS").unwrap_or_else(|_| "redis-server".into());
        let mut cmd = Command::new(&bin);
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
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

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

/// `fpgen ratelimit` on free ports, on `redis`.
pub struct Service {
    pub port: u16,
    pub admin: u16,
    _process: Process,
}

impl Service {
    pub fn start(redis: &Redis) -> Service {
        let (port, admin) = (super::free_port(), super::free_port());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_fpgen"));
        cmd.arg("ratelimit")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin", &format!("127.0.0.1:{admin}")])
            .args(["--redis", &redis.url(), "--redis-timeout-ms", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let process = Process(super::spawn_tied_to_process(cmd).unwrap());
        wait_for_port(port, "fpgen ratelimit");
        wait_for_port(admin, "fpgen ratelimit's admin");
        Service {
            port,
            admin,
            _process: process,
        }
    }

    pub async fn client(&self) -> RateLimitServiceClient<tonic::transport::Channel> {
        RateLimitServiceClient::connect(format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap()
    }

    pub fn stat(&self, name: &str) -> u64 {
        let text = super::get(self.admin, "/stats").text();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("fpgen_ratelimit.{name}: ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }
}
