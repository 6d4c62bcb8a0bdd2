//! The JSON message stream Docker answers long operations with (build, push, load): one JSON
//! object per line, which the CLI renders as it arrives.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The writing end of a message stream. Sending never blocks and never fails: once the client
/// has gone, messages are dropped (and [`Messages::closed`] says so).
#[derive(Clone)]
pub struct Messages {
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Messages {
    /// A stream and the streaming `200 OK` response that carries it.
    pub fn response() -> (Messages, Response) {
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        }));
        let response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        (Messages { tx }, response)
    }

    pub fn send(&self, message: Value) {
        let mut line = serde_json::to_vec(&message).expect("json");
        line.push(b'\n');
        let _ = self.tx.send(Bytes::from(line));
    }

    /// `{"stream": text}`: build output.
    pub fn stream(&self, text: impl Into<String>) {
        self.send(json!({ "stream": text.into() }));
    }

    /// `{"status": text}`: push and load progress.
    pub fn status(&self, text: impl Into<String>) {
        self.send(json!({ "status": text.into() }));
    }

    /// `{"status": …, "id": …}`: a per-layer progress line.
    pub fn layer_status(&self, id: &str, text: &str) {
        self.send(json!({ "status": text, "progressDetail": {}, "id": id }));
    }

    pub fn aux(&self, value: Value) {
        self.send(json!({ "aux": value }));
    }

    /// The error that ends a stream; the CLI prints it and exits non-zero.
    pub fn error(&self, message: &str) {
        self.send(json!({ "errorDetail": { "message": message }, "error": message }));
    }

    /// Resolves when the client has stopped reading.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}
