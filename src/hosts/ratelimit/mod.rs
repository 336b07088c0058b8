//! `fpgen ratelimit`: Envoy's global rate-limit service
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`, the
//! protocol of `envoyproxy/ratelimit` and Limitador) on a Redis primary,
//! for budgets that hold across a fleet of Envoys.
//!
//! It needs no configuration of its own: every descriptor that is to be
//! counted carries its limit (`RateLimitDescriptor.limit`, the override
//! Envoy's protocol has for it), so the budget is written once, where the
//! caller is configured. A descriptor without a limit is not counted and
//! is answered OK (as `envoyproxy/ratelimit` answers a descriptor it has
//! no rule for).
//!
//! **Exact.** A request is admitted only if, for every descriptor,
//! `used + hits ≤ limit`; then, and only then, every descriptor's count
//! goes up by its hits. The check and the counting of all descriptors of a
//! request are one Lua script, which Redis runs atomically, so any number of
//! services on one Redis never admit more than the limit (a read followed
//! by an increment, as `limitador`'s ordinary path does, admitted 108 and
//! 251 of 1,000 against 100). Refused hits are not counted: a caller that
//! asks for 10 when 5 remain can still be given the 5. A descriptor with
//! `is_negative_hits` gives hits back (never below 0) and is never refused.
//!
//! **Periods.** Counts are kept per fixed window of the limit's unit,
//! aligned to the Unix epoch on Redis's own clock (`TIME`, so services on
//! several machines agree): second, minute, hour, day, month (30 days) and
//! year (365 days), the units a descriptor's limit can name, as
//! `envoyproxy/ratelimit` counts them. A window's key expires one second
//! after the window ends.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod link;
pub use link::RedisTarget;

/// The check-and-count of one request. KEYS: each counted descriptor's
/// counter (without its window). ARGV, four per key: limit, period in
/// seconds, hits, 1 to give hits back. Returns 1 (admitted) or 0, then for
/// each key its count after the request and the milliseconds to its
/// window's end (a caller that keeps leased hits must not use them after).
const SCRIPT: &str = r"
local time = redis.call('TIME')
local now = tonumber(time[1])
local now_ms = now * 1000 + math.floor(tonumber(time[2]) / 1000)
local over = false
local used = {}
for i = 1, #KEYS do
  local limit = tonumber(ARGV[4 * i - 3])
  local period = tonumber(ARGV[4 * i - 2])
  local hits = tonumber(ARGV[4 * i - 1])
  local key = KEYS[i] .. ':' .. math.floor(now / period)
  used[i] = tonumber(redis.call('GET', key) or '0')
  if ARGV[4 * i] ~= '1' and used[i] + hits > limit then
    over = true
  end
end
local out = { over and 0 or 1 }
for i = 1, #KEYS do
  local period = tonumber(ARGV[4 * i - 2])
  local hits = tonumber(ARGV[4 * i - 1])
  local window = math.floor(now / period)
  local key = KEYS[i] .. ':' .. window
  local count = used[i]
  if not over then
    if ARGV[4 * i] == '1' then
      count = math.max(count - hits, 0)
      redis.call('SET', key, count)
    else
      count = redis.call('INCRBY', key, hits)
    end
    redis.call('EXPIREAT', key, (window + 1) * period + 1)
  end
  out[#out + 1] = count
  out[#out + 1] = (window + 1) * period * 1000 - now_ms
end
return out
";

/// The length of a unit's window, in seconds, and the unit as the response
/// names it; `None` for an unknown unit.
fn period(unit: i32) -> Option<(u64, Unit)> {
    Some(match RateLimitUnit::try_from(unit).ok()? {
        RateLimitUnit::Second => (1, Unit::Second),
        RateLimitUnit::Minute => (60, Unit::Minute),
        RateLimitUnit::Hour => (3_600, Unit::Hour),
        RateLimitUnit::Day => (86_400, Unit::Day),
        RateLimitUnit::Month => (30 * 86_400, Unit::Month),
        RateLimitUnit::Year => (365 * 86_400, Unit::Year),
        RateLimitUnit::Unknown => return None,
    })
}

/// A descriptor's counter in Redis: domain, entries and period, each part
/// length-prefixed so that no two descriptors share a key.
fn key_of(domain: &str, descriptor: &RateLimitDescriptor, period: u64) -> String {
    let mut key = format!("fpgen:rl:{}:{domain}", domain.len());
    for e in &descriptor.entries {
        let _ = write!(
            key,
            "|{}:{}={}:{}",
            e.key.len(),
            e.key,
            e.value.len(),
            e.value
        );
    }
    let _ = write!(key, "|{period}");
    key
}

/// What the service has done since it started (`/stats`).
#[derive(Debug, Default)]
pub struct Counters {
    requests: AtomicU64,
    ok: AtomicU64,
    over_limit: AtomicU64,
    invalid: AtomicU64,
    redis_errors: AtomicU64,
    hits_admitted: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// `name value` lines, Envoy's `/stats` style.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (name, c) in [
            ("requests", &self.requests),
            ("ok", &self.ok),
            ("over_limit", &self.over_limit),
            ("invalid", &self.invalid),
            ("redis_errors", &self.redis_errors),
            ("hits_admitted", &self.hits_admitted),
        ] {
            let _ = writeln!(out, "fpgen_ratelimit.{name}: {}", c.load(Ordering::Relaxed));
        }
        out
    }
}

/// The service: the link to Redis, the bounds of a call and the counters.
#[derive(Clone)]
struct Limiter {
    link: Arc<link::Link>,
    /// The most one request waits for Redis.
    timeout: Duration,
    bounds: Bounds,
    script: Arc<redis::Script>,
    counters: Arc<Counters>,
}

/// What one call may carry. fpgen's modules send one descriptor of one
/// entry (`customer`) and never negative hits; the defaults leave room for
/// other clients of the protocol and refuse what no honest one sends.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Descriptors in one request (each one a Redis key).
    pub descriptors: usize,
    /// Entries in one descriptor.
    pub entries: usize,
    /// Bytes of the domain, of an entry's key, of an entry's value.
    pub bytes: usize,
    /// Whether `is_negative_hits` (hits given back) is served; refused
    /// (INVALID_ARGUMENT) by default: it lets any caller empty a budget.
    pub negative_hits: bool,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            descriptors: 8,
            entries: 8,
            bytes: 256,
            negative_hits: false,
        }
    }
}

/// The largest gRPC message the service reads: 8 descriptors of 8 entries
/// of 256-byte keys and values is 33 KiB.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One descriptor of a request, as the script counts it.
struct Counted {
    index: usize,
    key: String,
    limit: u32,
    period: u64,
    unit: Unit,
    hits: u64,
    give_back: bool,
}

impl Counted {
    /// Its status after the script: its count `used` and the milliseconds
    /// to its window's end. In a refused request, a descriptor whose hits would
    /// have fitted is OK and the others are OVER_LIMIT.
    fn status(&self, admitted: bool, used: i64, reset_ms: i64) -> DescriptorStatus {
        let used_now = u64::try_from(used).unwrap_or(0);
        let fits = self.give_back || used_now + self.hits <= u64::from(self.limit);
        let code = if admitted || fits {
            Code::Ok
        } else {
            Code::OverLimit
        };
        let remaining = i64::from(self.limit).saturating_sub(used).max(0);
        DescriptorStatus {
            code: code.into(),
            current_limit: Some(RateLimit {
                name: String::new(),
                requests_per_unit: self.limit,
                unit: self.unit.into(),
            }),
            limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: reset_ms.div_euclid(1_000),
                // < 1e9: the remainder of a division by 1,000, in ns
                nanos: i32::try_from(reset_ms.rem_euclid(1_000) * 1_000_000).unwrap_or(0),
            }),
            ..DescriptorStatus::default()
        }
    }
}

impl Limiter {
    /// The descriptors that are counted, or why the request is invalid.
    fn counted(request: &RateLimitRequest, bounds: &Bounds) -> Result<Vec<Counted>, tonic::Status> {
        let refuse = |m: String| Err(tonic::Status::invalid_argument(m));
        if request.descriptors.len() > bounds.descriptors {
            return refuse(format!(
                "{} descriptors: at most {} are served",
                request.descriptors.len(),
                bounds.descriptors
            ));
        }
        if request.domain.len() > bounds.bytes {
            return refuse(format!("the domain is longer than {} bytes", bounds.bytes));
        }
        let default_hits = u64::from(request.hits_addend.max(1));
        let mut counted = Vec::new();
        for (index, d) in request.descriptors.iter().enumerate() {
            if d.entries.len() > bounds.entries {
                return refuse(format!(
                    "descriptor {index}: {} entries: at most {} are served",
                    d.entries.len(),
                    bounds.entries
                ));
            }
            if d.entries
                .iter()
                .any(|e| e.key.len() > bounds.bytes || e.value.len() > bounds.bytes)
            {
                return refuse(format!(
                    "descriptor {index}: an entry's key or value is longer than {} bytes",
                    bounds.bytes
                ));
            }
            if d.is_negative_hits && !bounds.negative_hits {
                return refuse(format!(
                    "descriptor {index}: negative hits are not served \
                     (fpgen ratelimit --allow-negative-hits)"
                ));
            }
            let Some(limit) = d.limit else { continue };
            let (period, unit) = period(limit.unit).ok_or_else(|| {
                tonic::Status::invalid_argument(format!(
                    "descriptor {index}: the limit's unit is not a known unit"
                ))
            })?;
            let hits = d.hits_addend.map_or(default_hits, |h| h.value);
            if hits > (1 << 52) {
                return Err(tonic::Status::invalid_argument(format!(
                    "descriptor {index}: hits_addend {hits} is too large"
                )));
            }
            counted.push(Counted {
                index,
                key: key_of(&request.domain, d, period),
                limit: limit.requests_per_unit,
                period,
                unit,
                hits,
                give_back: d.is_negative_hits,
            });
        }
        Ok(counted)
    }

    /// Runs the script for `counted`, within the time limit.
    async fn run_script(&self, counted: &[Counted]) -> Result<Vec<i64>, tonic::Status> {
        let mut invocation = self.script.prepare_invoke();
        for c in counted {
            invocation
                .key(&c.key)
                .arg(c.limit)
                .arg(c.period)
                .arg(c.hits)
                .arg(u8::from(c.give_back));
        }
        let reply = match self.link.connection() {
            Err(why) => Err(why),
            Ok(mut redis) => {
                let call = invocation.invoke_async::<Vec<i64>>(&mut redis);
                match tokio::time::timeout(self.timeout, call).await {
                    Ok(Ok(reply)) => Ok(reply),
                    Ok(Err(e)) => {
                        if link::needs_reconnect(&e) {
                            self.link.reconnect(link::why(&e));
                        } else if !matches!(e.kind(), redis::ErrorKind::ResponseError) {
                            self.link.suspect();
                        }
                        Err(link::why(&e))
                    }
                    Err(_) => {
                        self.link.suspect();
                        Err("no answer in time".to_owned())
                    }
                }
            }
        };
        reply.map_err(|why| {
            Counters::add(&self.counters.redis_errors, 1);
            if let Some(held) = FAILED_CALLS.admit() {
                tracing::warn!(
                    "a call failed: redis: {why}{}",
                    crate::logging::held_back(held)
                );
            }
            tonic::Status::unavailable(format!("redis: {why}"))
        })
    }

    async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        let counted = Self::counted(request, &self.bounds)?;
        let mut statuses: Vec<DescriptorStatus> = request
            .descriptors
            .iter()
            .map(|_| DescriptorStatus {
                code: Code::Ok.into(),
                ..DescriptorStatus::default()
            })
            .collect();
        if counted.is_empty() {
            return Ok(RateLimitResponse {
                overall_code: Code::Ok.into(),
                statuses,
                ..RateLimitResponse::default()
            });
        }
        let reply = self.run_script(&counted).await?;
        let admitted = reply.first() == Some(&1);
        for (i, c) in counted.iter().enumerate() {
            let used = reply.get(1 + 2 * i).copied().unwrap_or(0);
            let reset = reply.get(2 + 2 * i).copied().unwrap_or(0);
            if let Some(status) = statuses.get_mut(c.index) {
                *status = c.status(admitted, used, reset);
            }
        }
        if admitted {
            let hits: u64 = counted
                .iter()
                .filter(|c| !c.give_back)
                .map(|c| c.hits)
                .sum();
            Counters::add(&self.counters.hits_admitted, hits);
        }
        let overall = if admitted { Code::Ok } else { Code::OverLimit };
        Ok(RateLimitResponse {
            overall_code: overall.into(),
            statuses,
            ..RateLimitResponse::default()
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for Limiter {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        Counters::add(&self.counters.requests, 1);
        match self.decide(request.get_ref()).await {
            Ok(response) => {
                let counter = if response.overall_code == i32::from(Code::Ok) {
                    &self.counters.ok
                } else {
                    &self.counters.over_limit
                };
                Counters::add(counter, 1);
                Ok(tonic::Response::new(response))
            }
            Err(status) => {
                if status.code() == tonic::Code::InvalidArgument {
                    Counters::add(&self.counters.invalid, 1);
                }
                Err(status)
            }
        }
    }
}

/// At most one log line per second for failed calls.
static FAILED_CALLS: crate::logging::Throttle =
    crate::logging::Throttle::new(Duration::from_secs(1));

/// Where `fpgen ratelimit` listens and what it uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gRPC address (`ShouldRateLimit` and `grpc.health.v1.Health`).
    pub listen: SocketAddr,
    /// The Redis primary.
    pub redis: RedisTarget,
    /// The plain-HTTP admin address: `/stats` (the counters) and `/ready`.
    pub admin: Option<SocketAddr>,
    /// How long one Redis call may take before the request fails.
    pub redis_timeout: Duration,
    /// TLS for the gRPC service; plain HTTP/2 when `None`.
    pub tls: Option<ServerTls>,
    /// What one call may carry.
    pub bounds: Bounds,
}

/// The gRPC service's TLS: its certificate chain and key, and the
/// authorities whose client certificates it accepts (mutual TLS: a client
/// without such a certificate is refused in the handshake).
#[derive(Clone)]
pub struct ServerTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub client_ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("key_pem", &"<redacted>")
            .field("client_ca", &self.client_ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

/// Serves until the process ends. Redis need not be up at start: the
/// service answers UNAVAILABLE (and `/ready` 503) until it is, and
/// reconnects on its own whenever the connection is lost.
pub fn serve(options: Options) -> std::io::Result<()> {
    // rustls (Redis over TLS, the gRPC service's TLS) uses ring's primitives,
    // as tonic's `tls-ring` does (rustls 0.23.48 deprecates ring's provider
    // for lacking post-quantum key exchange; aws-lc-rs would add a C build
    // of its own to every machine that builds fpgen).
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

/// `bind` with an error that names the address and the option it came from.
async fn bind(addr: SocketAddr, option: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{option} {addr}: {e}")))
}

/// gRPC health follows the link to Redis: the rate-limit service's, and
/// the server's as a whole (a probe that names no service).
struct Health(tonic_health::server::HealthReporter);

impl link::Watcher for Health {
    async fn serving(&mut self, up: bool) {
        use tonic_health::ServingStatus::{NotServing, Serving};
        let status = if up { Serving } else { NotServing };
        for name in [
            <RateLimitServiceServer<Limiter> as tonic::server::NamedService>::NAME,
            "",
        ] {
            self.0.set_service_status(name, status).await;
        }
    }
}

/// The gRPC server, with its TLS when it has one.
fn server_with(tls: Option<&ServerTls>) -> std::io::Result<tonic::transport::Server> {
    let server = tonic::transport::Server::builder();
    let Some(tls) = tls else {
        return Ok(server);
    };
    let mut config = tonic::transport::ServerTlsConfig::new().identity(
        tonic::transport::Identity::from_pem(&tls.cert_pem, &tls.key_pem),
    );
    if let Some(ca) = &tls.client_ca_pem {
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    server.tls_config(config).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("--tls-cert/--tls-key/--tls-client-ca: {e}"),
        )
    })
}

async fn run(options: Options) -> std::io::Result<()> {
    let counters = Arc::new(Counters::default());
    let listener = bind(options.listen, "--listen").await?;
    let admin = match options.admin {
        Some(addr) => Some(bind(addr, "--admin").await?),
        None => None,
    };
    let server = server_with(options.tls.as_ref())?;
    let (reporter, health) = tonic_health::server::health_reporter();
    let mut watcher = Health(reporter);
    link::Watcher::serving(&mut watcher, false).await;
    tracing::info!(
        "ShouldRateLimit on {}://{} (Redis {}){}",
        if options.tls.is_some() {
            "https"
        } else {
            "http"
        },
        listener.local_addr()?,
        options.redis.redacted(),
        match &admin {
            Some(a) => format!(", /stats and /ready on http://{}", a.local_addr()?),
            None => String::new(),
        }
    );
    let link = link::start(&options.redis, options.redis_timeout, watcher);
    let limiter = Limiter {
        link: Arc::clone(&link),
        timeout: options.redis_timeout,
        bounds: options.bounds,
        script: Arc::new(redis::Script::new(SCRIPT)),
        counters: Arc::clone(&counters),
    };
    if let Some(admin) = admin {
        let timeout = options.redis_timeout;
        tokio::spawn(admin::serve(admin, link, timeout, Arc::clone(&counters)));
    }
    // No Nagle: an answer waits for no ACK (with it, a lone call's answer
    // waited ~40 ms for the client's delayed ACK).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |accepted| {
            if let Ok(stream) = &accepted {
                let _ = stream.set_nodelay(true);
            }
            accepted
        },
    );
    server
        .max_concurrent_streams(Some(1024))
        .timeout(Duration::from_secs(10))
        .add_service(health)
        .add_service(
            RateLimitServiceServer::new(limiter).max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .serve_with_incoming(incoming)
        .await
        .map_err(std::io::Error::other)
}

/// The admin endpoint: `/stats` and `/ready` (Redis answers `PING`).
mod admin {
    use super::Counters;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::{Response, StatusCode};
    use hyper_util::rt::TokioIo;
    use std::sync::Arc;

    /// Connections the admin endpoint serves at once; more wait in the
    /// backlog.
    const MAX_CONNECTIONS: usize = 64;

    pub async fn serve(
        listener: tokio::net::TcpListener,
        link: Arc<super::link::Link>,
        timeout: std::time::Duration,
        counters: Arc<Counters>,
    ) {
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        loop {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (link, counters) = (Arc::clone(&link), Arc::clone(&counters));
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (link, counters) = (Arc::clone(&link), Arc::clone(&counters));
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/stats" => (StatusCode::OK, counters.text()),
                            "/ready" => match ready(&link, timeout).await {
                                Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
                                Err(why) => {
                                    (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {why}\n"))
                                }
                            },
                            _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
                        };
                        let mut response = Response::new(Full::new(Bytes::from(body)));
                        *response.status_mut() = status;
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    /// Ready when Redis answers `PING` now (else the link checks its
    /// connection at once).
    async fn ready(link: &super::link::Link, timeout: std::time::Duration) -> Result<(), String> {
        let mut redis = link.connection()?;
        let answered = super::link::ping(&mut redis, timeout).await;
        if answered.is_err() {
            link.suspect();
        }
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;

    fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..RateLimitDescriptor::default()
        }
    }

    #[test]
    fn keys_tell_every_descriptor_apart() {
        let a = key_of("fpgen", &descriptor(&[("customer", "1|2:x")]), 60);
        let b = key_of("fpgen", &descriptor(&[("customer", "1"), ("2", "x")]), 60);
        assert_ne!(a, b);
        assert_ne!(
            a,
            key_of("fpgen", &descriptor(&[("customer", "1|2:x")]), 3600)
        );
        assert_ne!(
            a,
            key_of("other", &descriptor(&[("customer", "1|2:x")]), 60)
        );
    }

    #[test]
    fn every_unit_has_its_period() {
        let units = [
            (RateLimitUnit::Second, 1),
            (RateLimitUnit::Minute, 60),
            (RateLimitUnit::Hour, 3_600),
            (RateLimitUnit::Day, 86_400),
            (RateLimitUnit::Month, 2_592_000),
            (RateLimitUnit::Year, 31_536_000),
        ];
        for (unit, seconds) in units {
            assert_eq!(period(unit.into()).map(|p| p.0), Some(seconds), "{unit:?}");
        }
        assert_eq!(period(RateLimitUnit::Unknown.into()), None);
        assert_eq!(period(99), None);
    }
}
