//! The configuration's unit tests.
use super::*;

/// The demo configuration of the shared test fixtures (the
/// `fpgen-fixtures` crate cannot be used here: it links the library
/// built without `cfg(test)`).
const DEMO_CONFIG: &str = include_str!("../../../tests/fixtures/demo-config.json");
const SEALING_KEY_HEX: &str = "a88deb5c6fc4b09434f9dab3a25f79cd7ddf67a025c179c9a9b6153dbf56f132";

/// The demo configuration with a second, production customer and the
/// gate off (the shape most of these tests edit).
fn demo_with(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(DEMO_CONFIG).unwrap();
    assert_eq!(v["sealing_keys"][0]["key"], SEALING_KEY_HEX);
    let authenticator = v["customers"][0]["authenticator_sha256"].clone();
    let second = serde_json::json!({"id": "200002", "environment": "production",
        "authenticator_sha256": authenticator});
    v["customers"].as_array_mut().unwrap().push(second);
    v.as_object_mut().unwrap().remove("redemption");
    edit(&mut v);
    v.to_string()
}

fn err(json: &str) -> ConfigError {
    Config::from_json(json.as_bytes()).unwrap_err().0.remove(0)
}

#[test]
fn every_value_problem_is_reported() {
    let json = demo_with(|v| {
        v["sealing_keys"][0]["key"] = "00".into();
        v["customers"][0]["kek"] = "nope".into();
        v["customers"][1]["authenticator_sha256"] = "zz".into();
        v["max_body_bytes"] = 0.into();
    });
    let errors = Config::from_json(json.as_bytes()).unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "sealing_keys[0].key",
            "customers[0].kek",
            "customers[1].authenticator_sha256",
            "max_body_bytes"
        ]
    );
    assert!(errors.to_string().contains("; "), "{errors}");
}

#[test]
fn every_problem_of_every_section_is_reported() {
    let json = demo_with(|v| {
        v["sealing_keys"] = serde_json::json!([
            {"id": "a b", "key": "00"},
            {"id": "ok", "key": "zz"}
        ]);
        v["active_sealing_key"] = "ok".into();
        v["redeem_url"] = serde_json::json!({"scheme": "ftp", "port": 0, "path": "x"});
        v["redemption"] =
            serde_json::json!({"path_prefix": "x", "header_prefix": "X", "error_format": "xml"});
    });
    let errors = Config::from_json(json.as_bytes()).unwrap_err();
    let fields: Vec<&str> = errors.0.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "redeem_url.scheme",
            "redeem_url.port",
            "redeem_url.path",
            "sealing_keys[0].id",
            "sealing_keys[0].key",
            "sealing_keys[1].key",
            "redemption.path_prefix",
            "redemption.header_prefix",
            "redemption.error_format",
        ]
    );
}

/// A reader that hands over at most 7 bytes a call, like Envoy handing
/// the configuration over in chunks that split tokens.
struct Trickle<'a>(&'a [u8]);

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(7).min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn a_configuration_read_in_pieces_is_the_same_configuration() {
    let json = demo_with(|v| {
        let store = &mut v["customers"][0]["key_store"];
        store["^named-key"] = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
    });
    let whole = Config::from_json(json.as_bytes()).unwrap();
    let pieces = Config::from_reader(Trickle(json.as_bytes())).unwrap();
    assert_eq!(whole.summary(), pieces.summary());
    assert_eq!(whole.customers.len(), pieces.customers.len());
    for (id, c) in &whole.customers {
        let p = &pieces.customers[id];
        assert_eq!(c.key_store, p.key_store);
        assert_eq!(c.authenticator_sha256, p.authenticator_sha256);
    }
    assert_eq!(pieces.customers["100001"].key_store.len(), 2);
    // and the errors, with their fields
    let bad = demo_with(|v| v["customers"][0]["key_store"]["zz"] = "00".into());
    assert_eq!(
        Config::from_json(bad.as_bytes()).unwrap_err(),
        Config::from_reader(Trickle(bad.as_bytes())).unwrap_err()
    );
    let shape = demo_with(|v| v["customers"][0]["key_store"]["aa"] = 5.into());
    let e = Config::from_reader(Trickle(shape.as_bytes())).unwrap_err();
    assert_eq!(e.0[0].field, "customers[0].key_store.aa", "{e}");
}

