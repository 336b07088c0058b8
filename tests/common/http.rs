//! A raw HTTP/1.1 client over `TcpStream`, so that a test controls every
//! byte (an unencoded `+` in the query, odd headers, broken framing), and
//! the message parsing it shares with the recording upstream.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Connect, read and write timeout of the HTTP client.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed HTTP/1.1 response (chunked bodies decoded, 1xx skipped).
#[derive(Clone, PartialEq, Eq)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        values(&self.headers, name).first().copied()
    }

    /// Every header called `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        values(&self.headers, name)
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl fmt::Debug for HttpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.text())
            .finish()
    }
}

/// `GET path_and_query` on 127.0.0.1:`port`.
pub fn get(port: u16, path_and_query: &str) -> HttpResponse {
    request(port, "GET", path_and_query, &[], None)
}

/// `POST` of a form body (`Content-Type: application/x-www-form-urlencoded`).
pub fn post_form(port: u16, path_and_query: &str, body: &[u8]) -> HttpResponse {
    request(
        port,
        "POST",
        path_and_query,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(body),
    )
}

/// Any request. The request line is sent exactly as given. `Host: localhost`
/// and `Connection: close` are added unless `headers` has them;
/// `Content-Length` is added for a body unless `headers` has it or
/// `Transfer-Encoding` (then `body` is sent as it is, already framed).
pub fn request(
    port: u16,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> HttpResponse {
    raw(port, &request_bytes(method, path_and_query, headers, body))
}

/// The bytes [`request`] sends.
pub fn request_bytes(
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path_and_query} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str("Host: localhost\r\n");
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(body) = body {
        if !has("content-length") && !has("transfer-encoding") {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    bytes
}

/// Sends `bytes` as they are to 127.0.0.1:`port` and reads one response
/// (until it is complete by its framing, or until the server closes).
/// Panics on a connection error, a timeout or an unparsable answer.
pub fn raw(port: u16, bytes: &[u8]) -> HttpResponse {
    try_raw(port, bytes).unwrap_or_else(|e| panic!("HTTP to 127.0.0.1:{port} failed: {e}"))
}

/// [`raw`], with the failure as `Err`.
pub fn try_raw(port: u16, bytes: &[u8]) -> Result<HttpResponse, String> {
    exchange(port, IO_TIMEOUT, bytes)
}

/// [`try_raw`] with its own timeout (the readiness probes use a short one).
pub fn exchange(port: u16, timeout: Duration, bytes: &[u8]) -> Result<HttpResponse, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    // A server may answer and close before it has read everything (e.g. a
    // body that is too large): a failed write is reported only if no
    // response can be read.
    let write_error = stream.write_all(bytes).and_then(|()| stream.flush()).err();
    let head_request = bytes.starts_with(b"HEAD ");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => {
                return parse_response(&buf, true, head_request)?.ok_or_else(|| {
                    let why = write_error
                        .as_ref()
                        .map(|e| format!(" (write failed: {e})"))
                        .unwrap_or_default();
                    format!(
                        "connection closed before a complete response{why}; got {:?}",
                        String::from_utf8_lossy(&buf)
                    )
                });
            }
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(response) = parse_response(&buf, false, head_request)? {
                    return Ok(response);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // A reset right after a close-delimited response still
                // delivered that response.
                if e.kind() == io::ErrorKind::ConnectionReset {
                    if let Ok(Some(response)) = parse_response(&buf, true, head_request) {
                        return Ok(response);
                    }
                }
                let why = write_error
                    .as_ref()
                    .map(|w| format!(" (write failed: {w})"))
                    .unwrap_or_default();
                return Err(format!(
                    "read: {e}{why}; got {:?}",
                    String::from_utf8_lossy(&buf)
                ));
            }
        }
    }
}

/// Parses one response from `buf`: `Ok(None)` while it is incomplete (and
/// the connection is open), `Err` when it cannot be one.
pub fn parse_response(
    buf: &[u8],
    eof: bool,
    head_request: bool,
) -> Result<Option<HttpResponse>, String> {
    Ok(parse_one(buf, eof, head_request)?.map(|(response, _)| response))
}

