//! HTTP routing: what a connection's first request gets. Sans-IO: request bytes in, a
//! [`Route`] out (a complete response to send before closing, or an accepted upgrade).
//!
//! Every path the server answers is in [`Router::route`] (plain requests) or
//! [`Router::route_upgrade`] (WebSocket upgrades): a new transport (`/sse`, `/stream`) or static
//! files at `/` are one more arm there; what such a connection then does is a new
//! [`Route`] variant handled in `core.rs` (`handle_request`).

use crate::config::Config;
use crate::fanout::Format;
use crate::fanout::admission::{self, Refusal};
use crate::fanout::entitle::Grant;
use crate::metrics::{Metrics, ShardMetrics, add};
use crate::proto::deflate::{self, DeflateParams};
use crate::proto::handshake::{
    HandshakeLimits, HttpRequest, Request, UpgradeRequest, parse_request, query_param,
    write_accept_response_ext, write_http_response,
};

use super::conn::Endpoint;
use super::streams::{self, StreamOpen};
use super::web;

const TEXT: &str = "text/plain; charset=utf-8";
const UPGRADE_PLEASE: &[u8] = b"this endpoint speaks WebSocket: send an upgrade request\n";

/// What a request head gets.
#[derive(Debug)]
pub(crate) enum Route {
    /// A complete HTTP response; the connection closes once it is written.
    Respond(Vec<u8>),
    /// The WebSocket upgrade is accepted.
    Upgrade(Upgrade),
    /// A `/stream` or `/sse` request passed the access checks: subscribe and stream
    /// (`streams.rs`).
    Stream(StreamOpen),
    /// A built-in file (`web.rs`): the response head, then the body from the binary.
    Static { head: Vec<u8>, body: &'static [u8] },
}

/// An accepted upgrade.
#[derive(Debug)]
pub(crate) struct Upgrade {
    /// The 101 response.
    pub(crate) response: Vec<u8>,
    pub(crate) endpoint: Endpoint,
    pub(crate) format: Format,
    /// permessage-deflate, when negotiated.
    pub(crate) deflate: Option<DeflateParams>,
    /// What the client's JWT grants (with JWTs configured).
    pub(crate) grant: Option<Grant>,
}

/// What routing reads: the configuration and the metrics it reports (and serves).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Router<'a> {
    pub(crate) config: &'a Config,
    pub(crate) limits: &'a HandshakeLimits,
    pub(crate) metrics: &'a Metrics,
    pub(crate) shard: &'a ShardMetrics,
    /// Seconds since the Unix epoch (the turn's clock reading), for token expiry.
    pub(crate) now_s: u64,
}

