//! The harness's Envoy bootstrap, built as a `serde_json::Value`: the shape
//! of `envoy/envoy.yaml` with ports 0, the filter configuration embedded
//! as a string, and the stats tag rules of `fpgen::stats`.

use super::envoy::Options;
use super::process::Module;
use serde_json::{json, Value};
use std::path::Path;

/// Bodies of the harness's routes (direct responses, no upstream).
pub const NOT_FOUND_BODY: &str = "not found\n";
pub const RIGHTS_BODY: &str = "licence server stand-in\n";
pub const PASSTHROUGH_BODY: &str = "passthrough ok\n";

/// The access-log line of `envoy/envoy.yaml` (a test checks they agree).
pub const ACCESS_LOG_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% %PATH(NQ)%\" %RESPONSE_CODE% %FILTER_STATE(wasm.fpgen:PLAIN)%\n";

/// The same line for the native module (`envoy/native.yaml`): its filter
/// state is `fpgen`.
pub const NATIVE_ACCESS_LOG_FORMAT: &str =
    "[%START_TIME%] \"%REQ(:METHOD)% %PATH(NQ)%\" %RESPONSE_CODE% %FILTER_STATE(fpgen:PLAIN)%\n";

/// The HCM settings every shipped configuration carries (a test in
/// `tests/e2e/shared/edge/` checks the files against this list): path normalisation,
/// merged slashes, escaped slashes refused, underscore headers dropped.
pub fn hardened_hcm() -> serde_json::Map<String, Value> {
    let mut hcm = serde_json::Map::new();
    hcm.insert("normalize_path".into(), true.into());
    hcm.insert("merge_slashes".into(), true.into());
    hcm.insert(
        "path_with_escaped_slashes_action".into(),
        "REJECT_REQUEST".into(),
    );
    hcm.insert(
        "common_http_protocol_options".into(),
        json!({"headers_with_underscores_action": "DROP_HEADER"}),
    );
    hcm
}

/// The bootstrap of a harness Envoy (Envoy reads `.json` as JSON).
pub fn bootstrap(
    wasm: &Path,
    filter_config_json: &str,
    options: &Options,
    access_log: &Path,
) -> Value {
    let stats_tags: Vec<Value> = fpgen::wasm_stats::TAG_RULES
        .iter()
        .map(|(name, regex)| json!({"tag_name": name, "regex": regex}))
        .collect();
    let mut listeners = vec![listener(wasm, filter_config_json, options, access_log)];
    if let Some((second_config, port)) = &options.second_listener {
        let mut second = listener(wasm, second_config, options, access_log);
        second["name"] = "fpgen-second".into();
        second["address"] = socket_address(*port);
        listeners.push(second);
    }
    let mut static_resources = json!({ "listeners": listeners });
    let mut clusters = Vec::new();
    if let Some(port) = options.upstream_port {
        clusters.push(licence_server(port));
    }
    if let Some(port) = options.ratelimit_port {
        let mut cluster = ratelimit_service(port);
        if let Some([ca, cert, key]) = &options.ratelimit_tls {
            cluster["transport_socket"] = json!({
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    "sni": "localhost",
                    "common_tls_context": {
                        "alpn_protocols": ["h2"],
                        "tls_certificates": [{
                            "certificate_chain": {"filename": cert},
                            "private_key": {"filename": key},
                        }],
                        "validation_context": {
                            "trusted_ca": {"filename": ca},
                            "match_typed_subject_alt_names": [
                                {"san_type": "DNS", "matcher": {"exact": "localhost"}}
                            ],
                        },
                    },
                },
            });
        }
        clusters.push(cluster);
    }
    if !clusters.is_empty() {
        static_resources["clusters"] = Value::Array(clusters);
    }
    json!({
        "stats_config": {"stats_tags": stats_tags},
        "admin": {"address": socket_address(0)},
        "static_resources": static_resources,
    })
}

fn socket_address(port: u16) -> Value {
    json!({"socket_address": {"address": "127.0.0.1", "port_value": port}})
}

fn listener(wasm: &Path, filter_config_json: &str, options: &Options, access_log: &Path) -> Value {
    let mut hcm = json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "fpgen",
        "use_remote_address": true,
        "access_log": [{"name": "envoy.access_loggers.file", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": access_log,
            "log_format": {"text_format_source": {"inline_string": match options.module {
                Module::Wasm => ACCESS_LOG_FORMAT,
                Module::Native => NATIVE_ACCESS_LOG_FORMAT,
            }}},
        }}],
        "codec_type": "AUTO",
        "route_config": {"name": "local", "virtual_hosts": [{
            "name": "fpgen",
            "domains": ["*"],
            "routes": routes(options),
        }]},
        "http_filters": [
            fpgen_filter(wasm, filter_config_json, options),
            {"name": "envoy.filters.http.router", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
        ],
    });
    if options.hardened {
        if let Some(hcm) = hcm.as_object_mut() {
            hcm.extend(hardened_hcm());
        }
    }
    json!({
        "name": "fpgen",
        "address": socket_address(0),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    })
}

fn direct(prefix: &str, status: u16, body: &str) -> Value {
    json!({"match": {"prefix": prefix},
        "direct_response": {"status": status, "body": {"inline_string": body}}})
}

/// `route` with the fpgen filter enabled on it (for a filter declared
/// `disabled: true` in the HCM).
fn enabled(mut route: Value, module: Module) -> Value {
    route["typed_per_filter_config"] = json!({module.filter_name(): {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}});
    route
}