#[test]
fn key_store_entries_report_their_kid_never_their_value() {
    let wrapped = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";
    let cases = [
        ("^", wrapped, "invalid kid: "),
        ("abcd", wrapped, "invalid kid: "),
        (
            "aaaabbbbccccddddeeeeffff00001111",
            "1fa6",
            "expected 48 hex digits",
        ),
    ];
    // A 32-digit hex kid could be an AES-128 key: it is described, and
    // the entry is told by its place in the store (the demo's own kid is
    // entry 1).
    let labels = ["^", "abcd", "<32 hex digits, not shown> (entry 2)"];
    for ((kid, value, problem), label) in cases.into_iter().zip(labels) {
        let json = demo_with(|v| v["customers"][0]["key_store"][kid] = value.into());
        let e = err(&json);
        assert_eq!(e.field, format!("customers[0].key_store.{label}"));
        assert!(e.problem.to_string().starts_with(problem), "{e}");
        assert!(!e.to_string().contains(value), "{e}");
    }
}

/// A kid written twice in one store, in the same spelling, is refused
/// like two spellings of one kid (the JSON parser used to keep the last).
#[test]
fn a_kid_written_twice_is_refused() {
    let json = fpgen_json_with_store(
        r#"{"11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5",
            "11112222333344445555666677778888": "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5"}"#,
    );
    let e = err(&json);
    assert_eq!(
        e.field,
        "customers[0].key_store.<32 hex digits, not shown> (entry 2)"
    );
    assert_eq!(
        e.problem.to_string(),
        "duplicate kid <32 hex digits, not shown>"
    );
}

/// The demo configuration with its first customer's key store written
/// as `store` (raw JSON text, so that a key can appear twice).
fn fpgen_json_with_store(store: &str) -> String {
    let marker = "\"key_store-marker\"";
    let json = demo_with(|v| v["customers"][0]["key_store"] = "key_store-marker".into());
    json.replace(marker, store)
}

#[test]
fn dotted_customer_ids_are_refused_with_the_rule() {
    let e = err(&demo_with(|v| v["customers"][1]["id"] = "acme.eu".into()));
    assert_eq!(e.field, "customers[1].id");
    assert_eq!(
        e.problem.to_string(),
        "expected 1 to 64 characters of [A-Za-z0-9_-]"
    );
}

#[test]
fn account_controls() {
    let json = demo_with(|v| {
        v["customers"][0]["enabled"] = false.into();
        v["customers"][0]["allowed_networks"] =
            serde_json::json!(["10.1.2.3/8", "2001:db8::1", "::1/128"]);
        v["customers"][0]["token_budget"] = 5.into();
        v["client_address"] = serde_json::json!({"use_x_forwarded_for": true, "trusted_hops": 2});
    });
    let c = Config::from_json(json.as_bytes()).unwrap();
    let cust = &c.customers["100001"];
    assert!(!cust.enabled && cust.fairplay_authorized && cust.fairplay_enabled);
    let nets: Vec<String> = cust
        .allowed_networks
        .as_ref()
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "2001:db8::1/128", "::1/128"]);
    assert_eq!(cust.token_budget, Some(5));
    assert_eq!(c.client_address.trusted_hops, 2);
    assert!(c.customers["200002"].enabled && c.customers["200002"].allowed_networks.is_none());
    let e = err(&demo_with(|v| {
        v["customers"][1]["allowed_networks"] = serde_json::json!(["10.0.0.0/33"])
    }));
    assert_eq!(e.field, "customers[1].allowed_networks[0]");
    let e = err(&demo_with(|v| v["customers"][1]["token_budget"] = 0.into()));
    assert_eq!(e.field, "customers[1].token_budget");
    let c = Config::from_json(
        demo_with(|v| v["customers"][0]["tokens_not_before"] = "2026-11-23T12:00:00+01:00".into())
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.customers["100001"].tokens_not_before, Some(1_795_431_600));
    assert_eq!(c.customers["200002"].tokens_not_before, None);
    let e = err(&demo_with(|v| {
        v["customers"][1]["tokens_not_before"] = "yesterday".into()
    }));
    assert_eq!(e.field, "customers[1].tokens_not_before");
    let e = err(&demo_with(|v| {
        v["client_address"] = serde_json::json!({"use_x_forwarded_for": true})
    }));
    assert_eq!(e.field, "client_address.trusted_hops");
}

