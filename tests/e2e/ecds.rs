//! Module upgrades as Istio delivers them: `envoy/ecds/bootstrap.yaml` gets
//! the fpgen filter through ECDS (extension config discovery) from a watched
//! file, and the test replaces that resource under steady GET and POST load:
//! a new module (a second build, reporting another build) with a new
//! configuration, then a new configuration alone, with zero failed
//! requests; tokens minted by the old module redeem on the new; a module
//! that does not load and a configuration fpgen refuses are rejected while
//! the running one keeps serving, visibly (ECDS stats, log lines).

use crate::common;

use crate::common::{resource, EcdsEnvoy, HttpResponse, KeepAlive};
use fpgen::stats::{BUILD, VERSION};
use serde_json::json;
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const NEW_KEY: &str = "2222222222222222222222222222222222222222222222222222222222222222";
/// What the stand-in licence server of `envoy/ecds/bootstrap.yaml` answers.
const LICENCE_BODY: &str = "licence server stand-in\n";

/// The demo configuration whose licence URLs name `host` (so that each
/// answer tells which configuration minted it), with the new sealing key
/// active when `rotated`.
fn config(host: &str, rotated: bool) -> serde_json::Value {
    let mut c = fpgen_fixtures::demo_json();
    c["redeem_url"]["host"] = format!("{host}.licences.test").into();
    if rotated {
        c["sealing_keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "2027-01", "key": NEW_KEY}));
        c["active_sealing_key"] = "2027-01".into();
    }
    c
}

/// What one load thread saw.
#[derive(Default, Debug)]
struct Seen {
    sent: usize,
    failed: Vec<String>,
    /// For minting threads: when each configuration generation (the
    /// licence URL's host `vN.licences.test`) was first answered, and any
    /// answer from an older generation after a newer one.
    first: [Option<Instant>; 10],
    went_back: usize,
}

/// A minting answer: 200 with a licence URL; its generation.
fn generation(r: &HttpResponse) -> Option<usize> {
    if r.status != 200 {
        return None;
    }
    let text = r.text();
    let rest = text.strip_prefix("http://v")?;
    let (n, rest) = rest.split_once('.')?;
    rest.starts_with("licences.test:10000/hms/fp/rights/?ExpressPlayToken=")
        .then(|| n.parse().ok())
        .flatten()
}

/// Steady load on keep-alive connections opened before the first swap:
/// GET mint, POST mint, and the licence request of a token minted by the
/// first module (through the gate to the stand-in).
fn load(port: u16, kind: usize, old_token: String, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut conn = KeepAlive::open(port);
    let query = fpgen_fixtures::query("");
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        let r = match kind {
            0 => conn.try_send("GET", &format!("/hms/fp/token?{query}"), &[], None),
            1 => conn.try_send(
                "POST",
                "/hms/fp/token",
                &[("Content-Type", "application/x-www-form-urlencoded")],
                Some(query.as_bytes()),
            ),
            _ => conn.try_send(
                "POST",
                &format!("/hms/fp/rights/?ExpressPlayToken={old_token}"),
                &[("Content-Type", "application/octet-stream")],
                Some(b"spc"),
            ),
        };
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                seen.sent += 1;
                seen.failed.push(format!(
                    "{:?} after {} requests: {e}",
                    Instant::now(),
                    seen.sent
                ));
                conn = KeepAlive::open(port);
                continue;
            }
        };
        seen.sent += 1;
        let ok = if kind < 2 {
            generation(&r).is_some_and(|n| {
                if n < last {
                    seen.went_back += 1;
                }
                last = last.max(n);
                if let Some(first) = seen.first.get_mut(n) {
                    first.get_or_insert_with(Instant::now);
                }
                true
            })
        } else {
            r.status == 200 && r.body == LICENCE_BODY.as_bytes()
        };
        if !ok && seen.failed.len() < 5 {
            seen.failed.push(format!("{r:?}"));
        } else if !ok {
            seen.failed.push(String::new());
        }
    }
    seen
}