/// [`parse_response`], with the number of bytes the response took.
fn parse_one(
    whole: &[u8],
    eof: bool,
    head_request: bool,
) -> Result<Option<(HttpResponse, usize)>, String> {
    let mut buf = whole;
    let used = |rest: &[u8], n: usize| whole.len() - rest.len() + n;
    loop {
        let Some(end) = find(buf, b"\r\n\r\n") else {
            return if eof && !buf.is_empty() {
                Err(format!(
                    "incomplete response head: {:?}",
                    String::from_utf8_lossy(buf)
                ))
            } else {
                Ok(None)
            };
        };
        let head = std::str::from_utf8(&buf[..end])
            .map_err(|_| "response head is not UTF-8".to_owned())?;
        let rest = &buf[end + 4..];
        let (status_line, headers) = split_head(head)?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            return Err(format!("not an HTTP/1 status line: {status_line:?}"));
        }
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
        if (100..200).contains(&status) && status != 101 {
            buf = rest; // interim response (100 Continue): the real one follows
            continue;
        }
        let response = |body: Vec<u8>| HttpResponse {
            status,
            headers: headers.clone(),
            body,
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        if head_request || status == 204 || status == 304 {
            return Ok(Some((response(Vec::new()), used(rest, 0))));
        }
        if header("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
        {
            return match chunked_body(rest)? {
                Some(chunked) => Ok(Some((response(chunked.body), used(rest, chunked.used)))),
                None if eof => Err(format!(
                    "chunked body cut short: {:?}",
                    String::from_utf8_lossy(rest)
                )),
                None => Ok(None),
            };
        }
        if let Some(length) = header("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| format!("bad content-length: {length:?}"))?;
            return if rest.len() >= length {
                Ok(Some((
                    response(rest[..length].to_vec()),
                    used(rest, length),
                )))
            } else if eof {
                Err(format!("body cut short: {} of {length} bytes", rest.len()))
            } else {
                Ok(None)
            };
        }
        // Delimited by the end of the connection.
        return Ok(eof.then(|| (response(rest.to_vec()), whole.len())));
    }
}

/// Header or trailer fields, in order, names as sent.
pub type Fields = Vec<(String, String)>;

/// One keep-alive HTTP/1.1 connection to 127.0.0.1: requests one after
/// another, each answer read by its framing. For many requests in a test
/// without a connection each.
pub struct KeepAlive {
    port: u16,
    stream: TcpStream,
    buf: Vec<u8>,
}

impl KeepAlive {
    pub fn open(port: u16) -> KeepAlive {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        KeepAlive {
            port,
            stream,
            buf: Vec::new(),
        }
    }

    /// `GET path_and_query` on this connection.
    pub fn get(&mut self, path_and_query: &str) -> HttpResponse {
        self.send("GET", path_and_query, &[], None)
    }

    /// A request on this connection (kept alive), its answer read whole.
    pub fn send(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> HttpResponse {
        self.try_send(method, path_and_query, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path_and_query}: {e}"))
    }

    /// [`KeepAlive::send`], with what went wrong on the connection as `Err`
    /// (a reset, a close, a malformed answer).
    pub fn try_send(
        &mut self,
        method: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<HttpResponse, String> {
        let mut all = vec![("Connection", "keep-alive")];
        all.extend_from_slice(headers);
        let request = request_bytes(method, path_and_query, &all, body);
        self.stream
            .write_all(&request)
            .map_err(|e| format!("write: {e}"))?;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            if let Some((response, used)) = parse_one(&self.buf, false, false)? {
                self.buf.drain(..used);
                // Envoy closes after a direct response to a request whose
                // body it did not read (it says so): the next request goes
                // on a new connection, as a client's would.
                if response.header("connection") == Some("close") {
                    *self = KeepAlive::open(self.port);
                }
                return Ok(response);
            }
            let n = self
                .stream
                .read(&mut chunk)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("the server closed the keep-alive connection".into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// Every value of the fields called `name` (case-insensitive), in order.
pub fn values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// A message head (without its final empty line): the start line and the
/// header fields.
pub fn split_head(head: &str) -> Result<(&str, Fields), String> {
    let mut lines = head.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let fields = lines
        .map(|line| {
            line.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .ok_or_else(|| format!("bad header line: {line:?}"))
        })
        .collect::<Result<_, _>>()?;
    Ok((start, fields))
}

/// A chunked body, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunked {
    /// Bytes of the framing used, trailers and final empty line included.
    pub used: usize,
    pub body: Vec<u8>,
    pub trailers: Fields,
}

/// Decodes the chunked body at the start of `buf`: `Ok(None)` while it is
/// incomplete, `Err` when it cannot be one.
pub fn chunked_body(buf: &[u8]) -> Result<Option<Chunked>, String> {
    let mut pos = 0;
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(&buf[pos..], b"\r\n").map(|i| pos + i) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&buf[pos..line_end])
            .map_err(|_| "chunk size is not UTF-8".to_owned())?;
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| format!("bad chunk size: {line:?}"))?;
        pos = line_end + 2;
        if size == 0 {
            return trailers(buf, pos, body);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".to_owned());
        }
        pos += size + 2;
    }
}

/// The trailers after the last chunk (at `pos`), then the empty line.
fn trailers(buf: &[u8], mut pos: usize, body: Vec<u8>) -> Result<Option<Chunked>, String> {
    let mut trailers = Vec::new();
    loop {
        let Some(end) = find(&buf[pos..], b"\r\n").map(|i| pos + i) else {
            return Ok(None);
        };
        if end == pos {
            return Ok(Some(Chunked {
                used: end + 2,
                body,
                trailers,
            }));
        }
        let line = String::from_utf8_lossy(&buf[pos..end]);
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| format!("bad trailer line: {line:?}"))?;
        trailers.push((k.trim().to_owned(), v.trim().to_owned()));
        pos = end + 2;
    }
}

/// Where `needle` first occurs in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