#[test]
fn redemption_section() {
    let c = Config::from_json(demo_with(|v| v["redemption"] = serde_json::json!({})).as_bytes())
        .unwrap();
    let r = c.redemption.unwrap();
    assert_eq!(
        (
            r.path_prefix.as_str(),
            r.header_prefix.as_str(),
            r.strip_token
        ),
        ("/hms/fp/rights/", "x-fpgen-", true)
    );
    let c = Config::from_json(
        demo_with(|v| v["redemption"] = serde_json::json!({"enabled": false})).as_bytes(),
    );
    assert!(c.unwrap().redemption.is_none());
    assert!(Config::from_json(demo_with(|_| {}).as_bytes())
        .unwrap()
        .redemption
        .is_none());
    let e = err(&demo_with(|v| {
        v["redemption"] = serde_json::json!({"header_prefix": "X-Bad "})
    }));
    assert_eq!(e.field, "redemption.header_prefix");
    let e = err(&demo_with(|v| {
        v["redemption"] = serde_json::json!({"error_format": "xml"})
    }));
    assert_eq!(e.field, "redemption.error_format");
}

#[test]
fn demo_parses() {
    let c = Config::from_json(demo_with(|_| {}).as_bytes()).unwrap();
    assert_eq!(c.environment, Environment::Test);
    assert_eq!(c.sealing_keys.active().unwrap().id.as_str(), "demo-2026-11");
    assert_eq!(c.customers.len(), 2);
    assert_eq!(c.customers["100001"].key_store.len(), 1);
    assert_eq!(c.max_body_bytes, 8192);
}

#[test]
fn unknown_field_is_named() {
    let e = err(&demo_with(|v| v["customers"][0]["secret"] = "x".into()));
    assert_eq!(e.field, "customers[0].secret");
    assert!(
        e.problem.to_string().contains("unknown field `secret`"),
        "{e}"
    );
}

#[test]
fn bad_hex_is_named() {
    let e = err(&demo_with(|v| v["sealing_keys"][0]["key"] = "abc".into()));
    assert_eq!(e.field, "sealing_keys[0].key");
    let e = err(&demo_with(|v| {
        v["customers"][0]["authenticator_sha256"] = "zz".into()
    }));
    assert_eq!(e.field, "customers[0].authenticator_sha256");
    let e = err(&demo_with(|v| v["keks"]["demo-kek"] = "00".into()));
    assert_eq!(e.field, "keks.demo-kek");
}

#[test]
fn missing_sealing_key() {
    assert_eq!(
        err(&demo_with(|v| v["sealing_keys"] = serde_json::json!([]))).field,
        "sealing_keys"
    );
    let e = err(&demo_with(|v| {
        v.as_object_mut().unwrap().remove("sealing_keys");
    }));
    assert!(
        e.problem
            .to_string()
            .contains("missing field `sealing_keys`"),
        "{e}"
    );
    assert_eq!(
        err(&demo_with(|v| v["active_sealing_key"] = "nope".into())).field,
        "active_sealing_key"
    );
}

#[test]
fn duplicates_are_refused() {
    let e = err(&demo_with(|v| v["customers"][1]["id"] = "100001".into()));
    assert_eq!(e.field, "customers[1].id");
    let e = err(&demo_with(|v| {
        let k = v["sealing_keys"][0].clone();
        v["sealing_keys"].as_array_mut().unwrap().push(k);
    }));
    assert_eq!(e.field, "sealing_keys[1].id");
    let e = err(&demo_with(|v| {
        let store = &mut v["customers"][0]["key_store"];
        store["aaaabbbbccccddddeeeeffff00001111"] =
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
        store["AAAABBBBCCCCDDDDEEEEFFFF00001111"] =
            "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5".into();
    }));
    assert!(e.field.starts_with("customers[0].key_store."), "{e}");
}

