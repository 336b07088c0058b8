//! `fpgen serve`, the token endpoint without Envoy.

use super::envoy::{free_port, READY_TIMEOUT};
use super::process::{new_workdir, spawn_tied_to_process};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

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
        let port = free_port();
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
