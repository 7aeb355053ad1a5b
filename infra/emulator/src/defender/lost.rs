//! An answer that never arrives: the response to a write is replaced by a body that fails at
//! once, so the server closes the connection instead of answering (the `after_apply: drop`
//! fault). The write itself has been applied before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use http_body::Frame;

/// A body whose first read fails: hyper then aborts the connection.
struct Severed;

impl http_body::Body for Severed {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Poll::Ready(Some(Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "answer lost (injected fault)",
        ))))
    }
}

/// `response` with its body replaced by one that closes the connection.
pub(crate) fn dropped_connection(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::new(Severed))
}
