//! Envoy's side of the dynamic-module ABI, faked for the unit tests of
//! [`super::abi`] (test builds with the feature `dynamic-module`): each
//! callback fpgen declares is defined here, over a [`FakeStream`] (the
//! "filter" pointer a hook is given) or a [`FakeConfig`] (the
//! configuration's), so that the exported hooks run natively, pointers and
//! all, as Envoy would run them. It lives with the tests (it is compiled
//! into the test build alone, by `#[path]` from `src/hosts/dynamic_module`):
//! the module's only `unsafe` code is `abi.rs`.
//!
//! Soundness: every pointer these callbacks are given comes from the test
//! or from `abi.rs` within one call: a `FakeStream` or `FakeConfig` the test
//! keeps alive across the hooks it drives, and buffers and places that
//! `abi.rs` makes for the call (its own contracts). Each `unsafe` block says
//! which. A callback that panics aborts the test (it cannot unwind through
//! `extern "C"`).
#![allow(unsafe_code, clippy::missing_safety_doc)]

use super::abi::{EnvoyBuffer, Header, ModuleBuffer};
use std::cell::RefCell;
use std::ffi::c_void;

/// One stream as the fake Envoy holds it. Strings stay where they are for
/// the length of a hook (the ABI's promise), so values are handed out as
/// pointers into them.
#[derive(Default)]
pub(crate) struct FakeStream {
    pub(crate) headers: RefCell<Vec<(String, String)>>,
    pub(crate) trailers: RefCell<Vec<(String, String)>>,
    /// Replies sent: status and body.
    pub(crate) sent: RefCell<Vec<(u32, String)>>,
    pub(crate) filter_state: RefCell<Option<String>>,
    pub(crate) callouts: RefCell<usize>,
}

/// One configuration as the fake Envoy holds it: its metrics' names, and
/// its main-thread scheduler.
#[derive(Default)]
pub(crate) struct FakeConfig {
    pub(crate) metrics: RefCell<Vec<String>>,
    pub(crate) scheduler: FakeScheduler,
}

/// A configuration's scheduler: the events committed to it, and whether
/// (how many times) it was deleted.
#[derive(Default)]
pub(crate) struct FakeScheduler {
    pub(crate) commits: std::sync::atomic::AtomicUsize,
    pub(crate) deleted: std::sync::atomic::AtomicUsize,
}

impl FakeStream {
    pub(crate) fn request(headers: &[(&str, &str)]) -> Self {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()));
        Self {
            headers: RefCell::new(headers.collect()),
            ..Self::default()
        }
    }

    /// The pointer Envoy passes to a hook.
    pub(crate) fn ptr(&self) -> *mut c_void {
        std::ptr::from_ref(self).cast_mut().cast()
    }
}

unsafe fn stream<'a>(filter: *mut c_void) -> &'a FakeStream {
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    unsafe { &*filter.cast::<FakeStream>() }
}

unsafe fn text(buffer: ModuleBuffer) -> String {
    let (ptr, length) = buffer.parts();
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: the module's buffer: `length` live bytes at `ptr`, for the call.
    let bytes = unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), length) };
    String::from_utf8_lossy(bytes).into_owned()
}

