//! The host shell: the only module that talks to proxy-wasm. It reads the
//! configuration once, routes `/hms/fp/token`, collects the body and hands
//! everything to the pure [`service`](crate::service).

use crate::config::Config;
use crate::error::ErrorCode;
use crate::redeem;
use crate::render::Response;
use crate::service::{self, Host, Outcome};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("fpgen: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
}}

struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let json = self.get_plugin_configuration().unwrap_or_default();
        match Config::from_json(&json) {
            Ok(config) => {
                log(
                    LogLevel::Info,
                    &format!(
                        "fpgen: configured: environment {}, {} customer(s), active sealing key {:?}",
                        config.environment.as_str(),
                        config.customers.len(),
                        config.sealing_keys.active().map(|k| k.id.as_str()).unwrap_or(""),
                    ),
                );
                self.config = Some(Rc::new(config));
                true
            }
            Err(e) => {
                log(LogLevel::Error, &format!("fpgen: {e}"));
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
            query: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream. `query` is set while a POST body is being collected.
struct Stream {
    config: Option<Rc<Config>>,
    query: Option<String>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        let Some(path) = self.get_http_request_header(":path") else {
            return Action::Continue;
        };
        if !service::is_token_path(&path) {
            return self.gate(&path);
        }
        let query = service::query_of(&path);
        let Some(config) = self.config.clone() else {
            return self.reply(service::reject(ErrorCode::Internal, query));
        };
        match self.get_http_request_header(":method").as_deref() {
            Some("GET") => self.answer(&config, query, b""),
            Some("POST") => {
                if end_of_stream {
                    return self.answer(&config, query, b"");
                }
                let content_type = self.get_http_request_header("content-type");
                if !service::is_form_content_type(content_type.as_deref()) {
                    return self.reply(service::reject(ErrorCode::UnsupportedMediaType, query));
                }
                let declared = self
                    .get_http_request_header("content-length")
                    .and_then(|v| v.parse::<usize>().ok());
                if declared.is_some_and(|n| n > config.max_body_bytes) {
                    return self.reply(service::reject(ErrorCode::BodyTooLarge, query));
                }
                self.query = Some(query.to_owned());
                Action::Pause
            }
            _ => self.reply(service::reject(ErrorCode::MethodNotAllowed, query)),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let (Some(query), Some(config)) = (self.query.clone(), self.config.clone()) else {
            return Action::Continue;
        };
        if body_size > config.max_body_bytes {
            self.query = None;
            return self.reply(service::reject(ErrorCode::BodyTooLarge, &query));
        }
        if !end_of_stream {
            return Action::Pause; // Envoy buffers until the body is complete
        }
        self.query = None;
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.answer(&config, &query, &body)
    }
}

impl Stream {
    /// The redemption gate, for requests at its path when it is enabled.
    fn gate(&mut self, path: &str) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let Some(gate) = config
            .redemption
            .as_ref()
            .filter(|g| redeem::applies(g, path))
        else {
            return Action::Continue;
        };
        // First of all: no client-supplied licence-data headers go upstream.
        for (name, _) in self.get_http_request_headers() {
            if redeem::is_reserved_header(gate, &name) {
                self.set_http_request_header(&name, None);
            }
        }
        match redeem::redeem(&config, gate, path, WasmHost.now()) {
            Ok(redeemed) => {
                for (name, value) in &redeemed.headers {
                    self.add_http_request_header(name, value);
                }
                if let Some(new_path) = &redeemed.new_path {
                    self.set_http_request_header(":path", Some(new_path));
                }
                Action::Continue
            }
            Err((response, reason)) => {
                log(
                    LogLevel::Debug,
                    &format!("fpgen: redemption refused: {reason}"),
                );
                self.reply(response)
            }
        }
    }

    fn answer(&mut self, config: &Config, query: &str, body: &[u8]) -> Action {
        let (response, outcome) = service::handle(config, query, body, &WasmHost);
        if let Outcome::Rejected(code) = outcome {
            log(
                LogLevel::Debug,
                &format!("fpgen: rejected with {}", code.code()),
            );
        }
        self.reply(response)
    }

    fn reply(&mut self, response: Response) -> Action {
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3 + response.headers.len());
        headers.push(("content-type", response.content_type));
        headers.push(("cache-control", "no-store"));
        headers.extend(response.headers.iter().copied());
        self.send_http_response(
            u32::from(response.status),
            headers,
            Some(response.body.as_bytes()),
        );
        Action::Pause
    }
}

struct WasmHost;

impl Host for WasmHost {
    fn now(&self) -> i64 {
        proxy_wasm::hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    }

    fn fill_random(&self, buf: &mut [u8]) -> bool {
        getrandom::fill(buf).is_ok()
    }
}

fn log(level: LogLevel, message: &str) {
    let _ = proxy_wasm::hostcalls::log(level, message);
}