#[test]
fn references_must_resolve() {
    let e = err(&demo_with(|v| v["customers"][0]["kek"] = "other".into()));
    assert_eq!(e.field, "customers[0].kek");
    let e = err(&demo_with(|v| v["environment"] = "staging".into()));
    assert_eq!(e.field, "environment");
}

const KEK_HEX: &str = "000102030405060708090a0b0c0d0e0f";
const KID: &str = "11112222333344445555666677778888";
const WRAPPED_HEX: &str = "1fa68b0a8112b447aef34bd8fb5a7b829d3e862371d2cfe5";

/// The demo with its sealing key, its KEK and its stored key given as
/// `{"env": …}` references to FPGEN_SEALING_KEY, FPGEN_KEK and
/// FPGEN_WRAPPED.
fn demo_from_env() -> String {
    let mut v: serde_json::Value = serde_json::from_str(DEMO_CONFIG).unwrap();
    v["sealing_keys"][0]["key"] = serde_json::json!({"env": "FPGEN_SEALING_KEY"});
    v["keks"]["demo-kek"] = serde_json::json!({"env": "FPGEN_KEK"});
    v["customers"][0]["key_store"][KID] = serde_json::json!({"env": "FPGEN_WRAPPED"});
    v.to_string()
}

/// The environment of [`demo_from_env`]'s variables, with `edit` applied.
fn vars_with(
    edit: impl Fn(&str, &'static str) -> Option<&'static str>,
) -> impl Fn(&str) -> Option<String> {
    move |name| {
        let value = match name {
            "FPGEN_SEALING_KEY" => SEALING_KEY_HEX,
            "FPGEN_KEK" => KEK_HEX,
            "FPGEN_WRAPPED" => WRAPPED_HEX,
            _ => return None,
        };
        edit(name, value).map(str::to_owned)
    }
}

#[test]
fn secrets_from_the_environment_are_the_secrets_written_as_hex() {
    let literal = Config::from_json(DEMO_CONFIG.as_bytes()).unwrap();
    // a Kubernetes Secret made from a file ends in a newline
    let vars = vars_with(|name, value| {
        Some(if name == "FPGEN_KEK" {
            "000102030405060708090a0b0c0d0e0f\n"
        } else {
            value
        })
    });
    let json = demo_from_env();
    let env = Config::from_json_with(json.as_bytes(), &vars).unwrap();
    let pieces = Config::from_reader_with(Trickle(json.as_bytes()), &vars).unwrap();
    for config in [&env, &pieces] {
        assert_eq!(
            config.sealing_keys.active().unwrap().key,
            literal.sealing_keys.active().unwrap().key
        );
        let (c, l) = (&config.customers["100001"], &literal.customers["100001"]);
        assert_eq!(c.kek, l.kek);
        assert_eq!(c.key_store, l.key_store);
        assert!(c.kek.is_some() && c.key_store.len() == 1);
    }
    assert!(
        env.summary()
            .ends_with("redemption gate on, 3 secret(s) from the environment"),
        "{}",
        env.summary()
    );
    assert!(literal.summary().ends_with("redemption gate on"));
}

#[test]
fn a_missing_or_malformed_variable_is_named_with_its_field_never_its_value() {
    let json = demo_from_env();
    let unset = Config::from_json_with(json.as_bytes(), &vars_with(|_, _| None)).unwrap_err();
    let fields: Vec<(&str, String)> = unset
        .0
        .iter()
        .map(|e| (e.field.as_str(), e.problem.to_string()))
        .collect();
    // (a host adds where it takes its variables from: Vars::unset_hint)
    let not_set = |v: &str| format!("environment variable {v:?} is not set");
    assert_eq!(
        fields,
        [
            ("sealing_keys[0].key", not_set("FPGEN_SEALING_KEY")),
            ("keks.demo-kek", not_set("FPGEN_KEK")),
            (
                "customers[0].key_store.<32 hex digits, not shown> (entry 1)",
                not_set("FPGEN_WRAPPED")
            ),
        ]
    );
    // each value one digit short: named, never shown
    let short = vars_with(|_, value| Some(&value[1..]));
    let errors = Config::from_json_with(json.as_bytes(), &short).unwrap_err();
    assert_eq!(errors.0.len(), 3, "{errors}");
    assert_eq!(
        errors.0[0].to_string(),
        "invalid fpgen configuration: sealing_keys[0].key: environment variable \
         \"FPGEN_SEALING_KEY\": expected 64 hex digits (32 bytes)"
    );
    let text = errors.to_string();
    for value in [SEALING_KEY_HEX, KEK_HEX, WRAPPED_HEX] {
        assert!(!text.contains(&value[1..9]), "{text}");
    }
    assert!(text.contains("\"FPGEN_KEK\": expected 32, 48 or 64 hex digits"));
    assert!(text.contains("\"FPGEN_WRAPPED\": expected 48 hex digits"));
}

#[test]
fn an_env_reference_has_one_field_env_naming_a_variable() {
    for (reference, expected) in [
        (
            r#"{"env": "A", "default": "00"}"#,
            "unknown field `default`, expected `env`",
        ),
        ("{}", "missing field `env`"),
        (
            r#"{"env": 5}"#,
            "invalid type: integer `5`, expected a string",
        ),
        (
            "5",
            "expected a string of hex digits or {\"env\": \"VARIABLE\"}",
        ),
    ] {
        let json = demo_with(|v| v["sealing_keys"][0]["key"] = "marker".into())
            .replace("\"marker\"", reference);
        let e = err(&json);
        assert!(e.field.starts_with("sealing_keys[0].key"), "{e}");
        assert!(e.problem.to_string().contains(expected), "{e}");
    }
    let json = demo_with(|v| v["sealing_keys"][0]["key"] = serde_json::json!({"env": "A=B"}));
    let e = Config::from_json_with(json.as_bytes(), &|_: &str| None).unwrap_err();
    assert_eq!(e.0[0].field, "sealing_keys[0].key");
    assert!(e.0[0]
        .problem
        .to_string()
        .starts_with("expected an environment variable's name"));
    // a key pasted as the variable's name is refused without being shown
    let key = serde_json::json!({"env": SEALING_KEY_HEX});
    let json = demo_with(|v| v["sealing_keys"][0]["key"] = key);
    let e = Config::from_json_with(json.as_bytes(), &|_: &str| None).unwrap_err();
    assert!(!e.to_string().contains(&SEALING_KEY_HEX[..16]), "{e}");
    assert!(e.to_string().contains("not hex digits"), "{e}");
}

#[test]
fn errors_never_echo_key_material() {
    let e = err(&demo_with(|v| {
        v["sealing_keys"][0]["key"] = SEALING_KEY_HEX[..32].into()
    }));
    assert!(!e.to_string().contains("a88deb5c"), "{e}");
    let c = Config::from_json(demo_with(|_| {}).as_bytes()).unwrap();
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("a88deb5c") && !debug.contains("0001020304"),
        "{debug}"
    );
}

