//! The Wasm floor: what any proxy-wasm token filter pays before doing its
//! own work. On `/hms/fp/token` it reads `:path` (one header read, as fpgen
//! does first) and answers 200 `text/uri-list` with the body its plugin
//! configuration holds (the bench passes a licence URL of fpgen's size),
//! with the same headers fpgen sends; every other request passes on.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use std::rc::Rc;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { body: Rc::from(Vec::new()) }) });
}}

struct Root {
    body: Rc<[u8]>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        self.body = Rc::from(self.get_plugin_configuration().unwrap_or_default());
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { body: self.body.clone() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    body: Rc<[u8]>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let path = self.get_http_request_header_bytes(":path").unwrap_or_default();
        if !path.starts_with(b"/hms/fp/token") {
            return Action::Continue;
        }
        self.send_http_response(
            200,
            vec![("content-type", "text/uri-list"), ("cache-control", "no-store")],
            Some(&self.body),
        );
        Action::Pause
    }
}
