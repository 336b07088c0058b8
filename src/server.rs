//! `fpgen serve`: the token endpoint as a small native HTTP/1.1 service
//! (hyper on tokio), for users without Envoy and as the "token backend"
//! design that `make bench` compares the filter with. Same code path as the
//! filter: [`service::handle`].

use crate::config::Config;
use crate::error::ErrorCode;
use crate::render::Response as ApiResponse;
use crate::service::{self, Host};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
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
    fn fill_random(&self, buf: &mut [u8]) -> bool {
        service::SystemHost.fill_random(buf)
    }
    fn client_address(&self) -> Option<IpAddr> {
        Some(self.peer)
    }
    fn take_from_budget(&self, _customer: &str, _budget: u64) -> bool {
        true
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
    let api = match *req.method() {
        Method::GET => service::handle(&config, &query, b"", &host).0,
        Method::POST => {
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if !service::is_form_content_type(content_type) {
                service::reject(ErrorCode::UnsupportedMediaType, &query)
            } else if declared.is_some_and(|n| n > config.max_body_bytes) {
                service::reject(ErrorCode::BodyTooLarge, &query)
            } else {
                match Limited::new(req.into_body(), config.max_body_bytes)
                    .collect()
                    .await
                {
                    Ok(body) => service::handle(&config, &query, &body.to_bytes(), &host).0,
                    Err(_) => service::reject(ErrorCode::BodyTooLarge, &query),
                }
            }
        }
        _ => service::reject(ErrorCode::MethodNotAllowed, &query),
    };
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
