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
        Serve::start_with(config_json, &[], None)
    }

    /// [`Serve::start`] with more arguments, and with at most `open_files`
    /// file descriptors (`ulimit -n`) when given. Its standard error goes
    /// to a file ([`Serve::stderr`]).
    pub fn start_with(config_json: &str, args: &[&str], open_files: Option<u32>) -> Serve {
        let config = new_workdir().join("serve.json");
        std::fs::write(&config, config_json).unwrap();
        let stderr = std::fs::File::create(config.with_file_name("stderr.log")).unwrap();
        let port = free_port();
        let fpgen = env!("CARGO_BIN_EXE_fpgen");
        let mut cmd = match open_files {
            // the shell lowers its own limit, then becomes fpgen
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), fpgen]);
                sh
            }
            None => Command::new(fpgen),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
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

impl Serve {
    /// What it wrote to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.config.with_file_name("stderr.log")).unwrap_or_default()
    }

    /// Its configuration file.
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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