#[test]
fn ecds_upgrades_module_and_configuration_under_load_and_refuses_broken_ones() {
    let (_, old_wasm) = common::tool_paths();
    let new_wasm = common::upgrade_wasm();
    let dir = common::new_workdir();
    let ecds = EcdsEnvoy::start(dir.clone(), &resource("1", &old_wasm, &config("v1", false)));
    let port = ecds.envoy.port;
    let new_build = format!("{VERSION}.{BUILD}-upgrade-test");
    assert_eq!(ecds.builds(), [format!("{VERSION}.{BUILD}")]);

    let old_url = ecds
        .envoy
        .get(&format!("/hms/fp/token?{}", fpgen_fixtures::query("")))
        .text();
    assert_eq!(
        generation(
            &ecds
                .envoy
                .get(&format!("/hms/fp/token?{}", fpgen_fixtures::query("")))
        ),
        Some(1)
    );
    let old_token = fpgen_fixtures::token_of_url(&old_url);

    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..3)
        .map(|kind| {
            let (stop, token) = (stop.clone(), old_token.clone());
            thread::spawn(move || load(port, kind, token, stop))
        })
        .collect();
    thread::sleep(Duration::from_millis(700));

    // 1. a new module (another build) with a new configuration: the new
    // sealing key active, the old one kept so old tokens still redeem
    let swapped = Instant::now();
    ecds.publish(&resource("2", &new_wasm, &config("v2", true)));
    let gauge_after = ecds.wait("the new module's build gauge", || {
        ecds.builds() == [new_build.clone()]
    });
    thread::sleep(Duration::from_millis(700));

    // 2. a module that does not load: rejected, the new one keeps serving
    let broken_wasm = dir.join("broken.wasm");
    let bytes = fs::read(&new_wasm).unwrap();
    fs::write(&broken_wasm, &bytes[..bytes.len() / 2]).unwrap();
    // (the rejected updates name hosts v8 and v9: neither may ever answer)
    ecds.publish(&resource("3", &broken_wasm, &config("v8", true)));
    ecds.wait("the broken module's rejection", || {
        ecds.ecds_stat("update_rejected") == 1
    });
    thread::sleep(Duration::from_millis(500));

    // 3. a configuration fpgen refuses: rejected, named in fpgen's log line
    let mut refused = config("v9", true);
    refused["sealing_keys"][1]["key"] = "00".into();
    ecds.publish(&resource("4", &new_wasm, &refused));
    ecds.wait("the refused configuration's rejection", || {
        ecds.ecds_stat("update_rejected") == 2
    });
    thread::sleep(Duration::from_millis(500));
    assert_eq!(
        ecds.builds(),
        std::slice::from_ref(&new_build),
        "a rejected update changed the module"
    );

    // 4. a new configuration alone, same module
    let reconfigured = Instant::now();
    ecds.publish(&resource("5", &new_wasm, &config("v3", true)));
    ecds.wait("the third configuration", || {
        generation(
            &ecds
                .envoy
                .get(&format!("/hms/fp/token?{}", fpgen_fixtures::query(""))),
        ) == Some(3)
    });
    thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    // zero failures, every generation served in order, old tokens redeemed
    let names = ["GET mint", "POST mint", "licence POST (old token)"];
    for (name, s) in names.iter().zip(&seen) {
        assert!(
            s.failed.is_empty(),
            "{name}: {} of {} failed: {:?}",
            s.failed.len(),
            s.sent,
            s.failed
        );
        assert!(s.sent > 50, "{name}: too little load ({})", s.sent);
    }
    for (name, s) in names.iter().zip(&seen).take(2) {
        assert_eq!(
            s.went_back, 0,
            "{name}: an older configuration answered after a newer one"
        );
        assert!(
            s.first[1].is_some() && s.first[2].is_some() && s.first[3].is_some(),
            "{name}: {:?}",
            s.first
        );
        assert!(
            s.first[8].is_none() && s.first[9].is_none(),
            "{name}: a rejected update answered"
        );
        // each generation first answered after its update was published
        assert!(s.first[2] >= Some(swapped) && s.first[3] >= Some(reconfigured));
        assert!(s.first[1] < Some(swapped));
    }
    let took = |n: usize, since: Instant| {
        seen.iter()
            .take(2)
            .filter_map(|s| s.first[n])
            .max()
            .map(|t| t.duration_since(since))
    };
    let (module_swap, config_swap) = (took(2, swapped).unwrap(), took(3, reconfigured).unwrap());

    // visible: ECDS stats, Envoy's and fpgen's log lines, the accepted version
    let log = ecds.envoy.envoy_log();
    for line in [
        format!("fpgen {VERSION} ({BUILD}-upgrade-test): configured:"),
        "Filesystem config update rejected: Unable to create Wasm plugin fpgen".to_owned(),
        format!(
            "fpgen {VERSION} ({BUILD}-upgrade-test): invalid fpgen configuration: sealing_keys[1].key: expected 64 hex digits"
        ),
    ] {
        assert!(log.contains(&line), "no {line:?} in\n{}", common::tail(&log, 40));
    }
    assert_eq!(ecds.ecds_stat("update_success"), 3);
    assert_eq!(ecds.ecds_stat("update_rejected"), 2);
    let dump = ecds
        .envoy
        .admin_get("/config_dump?resource=ecds_filters")
        .text();
    assert!(dump.contains("\"version_info\": \"5\""), "{dump}");

    // tokens of the first module redeem on the new; new ones name the new key
    let r = common::licence_request(
        &ecds.envoy,
        &format!("/hms/fp/rights/?ExpressPlayToken={old_token}"),
        &[],
        b"spc",
    );
    assert_eq!((r.status, r.text()), (200, LICENCE_BODY.to_owned()));
    let new_url = ecds
        .envoy
        .get(&format!("/hms/fp/token?{}", fpgen_fixtures::query("")))
        .text();
    assert_eq!(
        common::key_id(&fpgen_fixtures::token_of_url(&new_url)).as_deref(),
        Some("2027-01")
    );

    let sent: usize = seen.iter().map(|s| s.sent).sum();
    eprintln!(
        "ecds: {sent} requests ({} GET mint, {} POST mint, {} licence POST) during 4 updates, 0 failed; \
         new module answered {module_swap:?} after the resource moved (build gauge {gauge_after:?}), \
         new configuration {config_swap:?}",
        seen[0].sent, seen[1].sent, seen[2].sent
    );
    drop(ecds);
    let _ = fs::remove_dir_all(&dir);
}

