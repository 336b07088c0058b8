//! `fpgen ratelimit` against a real Redis (issue 21): Envoy's rate-limit
//! protocol over gRPC, exact across two services on one Redis under
//! concurrent load, hits that do not fit are not counted, periods roll
//! over, hits can be given back, and Redis going away and coming back.

use crate::common;

use crate::common::{Redis, Service};

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
    let service = Service::start(&redis);
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
