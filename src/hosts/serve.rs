//! `fpgen serve`: the token endpoint as a small native HTTP/1.1 service
//! (hyper on tokio), for users without Envoy and as the "token backend"
//! design that `make bench` compares the filter with. Same code path as the
//! Envoy modules: each token request is a [`lifecycle::Exchange`], fed its
//! head, its body and its fleet call's answer, with the request's headers
//! read as the filter reads them from Envoy, and `token_budget` kept
//! exactly across the process's threads. Only the token endpoint is served
//! (there is no upstream: any other path is 404).
//!
//! No client can stop it or make it hold connections without limit: at
//! most [`Limits::max_connections`] are served at once (the rest wait in
//! the kernel's backlog), a request head must arrive within
//! [`Limits::header_timeout`] and a POST body within
//! [`Limits::body_timeout`], and an answer must be read within
//! [`Limits::send_timeout`] (else the connection is closed), and a failed
//! `accept` (the descriptor limit reached) is logged and retried with a
//! back-off instead of ending the service.

use crate::config::{Config, RateLimitService};
use crate::fleet::{self, Failure, Lease, Verdict};
use crate::ids::CustomerId;
use crate::lifecycle::{
    self, Background, Exchange, FleetCall, FleetReply, Host, Level, Part, Report, Stores,
};
use crate::render::Response as ApiResponse;
use crate::service::{self, Budget, HostFailure};
use crate::stats::Counter;
use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

/// Token budgets of one `fpgen serve` process: a counter of tokens used
/// for each customer with a `token_budget`, by its name
/// ([`fleet::budget_key`]), made when the configuration is read (so a mint
/// allocates nothing for it) and taken from with compare-and-swap, exact
/// across all the process's threads. Like an Envoy's, they start at 0
/// when the process starts. It keeps no leases: every token of a fleet
/// budget is asked of the service.
#[derive(Debug)]
struct Budgets {
    used: std::collections::HashMap<String, AtomicU64>,
}

impl Budgets {
    fn of(config: &Config) -> Self {
        let used = config
            .customers()
            .filter(|c| c.token_budget().is_some())
            .map(|c| {
                (
                    fleet::budget_key(config.environment(), c.id()),
                    AtomicU64::new(0),
                )
            })
            .collect();
        Self { used }
    }
}

impl Stores for Budgets {
    fn take_from_budget(&self, key: &str, budget: u64) -> Result<Budget, HostFailure> {
        let used = self
            .used
            .get(key)
            .ok_or(HostFailure("token budget: no counter for this customer"))?;
        let taken = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < budget).then_some(n + 1)
        });
        Ok(if taken.is_ok() {
            Budget::Taken
        } else {
            Budget::Spent
        })
    }

    fn give_back_to_budget(&self, key: &str) {
        if let Some(used) = self.used.get(key) {
            let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    /// No leases: an empty one, unchanged.
    fn update_lease(
        &self,
        _: &str,
        _: &dyn Fn(Lease) -> Lease,
    ) -> Result<(Lease, Lease), HostFailure> {
        Ok((Lease::default(), Lease::default()))
    }
}

/// One request's host, as the exchange sees it: the request's head, its
/// body once collected, the peer, and the process's budgets. `fpgen serve`
/// has no stats and no access log; its log lines go to its log (a failed
/// fleet call's at most once a second).
struct Exchanged<'a> {
    head: &'a hyper::http::request::Parts,
    peer: SocketAddr,
    budgets: &'a Budgets,
    /// The body collected (`None`: not yet, or it could not be read).
    body: Option<Vec<u8>>,
    /// The body could not be read (a broken body is as good as too large).
    broken: bool,
}

impl Background for Exchanged<'_> {
    fn stores(&self) -> &dyn Stores {
        self.budgets
    }
}

impl Report for Exchanged<'_> {
    fn now_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn count(&self, _: Counter, _: Option<&CustomerId>) {}

    fn log(&self, level: Level, message: &str) {
        match level {
            Level::Debug => tracing::debug!("{message}"),
            Level::Info => tracing::info!("{message}"),
            Level::Warn | Level::Error => {
                if let Some(held) = FAILED_FLEET_CALLS.admit() {
                    tracing::warn!("{message}{}", crate::logging::held_back(held));
                }
            }
        }
    }

    fn set_lease_gauge(&self, _: &CustomerId, _: u32) {}
}