/// `envoy/ecds/bootstrap.yaml` with its own resource, `envoy/ecds/fpgen.yaml`,
/// as shipped: the filter arrives through ECDS, mints on the token route
/// and gates the licence route, and Envoy reports the resource's version.
#[test]
fn the_shipped_ecds_configuration_mints_and_gates() {
    let (_, wasm) = common::tool_paths();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = fs::read_to_string(root.join("envoy/ecds/fpgen.yaml")).unwrap();
    let module = "filename: target/wasm32-wasip1/release/fpgen.wasm";
    assert!(shipped.contains(module));
    let resource = shipped.replace(module, &format!("filename: {}", wasm.display()));
    let dir = common::new_workdir();
    let ecds = EcdsEnvoy::start(dir.clone(), &resource);
    let url = ecds
        .envoy
        .get(&format!("/hms/fp/token?{}", fpgen_fixtures::query("")))
        .text();
    let token = fpgen_fixtures::token_of_url(&url);
    let licence = format!("/hms/fp/rights/?ExpressPlayToken={token}");
    let r = common::licence_request(&ecds.envoy, &licence, &[], b"spc");
    assert_eq!((r.status, r.text()), (200, LICENCE_BODY.to_owned()));
    let forged = "/hms/fp/rights/?ExpressPlayToken=forged";
    assert_eq!(
        common::licence_request(&ecds.envoy, forged, &[], b"spc").status,
        403
    );
    assert_eq!(ecds.ecds_stat("update_success"), 1);
    let dump = ecds
        .envoy
        .admin_get("/config_dump?resource=ecds_filters")
        .text();
    assert!(dump.contains("\"version_info\": \"demo-1\""), "{dump}");
    drop(ecds);
    let _ = fs::remove_dir_all(&dir);
}