#[test]
fn redeem_url_defaults_follow_environment() {
    let c = Config::from_json(demo_with(|v| v["redeem_url"] = serde_json::json!({})).as_bytes())
        .unwrap();
    assert_eq!(
        c.redeem_url.prefix(false),
        "http://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="
    );
    assert_eq!(
        c.redeem_url.prefix(true),
        "https://fp.test.expressplay.com:80/hms/fp/rights/?ExpressPlayToken="
    );
}

/// `rate_limit_service` and `fleet_budget`: defaults, the values read,
/// and each mistake with its field (a fleet budget needs a service).
#[test]
fn fleet_budgets_are_read_and_checked() {
    let json = demo_with(|v| {
        v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit"});
        v["customers"][0]["fleet_budget"] =
            serde_json::json!({"tokens": 1000, "per": "month", "lease": 50});
        v["customers"][1]["fleet_budget"] = serde_json::json!({"tokens": 5, "per": "second"});
    });
    let c = Config::from_json(json.as_bytes()).unwrap();
    assert_eq!(
        c.rate_limit_service,
        Some(RateLimitService {
            cluster: "ratelimit".into(),
            domain: "fpgen".into(),
            timeout_ms: 100,
            failure_mode: FailureMode::Closed,
        })
    );
    let budget = |id: &str| c.customers[id].fleet_budget;
    let month = FleetBudget {
        tokens: 1000,
        per: Period::Month,
        lease: 50,
    };
    assert_eq!(budget("100001"), Some(month));
    assert_eq!(budget("200002").map(|b| (b.tokens, b.lease)), Some((5, 1)));
    assert!(c
        .summary()
        .contains("2 fleet budget(s) on cluster \"ratelimit\" (failure mode closed)"));
    let open = demo_with(|v| {
        v["rate_limit_service"] = serde_json::json!({"cluster": "rls", "domain": "edge-eu",
            "timeout_ms": 250, "failure_mode": "open"});
    });
    let service = Config::from_json(open.as_bytes())
        .unwrap()
        .rate_limit_service;
    let service = service.unwrap();
    assert_eq!(
        (service.domain.as_str(), service.timeout_ms),
        ("edge-eu", 250)
    );
    assert_eq!(service.failure_mode, FailureMode::Open);
    // Cluster names as operators write them are names, not messages.
    for name in [
        "ratelimit",
        "rls",
        "ratelimit_cluster",
        "envoy-ratelimit",
        "outbound|8081||ratelimit.default.svc.cluster.local",
    ] {
        let json = demo_with(|v| v["rate_limit_service"] = serde_json::json!({"cluster": name}));
        assert!(Config::from_json(json.as_bytes()).is_ok(), "{name}");
    }
}

