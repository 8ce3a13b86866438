//! A time limit on every call: a call whose answer is not ready in time (a client that sends its
//! request slowly, or stalls halfway) ends with `DEADLINE_EXCEEDED`, a reason, and the
//! `overstap-limit: request_timeout` header, instead of holding a stream and a task forever.
//! Only the answer's start is timed: a subscription's stream runs on once it has begun.
//!
//! tonic's own `Server::timeout` answers `CANCELLED` "Timeout expired", which reads like the
//! client gave up. The node compiles this same file (`#[path]` in `node/src/lib.rs`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// The layer: `Server::builder().layer(Deadline::new(limit))`.
#[derive(Clone, Copy, Debug)]
pub struct Deadline {
    limit: Duration,
}

impl Deadline {
    pub fn new(limit: Duration) -> Self {
        Deadline { limit }
    }
}

impl<S> tower_layer::Layer<S> for Deadline {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            limit: self.limit,
        }
    }
}

#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    limit: Duration,
}

impl<S, B> tower_service::Service<http::Request<B>> for DeadlineService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let limit = self.limit;
        let path = request.uri().path().to_string();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!(%path, secs = limit.as_secs_f64(), "a call ran out of time");
                    Ok(exceeded(limit).into_http())
                }
            }
        })
    }
}

/// The status a call that ran out of time ends with.
pub fn exceeded(limit: Duration) -> tonic::Status {
    let mut status = tonic::Status::deadline_exceeded(format!(
        "the call took longer than {} s (request_timeout_secs): a request must arrive and be \
         answered within that time",
        limit.as_secs()
    ));
    status
        .metadata_mut()
        .insert("overstap-limit", "request_timeout".parse().expect("ascii"));
    status
}
