//! The proxy-wasm shell: the only file that names `proxy_wasm::hostcalls`.
//! It registers the root context, hands each of Envoy's callbacks to the
//! [`adapter`](super::adapter), and makes the adapter's host calls
//! ([`Hostcalls`], the [`Abi`] of a real VM).

use super::adapter::{Abi, Flow, MetricKind, Root, Stream, WriteFailed};
use crate::lifecycle::{Editor, Level, Part};
use crate::service::HostFailure;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("fpgen: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(RootContextOf(Root::new(id)))
    });
}}

/// The root context.
struct RootContextOf(Root);

impl Context for RootContextOf {
    fn on_grpc_call_response(&mut self, token: u32, status: u32, size: usize) {
        self.0.on_call_response(&Hostcalls, token, status, size);
    }
}

impl RootContext for RootContextOf {
    fn on_configure(&mut self, size: usize) -> bool {
        self.0.configure(&Hostcalls, size)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(StreamContext(self.0.stream())))
    }

    fn on_tick(&mut self) {
        self.0.on_tick(&Hostcalls);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// One HTTP stream's context.
struct StreamContext(Stream);

impl Context for StreamContext {
    fn on_grpc_call_response(&mut self, _token: u32, status: u32, size: usize) {
        self.0.on_call_response(&Hostcalls, status, size);
    }
}

/// The SDK drops a stream's context when Envoy is done with it.
impl Drop for StreamContext {
    fn drop(&mut self) {
        self.0.abandon(&Hostcalls);
    }
}

impl HttpContext for StreamContext {
    fn on_http_request_headers(&mut self, _headers: usize, end_of_stream: bool) -> Action {
        action(self.0.on_headers(&Hostcalls, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(self.0.on_body(&Hostcalls, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _trailers: usize) -> Action {
        action(self.0.on_trailers(&Hostcalls))
    }
}

fn action(flow: Flow) -> Action {
    match flow {
        Flow::Continue => Action::Continue,
        Flow::Pause => Action::Pause,
    }
}

fn map(part: Part) -> MapType {
    match part {
        Part::Headers => MapType::HttpRequestHeaders,
        Part::Trailers => MapType::HttpRequestTrailers,
    }
}

/// The host calls of the VM this module runs in (each acts on the context
/// whose callback is running).
struct Hostcalls;

impl Editor for Hostcalls {
    fn remove_header(&self, part: Part, name: &str) {
        let _ = hostcalls::set_map_value(map(part), name, None);
    }

    fn add_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn set_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }
}

impl Abi for Hostcalls {
    fn header(&self, part: Part, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(map(part), name)
            .ok()
            .flatten()
    }

    /// Names only: `get_map` would panic on a value that is not UTF-8.
    fn header_names(&self, part: Part) -> Vec<String> {
        let pairs = hostcalls::get_map_bytes(map(part)).unwrap_or_default();
        pairs.into_iter().map(|(name, _)| name).collect()
    }

    fn body(&self, limit: usize) -> Vec<u8> {
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, limit);
        body.ok().flatten().unwrap_or_default()
    }

    fn send_response(&self, status: u32, headers: Vec<(&str, &str)>, body: &[u8]) {
        let _ = hostcalls::send_http_response(status, headers, Some(body));
    }

    fn set_log_property(&self, value: &[u8]) {
        let _ = hostcalls::set_property(vec!["fpgen"], Some(value));
    }

    fn source_address(&self) -> Option<Vec<u8>> {
        hostcalls::get_property(vec!["source", "address"])
            .ok()
            .flatten()
    }

    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        getrandom::fill(buf).map_err(|_| HostFailure("no randomness from the host"))
    }

    fn log(&self, level: Level, message: &str) {
        let level = match level {
            Level::Debug => LogLevel::Debug,
            Level::Info => LogLevel::Info,
            Level::Warn => LogLevel::Warn,
            Level::Error => LogLevel::Error,
        };
        let _ = hostcalls::log(level, message);
    }

    fn get_shared_data(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), ()> {
        hostcalls::get_shared_data(key).map_err(|_| ())
    }

    fn set_shared_data(
        &self,
        key: &str,
        value: &[u8],
        cas: Option<u32>,
    ) -> Result<(), WriteFailed> {
        hostcalls::set_shared_data(key, Some(value), cas).map_err(|status| match status {
            Status::CasMismatch => WriteFailed::CasMismatch,
            _ => WriteFailed::Other,
        })
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> Option<u32> {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
        };
        hostcalls::define_metric(kind, name).ok()
    }

    fn increment_metric(&self, id: u32, by: i64) {
        let _ = hostcalls::increment_metric(id, by);
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn dispatch_call(&self, cluster: &str, message: &[u8], timeout_ms: u64) -> Result<u32, ()> {
        hostcalls::dispatch_grpc_call(
            cluster,
            crate::fleet::SERVICE,
            crate::fleet::METHOD,
            Vec::new(),
            Some(message),
            Duration::from_millis(timeout_ms),
        )
        .map_err(|_| ())
    }

    /// (Envoy answers Ok for the buffer of a call it is answering.)
    fn call_response(&self, size: usize) -> Vec<u8> {
        let message = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, size);
        message.ok().flatten().unwrap_or_default()
    }

    fn set_tick_period_ms(&self, ms: u64) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(ms));
    }

    /// (The SDK's `get_buffer` panics on a status other than Ok or
    /// NotFound, as `get_plugin_configuration` did before; Envoy answers
    /// Ok for a range within the configuration.)
    fn plugin_configuration(&self, offset: usize, len: usize) -> Result<Vec<u8>, ()> {
        let chunk = hostcalls::get_buffer(BufferType::PluginConfiguration, offset, len);
        chunk.map(Option::unwrap_or_default).map_err(|_| ())
    }
}