type Edit = fn(&mut serde_json::Value);

/// Mistakes in fleet budgets: the edit, the field named, the message.
#[allow(clippy::too_many_lines)] // a table, one row per mistake
fn fleet_mistakes() -> [(Edit, &'static str, &'static str); 10] {
    [
        (
            |v| v["rate_limit_service"]["cluster"] = "envoy".into(),
            "rate_limit_service.cluster",
            "does not read as a serialized GrpcService",
        ),
        (
            |v| {
                v.as_object_mut().unwrap().remove("rate_limit_service");
                v["customers"][0]["fleet_budget"] = serde_json::json!({"tokens": 5, "per": "day"});
            },
            "customers[0].fleet_budget",
            "a rate_limit_service (top level) to keep it",
        ),
        (
            |v| v["customers"][0]["fleet_budget"] = serde_json::json!({"tokens": 0, "per": "day"}),
            "customers[0].fleet_budget.tokens",
            "expected 1 to 4294967295",
        ),
        (
            |v| {
                v["customers"][0]["fleet_budget"] =
                    serde_json::json!({"tokens": 4_294_967_296_u64, "per": "day"});
            },
            "customers[0].fleet_budget.tokens",
            "expected 1 to 4294967295",
        ),
        (
            |v| {
                v["customers"][0]["fleet_budget"] =
                    serde_json::json!({"tokens": 10, "per": "day", "lease": 11});
            },
            "customers[0].fleet_budget.lease",
            "expected 1 to 10",
        ),
        (
            |v| {
                v["customers"][0]["fleet_budget"] = serde_json::json!({"tokens": 10, "per": "week"})
            },
            "customers[0].fleet_budget.per",
            "unknown variant",
        ),
        (
            |v| v["customers"][0]["fleet_budget"] = serde_json::json!({"tokens": 10}),
            "customers[0].fleet_budget",
            "missing field `per`",
        ),
        (
            |v| v["rate_limit_service"]["timeout_ms"] = 0.into(),
            "rate_limit_service.timeout_ms",
            "expected 1 to 10000",
        ),
        (
            |v| v["rate_limit_service"]["cluster"] = "two words".into(),
            "rate_limit_service.cluster",
            "expected 1 to 255 visible ASCII characters",
        ),
        (
            |v| v["rate_limit_service"]["failure_mode"] = "maybe".into(),
            "rate_limit_service.failure_mode",
            "unknown variant",
        ),
    ]
}

/// Each mistake in `rate_limit_service` or a `fleet_budget` is named
/// by its field.
#[test]
fn fleet_budget_mistakes_name_their_field() {
    let with_service = |edit: Edit| {
        demo_with(|v| {
            v["rate_limit_service"] = serde_json::json!({"cluster": "ratelimit"});
            edit(v);
        })
    };
    let cases = fleet_mistakes();
    for (edit, field, message) in cases {
        let e = err(&with_service(edit));
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(message), "{e}");
    }
}
