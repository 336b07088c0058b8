//! `fpgen ratelimit` against a real Redis (issue 21): Envoy's rate-limit
//! protocol over gRPC, exact across two services on one Redis under
//! concurrent load, hits that do not fit are not counted, periods roll
//! over, hits can be given back, and Redis going away and coming back.
//! Issue 30: Redis's password never shown, Redis over TLS, a service that
//! serves while Redis is down and says why, mutual TLS for the service,
//! the bounds of a call, a log that a failing Redis cannot flood.

use crate::common;

use crate::common::{Pki, Redis, Service, ServiceArgs};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
    Entry, RateLimitOverride,
};
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use std::time::{Duration, Instant};

/// fpgen's request: one descriptor, `customer`, with its limit.
fn request(customer: &str, limit: u32, unit: RateLimitUnit, hits: u32) -> RateLimitRequest {
    RateLimitRequest {
        domain: "fpgen".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "customer".into(),
                value: customer.into(),
            }],
            limit: Some(RateLimitOverride {
                requests_per_unit: limit,
                unit: unit.into(),
            }),
            ..RateLimitDescriptor::default()
        }],
        hits_addend: hits,
    }
}

/// The overall code of one call; `Err` with the gRPC code when it failed.
async fn ask(
    client: &mut RateLimitServiceClient<tonic::transport::Channel>,
    request: RateLimitRequest,
) -> Result<Code, tonic::Code> {
    client
        .should_rate_limit(request)
        .await
        .map(|r| Code::try_from(r.into_inner().overall_code).unwrap_or(Code::Unknown))
        .map_err(|s| s.code())
}

/// 1,000 concurrent requests for one token each, 500 through each of two
/// services on one Redis, against a budget of 100: exactly 100 are
/// admitted, and the next is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_services_on_one_redis_admit_exactly_the_limit() {
    let redis = Redis::start();
    let services = [Service::start(&redis), Service::start(&redis)];
    let mut tasks = Vec::new();
    for service in &services {
        for _ in 0..50 {
            let mut client = service.client().await;
            tasks.push(tokio::spawn(async move {
                let mut codes = Vec::new();
                for _ in 0..10 {
                    codes.push(
                        ask(&mut client, request("100001", 100, RateLimitUnit::Hour, 1)).await,
                    );
                }
                codes
            }));
        }
    }
    let mut codes = Vec::new();
    for task in tasks {
        codes.extend(task.await.unwrap());
    }
    let ok = codes.iter().filter(|c| **c == Ok(Code::Ok)).count();
    let over = codes.iter().filter(|c| **c == Ok(Code::OverLimit)).count();
    assert_eq!(
        (ok, over),
        (100, 900),
        "{:?}",
        codes.iter().find(|c| c.is_err())
    );
    let mut client = services[0].client().await;
    let next = ask(&mut client, request("100001", 100, RateLimitUnit::Hour, 1)).await;
    assert_eq!(next, Ok(Code::OverLimit));
    // another customer has a budget of its own
    let other = ask(&mut client, request("100002", 100, RateLimitUnit::Hour, 1)).await;
    assert_eq!(other, Ok(Code::Ok));
    // the counters of both services add up
    let admitted: u64 = services.iter().map(|s| s.stat("ok")).sum();
    let refused: u64 = services.iter().map(|s| s.stat("over_limit")).sum();
    assert_eq!((admitted, refused), (101, 901));
}

/// Hits that do not fit are not counted (a lease of 10 when 5 remain is
/// refused, and the 5 are still there); hits can be given back; a
/// descriptor without a limit is OK and uncounted.
#[tokio::test]
async fn refused_hits_are_not_counted_and_hits_can_be_given_back() {
    let redis = Redis::start();
    let service = Service::launch(ServiceArgs::on(&redis).arg("--allow-negative-hits"));
    service.wait_until_ready();
    let mut client = service.client().await;
    let lease = |hits| request("lease", 95, RateLimitUnit::Day, hits);
    for _ in 0..9 {
        assert_eq!(ask(&mut client, lease(10)).await, Ok(Code::Ok));
    }
    let refused = client
        .should_rate_limit(lease(10))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refused.overall_code, i32::from(Code::OverLimit));
    assert_eq!(refused.statuses[0].limit_remaining, 5);
    assert_eq!(ask(&mut client, lease(5)).await, Ok(Code::Ok));
    assert_eq!(ask(&mut client, lease(1)).await, Ok(Code::OverLimit));
    // give 3 back: 3 more fit
    let mut refund = lease(3);
    refund.descriptors[0].is_negative_hits = true;
    assert_eq!(ask(&mut client, refund).await, Ok(Code::Ok));
    assert_eq!(ask(&mut client, lease(3)).await, Ok(Code::Ok));
    assert_eq!(ask(&mut client, lease(1)).await, Ok(Code::OverLimit));
    // no limit: not counted
    let mut free = lease(1);
    free.descriptors[0].limit = None;
    for _ in 0..3 {
        assert_eq!(ask(&mut client, free.clone()).await, Ok(Code::Ok));
    }
    assert_eq!(service.stat("hits_admitted"), 90 + 5 + 3);
    // an unknown unit is the caller's mistake
    let mut bad = lease(1);
    bad.descriptors[0].limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 0,
    });
    assert_eq!(
        ask(&mut client, bad).await,
        Err(tonic::Code::InvalidArgument)
    );
}

