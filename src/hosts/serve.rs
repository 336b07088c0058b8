//! `fpgen serve`: the token endpoint as a small native HTTP/1.1 service
//! (hyper on tokio), for users without Envoy and as the "token backend"
//! design that `make bench` compares the filter with. Same code path as the
//! filter: [`service::admit`], then [`service::handle`], with the request's
//! headers read as the filter reads them from Envoy, and `token_budget`
//! kept exactly across the process's threads.
//!
//! No client can stop it or make it hold connections without limit: at
//! most [`Limits::max_connections`] are served at once (the rest wait in
//! the kernel's backlog), a request head must arrive within
//! [`Limits::header_timeout`] and a POST body within
//! [`Limits::body_timeout`], and an answer must be read within
//! [`Limits::send_timeout`] (else the connection is closed), and a failed
//! `accept` (the descriptor limit reached) is logged and retried with a
//! back-off instead of ending the service.

use crate::config::Config;
use crate::config::{FleetBudget, RateLimitService};
use crate::edge::{self, TokenStart};
use crate::error::ErrorCode;
use crate::fleet::{self, Failure};
use crate::ids::CustomerId;
use crate::render::Response as ApiResponse;
use crate::service::{self, Answer, Budget, Host, HostFailure, PendingBudget, Settled, Step};
use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prost::Message as _;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Semaphore;

/// The host of one request: system clock and randomness, the client
/// address under the configuration's `client_address` policy, and the
/// process's token budgets.
struct ServeHost<'b> {
    client: Option<IpAddr>,
    budgets: &'b Budgets,
}

/// Token budgets of one `fpgen serve` process: a counter of tokens used
/// for each customer with a `token_budget`, made when the configuration is
/// read (so a mint allocates nothing for it) and taken from with
/// compare-and-swap, exact across all the process's threads. Like an
/// Envoy's, they start at 0 when the process starts.
#[derive(Debug)]
struct Budgets {
    used: std::collections::HashMap<CustomerId, AtomicU64>,
}

impl Budgets {
    fn of(config: &Config) -> Self {
        let used = config
            .customers
            .values()
            .filter(|c| c.token_budget.is_some())
            .map(|c| (c.id.clone(), AtomicU64::new(0)))
            .collect();
        Self { used }
    }

    fn take(&self, customer: &CustomerId, budget: u64) -> Result<Budget, HostFailure> {
        let used = self
            .used
            .get(customer)
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
}

impl Host for ServeHost<'_> {
    fn now(&self) -> i64 {
        service::SystemHost.now()
    }
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        service::SystemHost.fill_random(buf)
    }
    fn client_address(&self) -> Option<IpAddr> {
        self.client
    }
    fn take_from_budget(&self, customer: &CustomerId, budget: u64) -> Result<Budget, HostFailure> {
        self.budgets.take(customer, budget)
    }
    fn give_back_to_budget(&self, customer: &CustomerId) {
        if let Some(used) = self.budgets.used.get(customer) {
            let _ = used.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }
}

/// The rate-limit service `fpgen serve` asks fleet budgets of
/// (`--rate-limit-service`), one token per mint: the request is the one the
/// filter sends ([`fleet::request`]), and its answer is read as the filter
/// reads it ([`fleet::verdict`]).
#[derive(Clone)]
struct FleetClient {
    client: RateLimitServiceClient<tonic::transport::Channel>,
    service: RateLimitService,
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
            service,
        })
    }

    async fn ask(&self, customer: &CustomerId, budget: FleetBudget) -> Budget {
        use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
        let bytes = fleet::request(&self.service, customer, budget, 1);
        let Ok(request) = RateLimitRequest::decode(bytes.as_slice()) else {
            return Budget::FleetUnavailable(Failure::Unavailable);
        };
        let timeout = Duration::from_millis(self.service.timeout_ms);
        let mut client = self.client.clone();
        let call = client.should_rate_limit(request);
        let verdict = match tokio::time::timeout(timeout, call).await {
            Err(_) => Err(Failure::Timeout),
            Ok(Err(status)) if status.code() == tonic::Code::DeadlineExceeded => {
                Err(Failure::Timeout)
            }
            Ok(Err(_)) => Err(Failure::Unavailable),
            Ok(Ok(response)) => fleet::verdict(&response.into_inner().encode_to_vec()),
        };
        if let Err(failure) = &verdict {
            if let Some(held) = FAILED_FLEET_CALLS.admit() {
                tracing::warn!(
                    "fleet budget of customer {customer}: {}{}",
                    failure.message(),
                    crate::logging::held_back(held)
                );
            }
        }
        Budget::of_fleet(verdict)
    }
}