impl Host for Exchanged<'_> {
    /// As the filter reads it from Envoy ([`service::joined_header`]); as
    /// Envoy at an edge (`use_remote_address: true`), the peer is the last
    /// `x-forwarded-for` entry, after those the client sent.
    fn header(&self, name: &str) -> Option<String> {
        match name {
            ":path" => Some(
                self.head
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned(),
            ),
            ":method" => Some(self.head.method.as_str().to_owned()),
            "x-forwarded-for" => Some(match self.values(name) {
                Some(sent) => format!("{sent},{}", self.peer.ip()),
                None => self.peer.ip().to_string(),
            }),
            _ => self.values(name),
        }
    }

    fn header_names(&self, _: Part) -> Vec<String> {
        let names = self.head.headers.keys();
        names.map(|name| name.as_str().to_owned()).collect()
    }

    fn body_size(&self) -> usize {
        if self.broken {
            return usize::MAX;
        }
        self.body.as_ref().map_or(0, Vec::len)
    }

    fn body(&self, limit: usize) -> Vec<u8> {
        let body = self.body.as_deref().unwrap_or_default();
        body.get(..limit.min(body.len()))
            .unwrap_or_default()
            .to_vec()
    }

    fn source_address(&self) -> Option<String> {
        Some(self.peer.ip().to_string())
    }

    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        service::Host::fill_random(&service::SystemHost, buf)
    }

    fn set_log_state(&self, _: &str) {}

    fn want_refill(&self, _: &CustomerId, _: u32) {}
}

impl Exchanged<'_> {
    fn values(&self, name: &str) -> Option<String> {
        let values = self.head.headers.get_all(name).iter();
        service::joined_header(values.map(HeaderValue::as_bytes))
    }
}

/// The rate-limit service `fpgen serve` asks fleet budgets of
/// (`--rate-limit-service`), one token per mint: the request is the one the
/// filter sends ([`fleet::request`]), and its answer is read as the filter
/// reads it ([`fleet::verdict`]).
#[derive(Clone)]
struct FleetClient {
    client: RateLimitServiceClient<tonic::transport::Channel>,
}

/// TLS to the rate-limit service (`https://` URLs): the authorities that
/// sign its certificate, and the client certificate and key fpgen presents
/// (mutual TLS, `fpgen ratelimit --tls-client-ca`). Its `Debug` shows no key.
#[derive(Clone)]
pub struct FleetTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for FleetTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetTls")
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Where `fpgen serve` asks fleet budgets: the service's URL and its TLS.
#[derive(Clone, Debug)]
pub struct FleetService {
    pub url: String,
    pub tls: Option<FleetTls>,
}

impl FleetClient {
    /// A client of `target` (connected on first use, reconnected as needed).
    fn new(target: &FleetService, service: RateLimitService) -> io::Result<Self> {
        let url = &target.url;
        let invalid = |e: &dyn std::fmt::Display| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{url}: {e}"))
        };
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
            .map_err(|e| invalid(&e))?
            .connect_timeout(Duration::from_millis(service.timeout_ms));
        if let Some(tls) = &target.tls {
            if !url.starts_with("https://") {
                return Err(invalid(
                    &"TLS to the rate-limit service needs an https:// URL",
                ));
            }
            let mut config = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            endpoint = endpoint.tls_config(config).map_err(|e| invalid(&e))?;
        }
        Ok(Self {
            client: RateLimitServiceClient::new(endpoint.connect_lazy()),
        })
    }

    /// Makes `call`; what the service said.
    async fn ask(&self, call: &FleetCall) -> Result<Verdict, Failure> {
        use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
        let Ok(request) = RateLimitRequest::decode(call.message.as_slice()) else {
            return Err(Failure::Unavailable);
        };
        let timeout = Duration::from_millis(call.timeout_ms);
        let mut client = self.client.clone();
        let call = client.should_rate_limit(request);
        match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(Failure::Timeout)
            }
            Ok(Err(_)) => Err(Failure::Unavailable),
            Ok(Ok(response)) => fleet::verdict(&response.into_inner().encode_to_vec()),
        }
    }
}

/// At most one log line per second for failed fleet calls, and for failed
/// accepts (the descriptor limit reached).
static FAILED_FLEET_CALLS: crate::logging::Throttle =
    crate::logging::Throttle::new(Duration::from_secs(1));
static FAILED_ACCEPTS: crate::logging::Throttle =
    crate::logging::Throttle::new(Duration::from_secs(1));