impl Router<'_> {
    /// Routes the request head at the start of `input`: `None` while it is incomplete, else
    /// the route and the length of the head (bytes after it belong to the WebSocket).
    pub(crate) fn route_head(&self, input: &[u8]) -> Option<(Route, usize)> {
        match parse_request(input, self.limits) {
            Ok(None) => None,
            Ok(Some((Request::Http(h), head_len))) => Some((self.route(&h), head_len)),
            Ok(Some((Request::Upgrade(u), head_len))) => Some((self.route_upgrade(&u), head_len)),
            Err(e) => {
                let reason = match e.status() {
                    431 => "too_large",
                    426 => "bad_version",
                    405 => "method",
                    _ => "malformed",
                };
                self.shard.handshake_failed(reason);
                tracing::debug!(error = %e, "bad upgrade request");
                let mut out = Vec::with_capacity(256);
                e.write_response(&mut out);
                Some((Route::Respond(out), input.len()))
            }
        }
    }

    /// A plain request (no upgrade): `/healthz`, `/metrics`, and hints for the WebSocket paths.
    pub(crate) fn route(&self, h: &HttpRequest) -> Route {
        add(&self.shard.http_requests, 1);
        let get = matches!(h.method.as_str(), "GET" | "HEAD");
        if get {
            match h.path.as_str() {
                "/stream" => return self.route_stream(h, Endpoint::Stream),
                "/sse" => return self.route_stream(h, Endpoint::Sse),
                _ => {}
            }
            if let Some(r) = web::serve(self.config, h, self.now_s) {
                return r;
            }
        }
        let (status, ctype, body): (u16, &str, Vec<u8>) = match h.path.as_str() {
            _ if !get => (405, TEXT, b"method not allowed\n".to_vec()),
            "/healthz" if self.metrics.health.feed_live() => (200, TEXT, b"ok\n".to_vec()),
            "/healthz" => (503, TEXT, b"feed not live\n".to_vec()),
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render().into_bytes(),
            ),
            "/ws" => (426, TEXT, UPGRADE_PLEASE.to_vec()),
            "/echo" if self.config.echo => (426, TEXT, UPGRADE_PLEASE.to_vec()),
            _ => (404, TEXT, b"not found\n".to_vec()),
        };
        let extra: &[(&str, &str)] = match status {
            426 => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
            405 => &[("Allow", "GET, HEAD")],
            _ => &[],
        };
        let body = if h.method == "HEAD" { &[][..] } else { &body };
        respond(status, ctype, body, extra)
    }

    /// `GET /stream` or `GET /sse` (protocol §3.4): the subscription in the query (400 with a
    /// JSON error body when malformed), the same Origin and token checks as an upgrade (403,
    /// 401), then the stream (`streams.rs`). `HEAD` gets the response head alone.
    fn route_stream(&self, h: &HttpRequest, endpoint: Endpoint) -> Route {
        let query = match streams::parse_query(&h.query) {
            Ok(q) => q,
            Err(e) => {
                add(&self.shard.request_errors, 1);
                return Route::Respond(streams::error_response(400, &e, &[]));
            }
        };
        let grant = match admission::check(
            self.config,
            h.origin.as_deref(),
            query_param(&h.query, "token"),
            &[],
            self.now_s,
        ) {
            Ok(a) => a.grant,
            Err(refusal) => {
                self.shard.refuse(refusal.label());
                tracing::debug!(%refusal, path = %h.path, "stream refused");
                return refuse(refusal);
            }
        };
        if h.method == "HEAD" {
            return Route::Respond(streams::response_head_only(endpoint));
        }
        Route::Stream(StreamOpen {
            endpoint,
            query,
            last_event_id: h.last_event_id.clone(),
            cors_origin: h.origin.clone(),
            grant,
        })
    }

    /// A WebSocket upgrade: the endpoint (path), `?format=`, the admission checks (origin,
    /// token, subprotocol), then permessage-deflate.
    pub(crate) fn route_upgrade(&self, u: &UpgradeRequest) -> Route {
        let endpoint = match u.path.as_str() {
            "/ws" => Endpoint::Ws,
            "/echo" if self.config.echo => Endpoint::Echo,
            _ => {
                self.shard.handshake_failed("not_found");
                return respond(
                    404,
                    TEXT,
                    b"not found: WebSocket clients connect to /ws\n",
                    &[],
                );
            }
        };
        let format = match query_param(&u.query, "format").map(Format::from_query) {
            None => Format::Binary,
            Some(Some(f)) => f,
            Some(None) => {
                self.shard.handshake_failed("bad_format");
                return respond(400, TEXT, b"format must be binary or json\n", &[]);
            }
        };
        // Origin allowlist and access token, before anything is upgraded.
        let admitted = match admission::check(
            self.config,
            u.origin.as_deref(),
            query_param(&u.query, "token"),
            &u.protocols,
            self.now_s,
        ) {
            Ok(a) => a,
            Err(refusal) => {
                self.shard.refuse(refusal.label());
                tracing::debug!(%refusal, "upgrade refused");
                let extra: &[(&str, &str)] = if refusal == Refusal::MissingToken {
                    &[("WWW-Authenticate", "Bearer")]
                } else {
                    &[]
                };
                return respond(
                    refusal.status(),
                    TEXT,
                    format!("{refusal}\n").as_bytes(),
                    extra,
                );
            }
        };
        // permessage-deflate: the first acceptable offer, if the server allows it.
        let accepted = u
            .extensions
            .as_deref()
            .filter(|_| self.config.deflate)
            .and_then(deflate::negotiate);
        let mut response = Vec::with_capacity(256);
        write_accept_response_ext(
            u,
            admitted.protocol.as_deref(),
            accepted.as_ref().map(|a| a.response.as_str()),
            &mut response,
        );
        add(&self.shard.upgraded, 1);
        Route::Upgrade(Upgrade {
            response,
            endpoint,
            format,
            deflate: accepted.map(|a| a.params),
            grant: admitted.grant,
        })
    }
}

/// An access refusal of a plain request (stream, page): the status, a JSON body
/// `{"op":"error","code":"origin"|"missing_token"|"bad_token","message":..}`.
pub(crate) fn refuse(refusal: Refusal) -> Route {
    let body = serde_json::json!({
        "op": "error",
        "code": refusal.label(),
        "message": refusal.to_string(),
    });
    let mut body = serde_json::to_vec(&body).unwrap_or_default();
    body.push(b'\n');
    let extra: &[(&str, &str)] = if refusal == Refusal::MissingToken {
        &[("WWW-Authenticate", "Bearer")]
    } else {
        &[]
    };
    respond(refusal.status(), "application/json", &body, extra)
}

/// A complete plain HTTP response.
pub(crate) fn respond(status: u16, ctype: &str, body: &[u8], extra: &[(&str, &str)]) -> Route {
    let mut out = Vec::with_capacity(128 + body.len());
    write_http_response(status, ctype, body, extra, &mut out);
    Route::Respond(out)
}