unsafe fn map<'a>(filter: *mut c_void, header_type: u32) -> &'a RefCell<Vec<(String, String)>> {
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    let stream = unsafe { stream(filter) };
    if header_type == 0 {
        &stream.headers
    } else {
        &stream.trailers
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_header(
    filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    result: *mut EnvoyBuffer,
    index: usize,
    optional_count: *mut usize,
) -> bool {
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    let key = unsafe { text(key) };
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    let map = unsafe { map(filter, header_type) }.borrow();
    let values: Vec<&String> = map
        .iter()
        .filter(|(k, _)| *k == key)
        .map(|(_, v)| v)
        .collect();
    if !optional_count.is_null() {
        // SAFETY: a place the module passed for this call (`result` sized by the count it asked first).
        unsafe { *optional_count = values.len() };
    }
    match values.get(index) {
        Some(value) => {
            // SAFETY: a place the module passed for this call (`result` sized by the count it asked first).
            unsafe { *result = EnvoyBuffer::of(value.as_bytes()) };
            true
        }
        None => false,
    }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers_size(
    filter: *mut c_void,
    header_type: u32,
) -> usize {
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    unsafe { map(filter, header_type) }.borrow().len()
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_get_headers(
    filter: *mut c_void,
    header_type: u32,
    result: *mut Header,
) -> bool {
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    let map = unsafe { map(filter, header_type) }.borrow();
    for (i, (k, v)) in map.iter().enumerate() {
        // SAFETY: a place the module passed for this call (`result` sized by the count it asked first).
        unsafe { *result.add(i) = Header::of(k.as_bytes(), v.as_bytes()) };
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_header(
    filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    let key = unsafe { text(key) };
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    let mut map = unsafe { map(filter, header_type) }.borrow_mut();
    map.retain(|(k, _)| *k != key);
    if !value.parts().0.is_null() {
        // SAFETY: buffers the module passed for this call, pointing at live bytes.
        map.push((key, unsafe { text(value) }));
    }
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_add_header(
    filter: *mut c_void,
    header_type: u32,
    key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    let pair = unsafe { (text(key), text(value)) };
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    unsafe { map(filter, header_type) }.borrow_mut().push(pair);
    true
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_send_response(
    filter: *mut c_void,
    status: u32,
    _headers: *const Header,
    _headers_count: usize,
    body: ModuleBuffer,
    _details: ModuleBuffer,
) {
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    let body = unsafe { text(body) };
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    unsafe { stream(filter) }
        .sent
        .borrow_mut()
        .push((status, body));
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_body_size(
    _filter: *mut c_void,
    _body_type: u32,
) -> usize {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks_size(
    _filter: *mut c_void,
    _body_type: u32,
) -> usize {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_get_body_chunks(
    _filter: *mut c_void,
    _body_type: u32,
    _result: *mut EnvoyBuffer,
) -> bool {
    false
}

unsafe fn define(config: *mut c_void, name: ModuleBuffer, id: *mut usize) -> u32 {
    // SAFETY: `config` is the test's `FakeConfig`, alive for the call.
    let config = unsafe { &*config.cast::<FakeConfig>() };
    let mut metrics = config.metrics.borrow_mut();
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    metrics.push(unsafe { text(name) });
    // SAFETY: a place the module passed for this call (`result` sized by the count it asked first).
    unsafe { *id = metrics.len() };
    0
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_counter(
    config: *mut c_void,
    name: ModuleBuffer,
    _label_names: *const ModuleBuffer,
    _label_names_count: usize,
    id: *mut usize,
) -> u32 {
    // SAFETY: `config` is the test's `FakeConfig`, alive for the call.
    unsafe { define(config, name, id) }
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_define_gauge(
    config: *mut c_void,
    name: ModuleBuffer,
    _label_names: *const ModuleBuffer,
    _label_names_count: usize,
    id: *mut usize,
) -> u32 {
    // SAFETY: `config` is the test's `FakeConfig`, alive for the call.
    unsafe { define(config, name, id) }
}

/// The metric callbacks: counted nowhere (the adapter's tests count).
macro_rules! record_callbacks {
    ($($name:ident),*) => {$(
        #[no_mangle]
        pub extern "C" fn $name(
            _owner: *mut c_void,
            _id: usize,
            _label_values: *const ModuleBuffer,
            _label_values_count: usize,
            _value: u64,
        ) -> u32 {
            0
        }
    )*};
}

record_callbacks!(
    envoy_dynamic_module_callback_http_filter_config_set_gauge,
    envoy_dynamic_module_callback_http_filter_set_gauge,
    envoy_dynamic_module_callback_http_filter_increment_counter,
    envoy_dynamic_module_callback_http_filter_config_increment_counter
);

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_http_callout(
    filter: *mut c_void,
    _callout_id: *mut u64,
    _cluster: ModuleBuffer,
    _headers: *const Header,
    _headers_count: usize,
    _body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    *unsafe { stream(filter) }.callouts.borrow_mut() += 1;
    1 // not made
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_config_http_callout(
    _config: *mut c_void,
    _callout_id: *mut u64,
    _cluster: ModuleBuffer,
    _headers: *const Header,
    _headers_count: usize,
    _body: ModuleBuffer,
    _timeout_ms: u64,
) -> u32 {
    1
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
    config: *mut c_void,
) -> *mut c_void {
    // SAFETY: `config` is the test's `FakeConfig`, alive for the call.
    let config = unsafe { &*config.cast::<FakeConfig>() };
    std::ptr::from_ref(&config.scheduler).cast_mut().cast()
}

unsafe fn scheduler<'a>(scheduler: *mut c_void) -> &'a FakeScheduler {
    // SAFETY: a `FakeScheduler` inside the test's live `FakeConfig`.
    let scheduler = unsafe { &*scheduler.cast::<FakeScheduler>() };
    let deleted = scheduler.deleted.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(deleted, 0, "a scheduler used after it was deleted");
    scheduler
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
    scheduler_ptr: *mut c_void,
    _event_id: u64,
) {
    // SAFETY: a `FakeScheduler` inside the test's live `FakeConfig`.
    let commits = &unsafe { scheduler(scheduler_ptr) }.commits;
    commits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
    scheduler_ptr: *mut c_void,
) {
    // SAFETY: a `FakeScheduler` inside the test's live `FakeConfig`.
    let deleted = &unsafe { scheduler(scheduler_ptr) }.deleted;
    deleted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
}

#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
    filter: *mut c_void,
    _key: ModuleBuffer,
    value: ModuleBuffer,
) -> bool {
    // SAFETY: buffers the module passed for this call, pointing at live bytes.
    let value = unsafe { text(value) };
    // SAFETY: `filter` is the test's `FakeStream` (`FakeStream::ptr`), alive for the hook.
    *unsafe { stream(filter) }.filter_state.borrow_mut() = Some(value);
    true
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
    _filter: *mut c_void,
    _attribute: u32,
    _result: *mut EnvoyBuffer,
) -> bool {
    false
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log_v2(
    _level: u32,
    _message: ModuleBuffer,
    _source_file: ModuleBuffer,
    _source_line: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log_enabled(_level: u32) -> bool {
    false
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_callback_log(_level: u32, _message: ModuleBuffer) {}