/// The fleet client for `config`, or why the configuration cannot be
/// served: a fleet budget needs `--rate-limit-service` (fpgen serve never
/// ignores a budget it was given).
fn fleet_client(config: &Config, url: Option<&FleetService>) -> io::Result<Option<FleetClient>> {
    let budgets = config
        .customers()
        .filter(|c| c.fleet_budget().is_some())
        .count();
    match (config.rate_limit_service(), url) {
        (Some(service), Some(url)) => FleetClient::new(url, service.clone()).map(Some),
        (None, Some(_)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "--rate-limit-service is given, but the configuration has no rate_limit_service",
        )),
        (_, None) if budgets > 0 => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{budgets} customer(s) have a fleet_budget: give --rate-limit-service \
                 (the URL of the rate-limit service, e.g. http://127.0.0.1:8081)"
            ),
        )),
        (_, None) => Ok(None),
    }
}

/// How `fpgen serve` bounds what its clients can hold.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// A request head (request line and headers) must arrive within this.
    pub header_timeout: Duration,
    /// A POST body must arrive within this, counted from its head.
    pub body_timeout: Duration,
    /// A write to the client may wait this long for it to read (a client
    /// that never reads its answers would otherwise hold its connection).
    pub send_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(15),
            send_timeout: Duration::from_secs(15),
        }
    }
}

/// The longest pause between two attempts to accept after `accept` fails
/// (out of descriptors, out of memory): the loop backs off from 10 ms to
/// this, and keeps serving the connections it has.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `/hms/fp/token` on `addr` until the process ends, with `threads`
/// worker threads, within `limits`. Only binding the address fails it: an
/// error accepting a connection (e.g. the descriptor limit reached) is
/// logged, waited out and retried.
pub fn serve(
    config: Config,
    addr: SocketAddr,
    threads: usize,
    limits: Limits,
    rate_limit_service: Option<&FleetService>,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_io()
        .enable_time()
        .build()?;
    runtime.block_on(async move {
        // (tonic's lazy channel needs the runtime.)
        let fleet = fleet_client(&config, rate_limit_service)?;
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(
            "serving /hms/fp/token on http://{} (at most {} connections, \
             request heads within {} s, bodies within {} s, answers read within {} s)",
            listener.local_addr()?,
            limits.max_connections,
            limits.header_timeout.as_secs_f64(),
            limits.body_timeout.as_secs_f64(),
            limits.send_timeout.as_secs_f64(),
        );
        let shared = Shared {
            budgets: Arc::new(Budgets::of(&config)),
            config: Arc::new(config),
            fleet,
        };
        let permits = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(permits));
        let mut backoff = Duration::ZERO;
        loop {
            // A slot first: past the cap, connections wait in the backlog.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return Ok(());
            };
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => {
                    backoff = Duration::ZERO;
                    accepted
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_BACKOFF);
                    if let Some(held) = FAILED_ACCEPTS.admit() {
                        tracing::warn!(
                            "accept: {e}; retrying in {} ms{}",
                            backoff.as_millis(),
                            crate::logging::held_back(held)
                        );
                    }
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(shared.clone(), stream, peer, limits, slot));
        }
    })
}

/// Serves one connection, then frees its slot.
async fn connection(
    shared: Shared,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    limits: Limits,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper::service::service_fn(move |req| {
        answer(shared.clone(), peer, limits.body_timeout, req)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(
            TokioIo::new(SendTimeout::new(stream, limits.send_timeout)),
            service,
        )
        .await;
    drop(slot);
}

/// A connection whose writes fail once one has waited `timeout` for the
/// client to read: hyper has no write timeout, so without this a client
/// that sends requests and never reads the answers holds its connection
/// (and its slot) for as long as it likes.
struct SendTimeout {
    io: tokio::net::TcpStream,
    timeout: Duration,
    /// Set while a write is waiting for room in the socket.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SendTimeout {
    fn new(io: tokio::net::TcpStream, timeout: Duration) -> Self {
        Self {
            io,
            timeout,
            stalled: None,
        }
    }

    /// `Pending` from the socket: arms the deadline (once per stall) and
    /// fails when it has passed.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let timeout = self.timeout;
        let deadline = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its answer in time",
            )));
        }
        Poll::Pending
    }

    fn track<T>(&mut self, poll: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending => self.pending(cx),
            ready => {
                self.stalled = None;
                ready
            }
        }
    }
}