/// At most one log line per second for failed fleet calls, and for failed
/// accepts (the descriptor limit reached).
static FAILED_FLEET_CALLS: crate::logging::Throttle =
    crate::logging::Throttle::new(Duration::from_secs(1));
static FAILED_ACCEPTS: crate::logging::Throttle =
    crate::logging::Throttle::new(Duration::from_secs(1));

/// Answers a token request's [`Step`]s: the local budget from the
/// process's counters, the fleet budget from the rate-limit service.
async fn drive(mut step: Step, host: &ServeHost<'_>, fleet: Option<&FleetClient>) -> Answer {
    loop {
        let (pending, budget) = match step.settle_locally(host) {
            Settled::Answer(answer) => return answer,
            Settled::Fleet(pending, budget) => (pending, budget),
        };
        // Until the call answers, the pending request is the guard's: a
        // client that leaves (hyper drops this future) gets its local token
        // given back.
        let customer = pending.customer().clone();
        let guard = Abandoned(Some(pending), host);
        let answer = match fleet {
            Some(fleet) => fleet.ask(&customer, budget).await,
            None => Budget::FleetUnavailable(Failure::Unavailable),
        };
        let Some(pending) = guard.disarm() else {
            return service::refuse(ErrorCode::Internal, "");
        };
        step = pending.continue_with(Ok(answer), host);
    }
}

/// A request waiting for its fleet budget; dropped before the answer (the
/// client left), it gives back what it took ([`PendingBudget::abandon`]).
struct Abandoned<'h, 'b>(Option<PendingBudget>, &'h ServeHost<'b>);

impl Abandoned<'_, '_> {
    fn disarm(mut self) -> Option<PendingBudget> {
        self.0.take()
    }
}

impl Drop for Abandoned<'_, '_> {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.abandon(self.1);
        }
    }
}

/// The fleet client for `config`, or why the configuration cannot be
/// served: a fleet budget needs `--rate-limit-service` (fpgen serve never
/// ignores a budget it was given).
fn fleet_client(config: &Config, url: Option<&FleetService>) -> io::Result<Option<FleetClient>> {
    let budgets = config
        .customers
        .values()
        .filter(|c| c.fleet_budget.is_some())
        .count();
    match (&config.rate_limit_service, url) {
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
    let Shared {
        config,
        budgets,
        fleet,
    } = shared;
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    if !service::is_token_path(&path_and_query) {
        let mut not_found = Response::new(Full::new(Bytes::from_static(b"not found\n")));
        *not_found.status_mut() = StatusCode::NOT_FOUND;
        return Ok(not_found);
    }
    let query = service::query_of(&path_and_query);
    let header = |name: &str| {
        service::joined_header(
            req.headers()
                .get_all(name)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    };
    // As Envoy at an edge (use_remote_address: true): the peer is the last
    // x-forwarded-for entry, after those the client sent.
    let policy = &config.client_address;
    let xff = policy
        .use_x_forwarded_for
        .then(|| match header("x-forwarded-for") {
            Some(sent) => format!("{sent},{}", peer.ip()),
            None => peer.ip().to_string(),
        });
    let peer_text = peer.ip().to_string();
    let client = service::client_address(policy, Some(&peer_text), xff.as_deref());
    let host = ServeHost {
        client,
        budgets: &budgets,
    };
    let method = req.method().as_str();
    // hyper's body may be empty, and is read either way
    let step = match edge::token_request(&config, query, method, header, false, &host) {
        TokenStart::Step(step) => step,
        TokenStart::AwaitBody => {
            let body = Limited::new(req.into_body(), edge::body_read_limit(&config)).collect();
            match tokio::time::timeout(body_timeout, body).await {
                Err(_) => return Err(BodyTimedOut),
                Ok(Ok(body)) => edge::token_body(&config, query, &body.to_bytes(), &host),
                // past the read limit (or a broken body): too large either way
                Ok(Err(_)) => Step::Answer(service::refuse(ErrorCode::BodyTooLarge, query)),
            }
        }
    };
    let answer = drive(step, &host, fleet.as_ref()).await;
    Ok(to_hyper(answer.response))
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
