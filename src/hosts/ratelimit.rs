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

/// The service: a Redis connection (reconnecting on its own) and the
/// counters.
#[derive(Clone)]
struct Limiter {
    redis: redis::aio::ConnectionManager,
    /// The most one request waits for Redis (also while it reconnects).
    timeout: Duration,
    script: Arc<redis::Script>,
    counters: Arc<Counters>,
}

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
    fn counted(request: &RateLimitRequest) -> Result<Vec<Counted>, tonic::Status> {
        let default_hits = u64::from(request.hits_addend.max(1));
        let mut counted = Vec::new();
        for (index, d) in request.descriptors.iter().enumerate() {
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
        let mut redis = self.redis.clone();
        let call = invocation.invoke_async::<Vec<i64>>(&mut redis);
        let reply = match tokio::time::timeout(self.timeout, call).await {
            Ok(reply) => reply.map_err(|e| format!("redis: {e}")),
            Err(_) => Err("redis: no answer in time".to_owned()),
        };
        reply.map_err(|message| {
            Counters::add(&self.counters.redis_errors, 1);
            tonic::Status::unavailable(message)
        })
    }

    async fn decide(&self, request: &RateLimitRequest) -> Result<RateLimitResponse, tonic::Status> {
        let counted = Self::counted(request)?;
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

/// Where `fpgen ratelimit` listens and what it uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// The gRPC address (`ShouldRateLimit` and `grpc.health.v1.Health`).
    pub listen: SocketAddr,
    /// The Redis primary, `redis://host:port[/db]`.
    pub redis: String,
    /// The plain-HTTP admin address: `/stats` (the counters) and `/ready`.
    pub admin: Option<SocketAddr>,
    /// How long one Redis call may take before the request fails.
    pub redis_timeout: Duration,
}

/// Serves until the process ends. Redis need not be up at start: the
/// service answers UNAVAILABLE (and `/ready` 503) until it is, and
/// reconnects on its own whenever the connection is lost.
pub fn serve(options: Options) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn connect(options: &Options) -> std::io::Result<redis::aio::ConnectionManager> {
    let client = redis::Client::open(options.redis.as_str())
        .map_err(|e| std::io::Error::other(format!("--redis: {e}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(options.redis_timeout)
        .set_response_timeout(options.redis_timeout);
    let mut pause = Duration::from_millis(100);
    loop {
        match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(manager) => return Ok(manager),
            Err(e) => {
                eprintln!(
                    "fpgen ratelimit: redis: {e}; retrying in {} ms",
                    pause.as_millis()
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn run(options: Options) -> std::io::Result<()> {
    let counters = Arc::new(Counters::default());
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let admin = match options.admin {
        Some(addr) => Some(tokio::net::TcpListener::bind(addr).await?),
        None => None,
    };
    eprintln!(
        "fpgen ratelimit: ShouldRateLimit on {} (Redis {}){}",
        listener.local_addr()?,
        options.redis,
        match &admin {
            Some(a) => format!(", /stats and /ready on http://{}", a.local_addr()?),
            None => String::new(),
        }
    );
    let redis = connect(&options).await?;
    let limiter = Limiter {
        redis: redis.clone(),
        timeout: options.redis_timeout,
        script: Arc::new(redis::Script::new(SCRIPT)),
        counters: Arc::clone(&counters),
    };
    if let Some(admin) = admin {
        let timeout = options.redis_timeout;
        tokio::spawn(admin::serve(admin, redis, timeout, Arc::clone(&counters)));
    }
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<RateLimitServiceServer<Limiter>>()
        .await;
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
    tonic::transport::Server::builder()
        .max_concurrent_streams(Some(1024))
        .timeout(Duration::from_secs(10))
        .add_service(health)
        .add_service(RateLimitServiceServer::new(limiter))
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

    pub async fn serve(
        listener: tokio::net::TcpListener,
        redis: redis::aio::ConnectionManager,
        timeout: std::time::Duration,
        counters: Arc<Counters>,
    ) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            };
            let (redis, counters) = (redis.clone(), Arc::clone(&counters));
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let (mut redis, counters) = (redis.clone(), Arc::clone(&counters));
                    async move {
                        let (status, body) = match req.uri().path() {
                            "/stats" => (StatusCode::OK, counters.text()),
                            "/ready" => {
                                let command = redis::cmd("PING");
                                let ping = command.query_async::<String>(&mut redis);
                                match tokio::time::timeout(timeout, ping).await {
                                    Ok(Ok(_)) => (StatusCode::OK, "ready\n".to_owned()),
                                    Ok(Err(e)) => {
                                        (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {e}\n"))
                                    }
                                    Err(_) => (
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "redis: no answer in time\n".to_owned(),
                                    ),
                                }
                            }
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