impl AsyncRead for SendTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.track(poll, cx)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.track(poll, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_shutdown(cx);
        self.track(poll, cx)
    }
}

/// Why a request was dropped without an answer.
#[derive(Debug)]
struct BodyTimedOut;

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body did not arrive in time")
    }
}

impl std::error::Error for BodyTimedOut {}

/// What every request of the process shares.
#[derive(Clone)]
struct Shared {
    config: Arc<Config>,
    budgets: Arc<Budgets>,
    fleet: Option<FleetClient>,
}

async fn answer(
    shared: Shared,
    peer: SocketAddr,
    body_timeout: Duration,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, BodyTimedOut> {
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    // The token endpoint alone: there is no upstream to pass anything to.
    if !service::is_token_path(path_and_query) {
        let mut not_found = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Ok(not_found);
    }
    let (head, body) = req.into_parts();
    let mut body = Some(body);
    let mut request = Exchanged {
        head: &head,
        peer,
        budgets: &shared.budgets,
        body: None,
        broken: false,
    };
    // dropped before its answer (the client left: hyper drops this future),
    // the exchange gives back what it took
    let mut exchange = Abandoning(Exchange::new(Some(&*shared.config)), &shared.budgets);
    // hyper's body may be empty, and is read either way
    let mut next = exchange.0.on_headers(&request, false);
    // (each step moves on: the body is collected once, a call made once)
    for _ in 0..4 {
        next = match next {
            lifecycle::Next::Reply(answer) => return Ok(to_hyper(answer)),
            // (no edits: only token requests reach the exchange here)
            lifecycle::Next::CollectBody(_) => {
                let limit = lifecycle::body_read_limit(&shared.config);
                let read = read_body(body.take(), limit);
                match tokio::time::timeout(body_timeout, read).await {
                    Err(_) => return Err(BodyTimedOut),
                    Ok(read) => (request.broken, request.body) = (read.is_none(), read),
                }
                exchange.0.on_body(&request, true)
            }
            lifecycle::Next::AskFleet(call) => {
                exchange.0.on_call_made(&request);
                let verdict = match &shared.fleet {
                    Some(fleet) => fleet.ask(&call).await,
                    None => Err(Failure::Unavailable),
                };
                exchange
                    .0
                    .on_fleet_reply(&request, FleetReply::Read(verdict))
            }
            lifecycle::Next::Continue(_) | lifecycle::Next::Wait => break,
        };
    }
    let internal = service::refuse(crate::error::ErrorCode::Internal, "");
    Ok(to_hyper(internal.response))
}

/// An exchange that gives back what it took when it is dropped before its
/// answer ([`Exchange::abandon`]).
struct Abandoning<'c, 'b>(Exchange<&'c Config>, &'b Budgets);

impl Drop for Abandoning<'_, '_> {
    fn drop(&mut self) {
        self.0.abandon(self.1);
    }
}

/// The body, at most `limit` bytes of it (the rest is not read); `None`
/// when it cannot be read.
async fn read_body(body: Option<Incoming>, limit: usize) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let Some(mut body) = body else {
        return Some(out);
    };
    while out.len() < limit {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame.ok()?.into_data() {
            let room = limit.saturating_sub(out.len()).min(data.len());
            out.extend_from_slice(data.get(..room).unwrap_or_default());
        }
    }
    Some(out)
}

fn to_hyper(api: ApiResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::default());
    *response.status_mut() =
        StatusCode::from_u16(api.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    for (name, value) in api.headers_to_send() {
        headers.insert(name, HeaderValue::from_static(value));
    }
    *response.body_mut() = Full::new(Bytes::from(api.body));
    response
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::SendTimeout;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes to a peer that never reads fail once one has waited the
    /// timeout; writes to a peer that reads go on.
    #[tokio::test]
    async fn a_write_the_peer_never_reads_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut out = SendTimeout::new(server, Duration::from_millis(200));
        let chunk = vec![0u8; 64 * 1024];
        let started = Instant::now();
        let mut sent = 0usize;
        let error = loop {
            match out.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => break e,
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no timeout after {sent} bytes"
            );
        };
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        assert!(sent > 0, "nothing was sent before the buffers filled");
        drop(client);

        // a peer that reads: every write completes
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut out = SendTimeout::new(server, Duration::from_millis(200));
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.map(|_| all.len())
        });
        for _ in 0..200 {
            out.write_all(&chunk).await.unwrap();
        }
        out.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap().unwrap(), 200 * chunk.len());
    }
}
