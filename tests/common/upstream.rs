//! A recording upstream: the licence server stand-in of the gate tests.

use super::http::{chunked_body, find, split_head, values, Fields, IO_TIMEOUT};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names lower-cased, in order.
    pub headers: Fields,
    /// The body (de-chunked when it came chunked).
    pub body: Vec<u8>,
    /// Trailers of a chunked body, names lower-cased.
    pub trailers: Fields,
    /// Every byte of the request as it arrived: request line, headers,
    /// framing, body and trailers.
    pub raw: Vec<u8>,
}

impl Recorded {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// Every header and trailer name that a CGI/WSGI server would read as
    /// `HTTP_<prefix>…`: letter case ignored, `_` and `-` alike.
    pub fn names_like(&self, prefix: &str) -> Vec<String> {
        let fold = |s: &str| s.to_ascii_lowercase().replace('_', "-");
        self.headers
            .iter()
            .chain(&self.trailers)
            .map(|(k, _)| k.clone())
            .filter(|k| fold(k).starts_with(&fold(prefix)))
            .collect()
    }
}

/// An HTTP/1.1 server on 127.0.0.1 that records every request and answers
/// `200 licence ok`. It serves until the test process ends (its thread is
/// detached; the listener is closed with the process).
pub struct RecordingUpstream {
    pub port: u16,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl RecordingUpstream {
    pub fn start() -> RecordingUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let sink = requests.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let sink = sink.clone();
                thread::spawn(move || serve_recording(conn, &sink));
            }
        });
        RecordingUpstream { port, requests }
    }

    /// What has been received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Reads from `conn` into `buf` until `done(buf)` gives a value; `None`
/// when the connection ends first (or `done` fails).
fn read_until<T>(
    conn: &mut TcpStream,
    buf: &mut Vec<u8>,
    done: impl Fn(&[u8]) -> Result<Option<T>, String>,
) -> Option<T> {
    loop {
        if let Some(found) = done(buf).ok()? {
            return Some(found);
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Names lower-cased.
fn lower(fields: Fields) -> Fields {
    fields
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

/// Reads one request from `conn` (`None` when the connection ends).
fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Recorded> {
    let head_end = read_until(conn, buf, |b| Ok(find(b, b"\r\n\r\n")))?;
    // lossy: the gate forwards header bytes that are not UTF-8
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let body_start = head_end + 4;
    let (start, headers) = split_head(&head).ok()?;
    let mut start = start.split(' ');
    let method = start.next().unwrap_or("").to_owned();
    let path = start.next().unwrap_or("").to_owned();
    let headers = lower(headers);
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let (end, body, trailers) = if header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let chunked = read_until(conn, buf, |b| chunked_body(&b[body_start..]))?;
        let end = body_start + chunked.used;
        (end, chunked.body, lower(chunked.trailers))
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let end = body_start + length;
        read_until(conn, buf, |b| Ok((b.len() >= end).then_some(())))?;
        (end, buf[body_start..end].to_vec(), Vec::new())
    };
    Some(Recorded {
        method,
        path,
        headers,
        body,
        trailers,
        raw: buf.drain(..end).collect(),
    })
}

fn serve_recording(mut conn: TcpStream, sink: &Mutex<Vec<Recorded>>) {
    conn.set_read_timeout(Some(IO_TIMEOUT)).ok();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(request) = read_request(&mut conn, &mut buf) {
        sink.lock().unwrap().push(request);
        let reply = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nlicence ok\n";
        if conn.write_all(reply).is_err() {
            return;
        }
    }
}
