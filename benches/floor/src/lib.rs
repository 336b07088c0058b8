//! The Wasm floor: what any proxy-wasm token filter pays before doing its
//! own work. On `/hms/fp/token` it reads `:path` (one header read, as fpgen
//! does first) and answers 200 `text/uri-list` with the body its plugin
//! configuration holds (the bench passes a licence URL of fpgen's size),
//! with the same headers fpgen sends; every other request passes on.
//!
//! A first configuration line `calls=a,b,…` adds host calls fpgen makes on
//! a mint, so that `benches/hostcalls.py` can price each in Envoy:
//! `method` (read `:method`), `time` (the clock), `random` (24 bytes from
//! WASI `random_get`), `property` (set a 90-byte filter state), `metric`
//! (add one to a counter). `calls=…*N` makes each of them N times per
//! request, so that a call's price stands out of the noise.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { plan: Rc::new(Plan::default()) }) });
}}

/// What each request does: the reply body, and the extra host calls.
#[derive(Default)]
struct Plan {
    body: Vec<u8>,
    method: bool,
    time: bool,
    random: bool,
    property: bool,
    metric: Option<u32>,
    times: usize,
}

struct Root {
    plan: Rc<Plan>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        let mut plan = Plan::default();
        let body = match config.strip_prefix(b"calls=") {
            Some(rest) => {
                let (calls, body) = rest.split_at(rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len()));
                let (calls, times) = match calls.iter().position(|&b| b == b'*') {
                    Some(i) => (&calls[..i], std::str::from_utf8(&calls[i + 1..]).ok().and_then(|n| n.parse().ok())),
                    None => (calls, Some(1)),
                };
                let Some(times) = times else { return false };
                plan.times = times;
                for call in calls.split(|&b| b == b',') {
                    match call {
                        b"method" => plan.method = true,
                        b"time" => plan.time = true,
                        b"random" => plan.random = true,
                        b"property" => plan.property = true,
                        b"metric" => plan.metric = hostcalls::define_metric(MetricType::Counter, "floor.calls").ok(),
                        _ => return false,
                    }
                }
                body.strip_prefix(b"\n").unwrap_or(body)
            }
            None => &config[..],
        };
        plan.body = body.to_vec();
        self.plan = Rc::new(plan);
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { plan: self.plan.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    plan: Rc<Plan>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header_bytes(":path").unwrap_or_default();
        if !path.starts_with(b"/hms/fp/token") {
            return Action::Continue;
        }
        let plan = self.plan.clone();
        for _ in 0..plan.times {
            self.calls(&plan);
        }
        self.send_http_response(
            200,
            vec![("content-type", "text/uri-list"), ("cache-control", "no-store")],
            Some(&plan.body),
        );
        Action::Pause
    }
}

impl Stream {
    fn calls(&self, plan: &Plan) {
        if plan.method {
            std::hint::black_box(self.get_http_request_header_bytes(":method"));
        }
        if plan.time {
            std::hint::black_box(self.get_current_time());
        }
        if plan.random {
            let mut nonce = [0u8; 24];
            let _ = getrandom::fill(&mut nonce);
            std::hint::black_box(nonce);
        }
        if plan.property {
            let state = b"code=0 customer=100001 kid=11112222333344445555666677778888 cookie=bench-session-0001 e";
            self.set_property(vec!["fpgen"], Some(&state[..]));
        }
        if let Some(id) = plan.metric {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
}