/// A budget per second refills when the second rolls over.
#[tokio::test]
async fn a_period_rolls_over_and_the_budget_refills() {
    let redis = Redis::start();
    let service = Service::start(&redis);
    let mut client = service.client().await;
    let per_second = || request("tick", 3, RateLimitUnit::Second, 1);
    // wait for a fresh second on the test's clock, so that 4 asks fit in it
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if now.subsec_millis() < 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(ask(&mut client, per_second()).await);
    }
    // Redis's clock is this machine's: the window is this second
    assert_eq!(
        codes,
        [
            Ok(Code::Ok),
            Ok(Code::Ok),
            Ok(Code::Ok),
            Ok(Code::OverLimit)
        ]
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(ask(&mut client, per_second()).await, Ok(Code::Ok));
}

/// Redis stops: requests fail with UNAVAILABLE (the caller's failure mode
/// decides), the service stays up and counts them; Redis comes back (empty,
/// nothing persisted) and the service answers again on its own.
#[tokio::test]
async fn redis_going_away_and_coming_back() {
    let mut redis = Redis::start();
    let service = Service::start(&redis);
    let mut client = service.client().await;
    let one = || request("fault", 10, RateLimitUnit::Hour, 1);
    assert_eq!(ask(&mut client, one()).await, Ok(Code::Ok));
    redis.stop();
    assert_eq!(ask(&mut client, one()).await, Err(tonic::Code::Unavailable));
    assert_eq!(common::get(service.admin, "/ready").status, 503);
    assert!(service.stat("redis_errors") >= 1);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ask(&mut client, one()).await {
            Ok(code) => {
                assert_eq!(code, Code::Ok);
                break;
            }
            Err(code) => {
                assert_eq!(code, tonic::Code::Unavailable);
                assert!(Instant::now() < deadline, "no answer after Redis came back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_eq!(common::get(service.admin, "/ready").status, 200);
}

/// One call of one token for customer `who` (a budget of 1,000 a day).
fn one(who: &str) -> RateLimitRequest {
    request(who, 1_000, RateLimitUnit::Day, 1)
}

/// Asks `one(who)` until it is answered OK (`seconds` at most); the time it
/// took, or the last gRPC code.
async fn until_ok(
    client: &mut RateLimitServiceClient<tonic::transport::Channel>,
    who: &str,
    seconds: u64,
) -> Result<Duration, tonic::Code> {
    let start = Instant::now();
    loop {
        match ask(client, one(who)).await {
            Ok(Code::Ok) => return Ok(start.elapsed()),
            Ok(other) => panic!("{who}: {other:?}"),
            Err(code) if start.elapsed() > Duration::from_secs(seconds) => return Err(code),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Redis's password reaches the service from the environment or a file,
/// never appears in its log nor in its command line, and works; given on
/// the command line it still works, with a warning; a wrong one leaves the
/// service up, not ready, and says why.
#[tokio::test]
async fn the_redis_password_is_never_shown() {
    const PASSWORD: &str = "pw-Zq81xK30aa";
    let redis = Redis::start_with(Some(PASSWORD), None);
    let with_password = redis.url().replace("://", &format!("://:{PASSWORD}@"));
    let file = crate::common::new_workdir().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let from_env = Service::launch(ServiceArgs::default().env("FPGEN_REDIS_URL", &with_password));
    let from_file = Service::launch(
        ServiceArgs::on(&redis)
            .arg("--redis-password-file")
            .arg(file.to_str().unwrap()),
    );
    for service in [&from_env, &from_file] {
        let mut client = service.client().await;
        assert!(until_ok(&mut client, "pw", 10).await.is_ok());
        let log = service.wait_for_log("connected to", 5);
        assert!(
            log.contains("redis: connected to redis://:***@127.0.0.1:"),
            "{log}"
        );
        assert!(!log.contains(PASSWORD), "{log}");
        assert!(!log.contains("visible to every local user"), "{log}");
        assert!(!service.cmdline().contains(PASSWORD));
    }
    let on_command_line =
        Service::launch(ServiceArgs::default().arg("--redis").arg(&with_password));
    assert!(until_ok(&mut on_command_line.client().await, "pw", 10)
        .await
        .is_ok());
    let log = on_command_line.wait_for_log("visible to every local user", 5);
    assert!(log.contains("FPGEN_REDIS_URL"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");

    let wrong = Service::launch(ServiceArgs::default().env(
        "FPGEN_REDIS_URL",
        &redis.url().replace("://", "://:nope-pw@"),
    ));
    let log = wrong.wait_for_log("authentication failed", 5);
    assert!(log.contains("cannot reach redis://:***@"), "{log}");
    assert!(!log.contains("nope-pw"), "{log}");
    let ready = common::get(wrong.admin, "/ready");
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("authentication failed"),
        "{}",
        ready.text()
    );
    let mut client = wrong.client().await;
    let status = client.should_rate_limit(one("pw")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(!status.message().contains("nope-pw"));
}

/// `rediss://`: Redis over TLS, its certificate checked against the
/// authority of `--redis-ca`; a service that speaks plain text to a TLS
/// port is not ready.
#[tokio::test]
async fn redis_over_tls() {
    let pki = Pki::new();
    let redis = Redis::start_with(Some("tls-pw-1"), Some(&pki));
    let url = redis.url().replace("://", "://:tls-pw-1@");
    assert!(url.starts_with("rediss://"));
    let service = Service::launch(
        ServiceArgs::default()
            .env("FPGEN_REDIS_URL", &url)
            .arg("--redis-ca")
            .arg(pki.path("ca.pem").to_str().unwrap()),
    );
    assert!(until_ok(&mut service.client().await, "tls", 10)
        .await
        .is_ok());
    assert_eq!(common::get(service.admin, "/ready").status, 200);
    assert!(service
        .stderr()
        .contains("connected to rediss://:***@127.0.0.1:"));
    // the system's roots do not know the test authority: refused, and said
    let untrusted = Service::launch(ServiceArgs::default().env("FPGEN_REDIS_URL", &url));
    let log = untrusted.wait_for_log("cannot reach", 5);
    assert!(log.contains("certificate"), "{log}");
    assert_eq!(common::get(untrusted.admin, "/ready").status, 503);
    let plain = Service::launch(
        ServiceArgs::default().env("FPGEN_REDIS_URL", &url.replace("rediss://", "redis://")),
    );
    plain.wait_for_log("cannot reach", 5);
    assert_eq!(common::get(plain.admin, "/ready").status, 503);
}

/// The gRPC health status of the rate-limit service, and of the server as
/// a whole (a probe that names no service).
async fn health_of(service: &Service) -> [i32; 2] {
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{}", service.port))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut statuses = [0; 2];
    for (status, name) in statuses
        .iter_mut()
        .zip(["envoy.service.ratelimit.v3.RateLimitService", ""])
    {
        let request = tonic_health::pb::HealthCheckRequest {
            service: name.into(),
        };
        *status = health.check(request).await.unwrap().into_inner().status;
    }
    statuses
}

/// Started while Redis is down, the service answers at once: UNAVAILABLE,
/// gRPC health NOT_SERVING, `/ready` 503 with the reason, one log line
/// saying why; once Redis is up it serves within about a second (before
/// issue 30 it answered nothing, and took 77.8 s once Redis came up).
#[tokio::test]
async fn started_while_redis_is_down_it_answers_at_once_and_says_why() {
    let mut redis = Redis::unstarted();
    let service = Service::launch(ServiceArgs::on(&redis));
    let ready = common::get(service.admin, "/ready");
    assert_eq!(ready.status, 503);
    let mut client = service.client().await;
    let asked = Instant::now();
    let status = client.should_rate_limit(one("down")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    assert_eq!(health_of(&service).await, [not_serving; 2]);
    let log = service.wait_for_log("connection refused", 5);
    assert!(log.contains("cannot reach redis://127.0.0.1:"), "{log}");
    // a Redis down for a while is said once, not once per attempt
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(service.stderr().matches("cannot reach").count(), 1);

    redis.restart();
    let waited = until_ok(&mut client, "down", 30).await.unwrap();
    eprintln!(
        "Redis up -> first admitted call: {:.2} s",
        waited.as_secs_f64()
    );
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert_eq!(common::get(service.admin, "/ready").status, 200);
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    assert_eq!(health_of(&service).await, [serving; 2]);
    assert!(service.stderr().contains("redis: connected to"));
}

/// Redis killed and back on the same port: the service answers again within
/// about a second of Redis being back (before issue 30: 118 s, the Redis
/// client's reconnect backoff), and says both in its log.
#[tokio::test]
async fn after_an_outage_the_service_is_back_within_a_second() {
    let mut redis = Redis::start();
    let service = Service::start(&redis);
    let mut client = service.client().await;
    assert!(until_ok(&mut client, "outage", 10).await.is_ok());
    redis.stop();
    // calls during the outage fail fast; the supervisor notices
    for _ in 0..3 {
        let asked = Instant::now();
        assert_eq!(
            ask(&mut client, one("outage")).await,
            Err(tonic::Code::Unavailable)
        );
        assert!(asked.elapsed() < Duration::from_secs(2));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.restart();
    let waited = until_ok(&mut client, "outage", 30).await.unwrap();
    eprintln!(
        "Redis back -> first admitted call: {:.2} s",
        waited.as_secs_f64()
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let log = service.stderr();
    assert!(log.contains("connection to redis://127.0.0.1:"), "{log}");
    assert_eq!(log.matches("redis: connected to").count(), 2, "{log}");
}

/// Failed calls are logged at most once a second, with how many were held
/// back, so a Redis outage under load cannot flood the log.
#[tokio::test]
async fn failed_calls_cannot_flood_the_log() {
    let mut redis = Redis::start();
    let service = Service::start(&redis);
    let mut client = service.client().await;
    assert!(until_ok(&mut client, "flood", 10).await.is_ok());
    redis.stop();
    let start = Instant::now();
    let mut failed = 0;
    while failed < 200 && start.elapsed() < Duration::from_secs(20) {
        if ask(&mut client, one("flood")).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 200);
    let seconds = start.elapsed().as_secs() + 1;
    let log = service.wait_for_log("more like it", 3);
    let lines = log.matches("a call failed").count();
    assert!(
        lines >= 1 && lines as u64 <= seconds + 1,
        "{lines} lines in {seconds} s: {log}"
    );
    assert_eq!(service.stat("redis_errors"), 200);
}

/// With `--tls-cert`, `--tls-key` and `--tls-client-ca`, only a client
/// with a certificate of that authority is served: no certificate, another
/// authority's, or plain text are refused before any budget is touched.
#[tokio::test]
async fn mutual_tls_admits_only_clients_of_the_authority() {
    let pki = Pki::new();
    let redis = Redis::start();
    let service = Service::launch(ServiceArgs::on(&redis).mutual_tls(&pki));
    let mut trusted = service.tls_client(&pki, Some("client")).await.unwrap();
    assert!(until_ok(&mut trusted, "mtls", 10).await.is_ok());
    for identity in [None, Some("stranger")] {
        let refused = match service.tls_client(&pki, identity).await {
            Err(_) => true,
            Ok(mut client) => client.should_rate_limit(one("mtls")).await.is_err(),
        };
        assert!(refused, "{identity:?} was served");
    }
    let mut plain = service.client().await;
    assert!(plain.should_rate_limit(one("mtls")).await.is_err());
    assert_eq!(service.stat("requests"), 1, "only the trusted call arrived");
    assert!(service.stderr().contains("ShouldRateLimit on https://"));
}

/// A call carries at most 8 descriptors of 8 entries of 256 bytes, and no
/// negative hits unless `--allow-negative-hits`: each refused with
/// INVALID_ARGUMENT, and nothing is counted (before issue 30 one call made
/// 20,000 Redis keys, and negative hits emptied a customer's count).
#[tokio::test]
async fn a_call_is_bounded_and_negative_hits_are_refused() {
    let redis = Redis::start();
    let service = Service::start(&redis);
    let mut client = service.client().await;
    for _ in 0..3 {
        assert_eq!(
            ask(&mut client, request("bounded", 3, RateLimitUnit::Day, 1)).await,
            Ok(Code::Ok)
        );
    }
    let mut refund = request("bounded", 3, RateLimitUnit::Day, 3);
    refund.descriptors[0].is_negative_hits = true;
    let mut many = request("bounded", 3, RateLimitUnit::Day, 1);
    many.descriptors = std::iter::repeat_n(many.descriptors[0].clone(), 9).collect();
    let mut wide = request("bounded", 3, RateLimitUnit::Day, 1);
    let entry = wide.descriptors[0].entries[0].clone();
    wide.descriptors[0].entries = std::iter::repeat_n(entry, 9).collect();
    let long = request(&"x".repeat(257), 3, RateLimitUnit::Day, 1);
    for (what, call) in [
        ("negative hits", refund),
        ("9 descriptors", many),
        ("9 entries", wide),
        ("a 257-byte value", long),
    ] {
        let status = client.should_rate_limit(call).await.unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
    }
    // a message over 64 KiB is not even read
    let mut huge = request("bounded", 3, RateLimitUnit::Day, 1);
    huge.domain = "d".repeat(70 * 1024);
    let status = client.should_rate_limit(huge).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    // the budget is still spent: nothing was given back
    assert_eq!(
        ask(&mut client, request("bounded", 3, RateLimitUnit::Day, 1)).await,
        Ok(Code::OverLimit)
    );
    assert_eq!(service.stat("invalid"), 4);
}
