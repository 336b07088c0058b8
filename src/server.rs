//! `fpgen serve`: the token endpoint as a small native HTTP/1.1 service
//! (hyper on tokio), for users without Envoy and as the "token backend"
//! design that `make bench` compares the filter with. Same code path as the
//! filter: [`service::admit`], then [`service::handle`].

use crate::config::Config;
use crate::error::ErrorCode;
use crate::ids::CustomerId;
use crate::render::Response as ApiResponse;
use crate::service::{self, Admission, Budget, Host, HostFailure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The host of one request: system clock and randomness, the TCP peer as
/// the client address, and no token budget (budgets are an Envoy feature).
struct ServeHost {
    peer: IpAddr,
}

impl Host for ServeHost {
    fn now(&self) -> i64 {
        service::SystemHost.now()
    }
    fn fill_random(&self, buf: &mut [u8]) -> Result<(), HostFailure> {
        service::SystemHost.fill_random(buf)
    }
    fn client_address(&self) -> Option<IpAddr> {
        Some(self.peer)
    }
    fn take_from_budget(&self, _: &CustomerId, _: u64) -> Result<Budget, HostFailure> {
        Ok(Budget::Taken)
    }
}

/// Serves `/hms/fp/token` on `addr` until the process ends, with `threads`
/// worker threads.
pub fn serve(config: Config, addr: SocketAddr, threads: usize) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        eprintln!(
            "fpgen: serving /hms/fp/token on http://{}",
            listener.local_addr()?
        );
        let config = Arc::new(config);
        loop {
            let (stream, peer) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let config = Arc::clone(&config);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req| answer(Arc::clone(&config), peer, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

async fn answer(
    config: Arc<Config>,
    peer: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
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
    let query = service::query_of(&path_and_query).to_owned();
    let host = ServeHost { peer: peer.ip() };
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let admission = service::admit(req.method().as_str(), header, config.max_body_bytes);
    let answer = match admission {
        Admission::Refuse(code) => service::refuse(code, &query),
        Admission::Query => service::handle(&config, &query, b"", &host),
        Admission::Body => match Limited::new(req.into_body(), config.max_body_bytes)
            .collect()
            .await
        {
            Ok(body) => service::handle(&config, &query, &body.to_bytes(), &host),
            Err(_) => service::refuse(ErrorCode::BodyTooLarge, &query),
        },
    };
    let api = answer.response;
    Ok(to_hyper(api))
}

fn to_hyper(api: ApiResponse) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(api.body)));
    *response.status_mut() =
        StatusCode::from_u16(api.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(api.content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for (name, value) in api.headers {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}