/// The licence routes (one per DRM), `/passthrough`, and a catch-all.
/// With an upstream, it gets the licence routes and also every path that
/// no other route serves (a route wider than the gate's prefix, as an
/// operator might write it). Scoped, the token routes come first, and the
/// filter is enabled on them and on the licence routes only.
fn routes(options: &Options) -> Value {
    let passthrough = direct("/passthrough", 200, PASSTHROUGH_BODY);
    let to_upstream = |prefix: &str| {
        json!({"match": {"prefix": prefix},
            "route": {"cluster": "licence_server", "timeout": "5s"}})
    };
    let rights_paths = [
        "/hms/fp/rights/",
        "/hms/wv/rights/",
        "/playready/RightsManager.asmx",
    ];
    let (mut rights, catch_all): (Vec<Value>, Value) = match options.upstream_port {
        None => (
            rights_paths
                .iter()
                .map(|p| direct(p, 200, RIGHTS_BODY))
                .collect(),
            direct("/", 404, NOT_FOUND_BODY),
        ),
        Some(_) => (
            rights_paths.iter().map(|p| to_upstream(p)).collect(),
            to_upstream("/"),
        ),
    };
    // PlayReady's route matches in any letter case, as its gate does (and
    // IIS, where its licence servers run)
    if let Some(playready) = rights.last_mut() {
        playready["match"]["case_sensitive"] = false.into();
    }
    let mut all = Vec::new();
    if options.scoped {
        let module = options.module;
        for path in ["/hms/fp/token", "/hms/wv/token", "/hms/pr/token"] {
            let token = json!({"match": {"path_separated_prefix": path},
                "direct_response": {"status": 404, "body": {"inline_string": NOT_FOUND_BODY}}});
            all.push(enabled(token, module));
        }
        all.extend(rights.into_iter().map(|r| enabled(r, module)));
    } else {
        all.extend(rights);
    }
    all.extend([passthrough, catch_all]);
    Value::Array(all)
}

/// The fpgen filter: the Wasm module's, or the native module's (`module`
/// is then the `libfpgen.so` Envoy finds in its search path).
fn fpgen_filter(module: &Path, filter_config_json: &str, options: &Options) -> Value {
    let typed_config = match options.module {
        Module::Wasm => wasm_typed_config(module, filter_config_json, options),
        Module::Native => native_typed_config(filter_config_json),
    };
    json!({
        "name": options.module.filter_name(),
        "disabled": options.scoped,
        "typed_config": typed_config,
    })
}

/// The fpgen filter as an `envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter`,
/// as `envoy/native.yaml` has it.
pub fn native_typed_config(filter_config_json: &str) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
        "dynamic_module_config": {"name": "fpgen", "do_not_close": true},
        "filter_name": "fpgen",
        "filter_config": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": filter_config_json,
        },
    })
}

/// The fpgen plugin as an `envoy.extensions.filters.http.wasm.v3.Wasm`:
/// the filter's `typed_config` here, the ECDS resource's in
/// [`super::ecds`].
pub fn wasm_typed_config(wasm: &Path, filter_config_json: &str, options: &Options) -> Value {
    json!({
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {
            "name": "fpgen",
            "root_id": "fpgen",
            "allow_on_headers_stop_iteration": true,
            "failure_policy": options.failure_policy,
            "vm_config": {
                "runtime": "envoy.wasm.runtime.v8",
                "code": {"local": {"filename": wasm}},
                "environment_variables": {
                    "host_env_keys": options.host_env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
                },
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": filter_config_json,
            },
        },
    })
}

/// The upstream cluster at 127.0.0.1:`port`; it accepts request trailers
/// over HTTP/1.1.
fn licence_server(port: u16) -> Value {
    json!({
        "name": "licence_server",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {"enable_trailers": true}},
        }},
        "load_assignment": {"cluster_name": "licence_server", "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": socket_address(port)}},
        ]}]},
    })
}

/// The rate-limit service's cluster: gRPC, so HTTP/2. Port 0: a cluster
/// with no host (its endpoints not known yet, or none healthy).
fn ratelimit_service(port: u16) -> Value {
    let endpoints = if port == 0 {
        json!([])
    } else {
        json!([{"lb_endpoints": [{"endpoint": {"address": socket_address(port)}}]}])
    };
    json!({
        "name": "ratelimit",
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}},
        }},
        "load_assignment": {"cluster_name": "ratelimit", "endpoints": endpoints},
    })
}

/// The LDS resource file of a dynamic Envoy: the bootstrap's listener on
/// `port`, for `filter_config_json`.
pub fn lds_resource(
    wasm: &Path,
    filter_config_json: &str,
    options: &Options,
    access_log: &Path,
    port: u16,
) -> Value {
    let mut listener = listener(wasm, filter_config_json, options, access_log);
    listener["address"] = socket_address(port);
    listener["@type"] = "type.googleapis.com/envoy.config.listener.v3.Listener".into();
    json!({ "resources": [listener] })
}

/// `bootstrap` for a dynamic Envoy: the listener comes through LDS from
/// the watched file `lds_dir/lds.json`.
pub fn with_lds(mut bootstrap: Value, lds_dir: &Path) -> Value {
    if let Some(resources) = bootstrap["static_resources"].as_object_mut() {
        resources.remove("listeners");
    }
    bootstrap["node"] = json!({"id": "fpgen-e2e", "cluster": "fpgen-e2e"});
    bootstrap["dynamic_resources"] = json!({"lds_config": {"resource_api_version": "V3",
        "path_config_source": {"path": lds_dir.join("lds.json"),
            "watched_directory": {"path": lds_dir}}}});
    bootstrap
}
