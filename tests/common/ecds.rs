//! The shipped ECDS Envoy (`envoy/ecds/bootstrap.yaml`) with its resource
//! in a directory of the test's, which the test replaces.

use super::bootstrap::{native_typed_config, wasm_typed_config};
use super::envoy::{free_port, Envoy, Options};
use super::process::Module;
use serde_json::json;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

/// The ECDS stats of the filter named `fpgen`.
const ECDS: &str = "extension_config_discovery.http_filter.fpgen";

/// The ECDS resource file: a DiscoveryResponse with the filter's whole
/// configuration, as `envoy/ecds/fpgen.yaml` has it (JSON is YAML).
pub fn resource(version: &str, wasm: &Path, config: &serde_json::Value) -> String {
    let plugin = wasm_typed_config(wasm, &config.to_string(), &Options::of(Module::Wasm));
    json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "fpgen",
            "typed_config": plugin,
        }],
    })
    .to_string()
}

/// Replaces the resource in `dir` atomically (a rename in the watched
/// directory, as Envoy's file watch wants).
fn publish(dir: &Path, resource: &str) {
    let tmp = dir.join(".fpgen.yaml.tmp");
    fs::write(&tmp, resource).unwrap();
    fs::rename(&tmp, dir.join("fpgen.yaml")).unwrap();
}

/// The shipped ECDS Envoy, its resource in `dir`.
pub struct EcdsEnvoy {
    pub envoy: Envoy,
    pub dir: PathBuf,
}

/// The ECDS resource for the native module: its filter's `typed_config`
/// (what [`EcdsEnvoy::start_native`] accepts).
pub fn native_resource(version: &str, config: &serde_json::Value) -> String {
    json!({
        "version_info": version,
        "resources": [{
            "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
            "name": "fpgen",
            "typed_config": native_typed_config(&config.to_string()),
        }],
    })
    .to_string()
}

impl EcdsEnvoy {
    pub fn start(dir: PathBuf, first: &str) -> EcdsEnvoy {
        Self::start_edited(dir, first, &[])
    }

    /// The shipped ECDS Envoy with the native module's filter type in place
    /// of the Wasm one (its first resource from [`native_resource`]).
    pub fn start_native(dir: PathBuf, first: &str) -> EcdsEnvoy {
        let wasm = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
        let native = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
        Self::start_edited(dir, first, &[(wasm, native)])
    }

    fn start_edited(dir: PathBuf, first: &str, edits: &[(&str, &str)]) -> EcdsEnvoy {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut shipped = fs::read_to_string(root.join("envoy/ecds/bootstrap.yaml")).unwrap();
        for (from, to) in edits {
            assert!(
                shipped.contains(from),
                "envoy/ecds/bootstrap.yaml has no {from}"
            );
            shipped = shipped.replace(from, to);
        }
        let port = free_port();
        let yaml = [
            (
                "path: envoy/ecds/fpgen.yaml",
                format!("path: {}/fpgen.yaml", dir.display()),
            ),
            ("path: envoy/ecds }", format!("path: {} }}", dir.display())),
            ("port_value: 10014", format!("port_value: {port}")),
            ("port_value: 9914", "port_value: 0".to_owned()),
        ]
        .iter()
        .fold(shipped, |text, (from, to)| {
            assert!(
                text.contains(from),
                "envoy/ecds/bootstrap.yaml has no {from}"
            );
            text.replace(from, to)
        });
        publish(&dir, first);
        EcdsEnvoy {
            envoy: Envoy::start_yaml(&yaml, port, "info"),
            dir,
        }
    }

    pub fn publish(&self, resource: &str) {
        publish(&self.dir, resource);
    }

    pub fn ecds_stat(&self, name: &str) -> u64 {
        self.envoy.stat(&format!("{ECDS}.{name}")).unwrap_or(0)
    }

    /// The build gauges in `/stats`: `<version>.<build>` of each.
    pub fn builds(&self) -> Vec<String> {
        let prefix = "wasmcustom.fpgen.build.";
        self.envoy
            .admin_get(&format!("/stats?filter=^{prefix}"))
            .text()
            .lines()
            .filter_map(|l| {
                l.strip_prefix(prefix)?
                    .split_once(": ")
                    .map(|(b, _)| b.to_owned())
            })
            .collect()
    }

    /// Waits until `done` holds (10 s at most).
    pub fn wait(&self, what: &str, done: impl Fn() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what}: not after 10 s\n{}",
                super::tail(&self.envoy.envoy_log(), 30)
            );
            thread::sleep(Duration::from_millis(5));
        }
        start.elapsed()
    }
}
