//! The tokio driver: one task per [`Client`] that owns the WebSocket, feeds the [`Session`]
//! and reconnects.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::backoff::{self, Backoff};
use crate::event::{CloseCause, ConnectionState, Event};
use crate::session::{Channel, Session, SessionConfig};

/// The default interval of the client's own pings.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);
/// The default time without any byte from the server after which the connection is deemed
/// dead: the server's default ping interval (30 s) plus 10 s of slack.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(40);
/// The default time allowed to open a connection (TCP and upgrade).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The encoding of data messages the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// Binary batches (`format=binary`, the server's default): smaller and faster to decode.
    #[default]
    Binary,
    /// JSON batches (`format=json`), prices and quantities as decimal strings.
    Json,
}

/// Why a [`ClientBuilder`] could not build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No endpoint was given.
    #[error("no endpoint: give at least one ws:// or wss:// URL")]
    NoEndpoint,
    /// An endpoint is not a `ws://` or `wss://` URL.
    #[error("endpoint {0:?} is not a ws:// or wss:// URL")]
    BadEndpoint(String),
    /// A CA given to [`ClientBuilder::tls_ca_pem`] is not a PEM certificate.
    #[error("TLS CA: {0}")]
    BadCa(String),
    /// The depth is not one the server offers.
    #[error("depth {0} is not 0, 1, 10, 25 or 100")]
    BadDepth(u16),
    /// A duration is zero where it must not be.
    #[error("{0} must be positive")]
    ZeroDuration(&'static str),
    /// Called outside a tokio runtime.
    #[error("a tokio runtime is needed to start the client")]
    NoRuntime,
}

/// The [`Client`] is gone: closed, refused for good, or its task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the client is closed")]
pub struct ClientClosed;

/// Builds a [`Client`]; see the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    config: SessionConfig,
    symbols: Vec<String>,
    backoff_min: Duration,
    backoff_max: Duration,
    backoff_seed: Option<u64>,
    ping_interval: Duration,
    dead_after: Duration,
    connect_timeout: Duration,
    event_capacity: usize,
    format: Format,
    /// Extra trust anchors for `wss://` (PEM), next to the Mozilla roots.
    tls_ca_pem: Vec<Vec<u8>>,
    /// A complete rustls configuration for `wss://` (overrides the roots and CAs).
    tls_config: Option<Arc<rustls::ClientConfig>>,
}

impl ClientBuilder {
    /// A builder for a client of `endpoints` (`ws://HOST:PORT/ws` URLs, tried in turn: each
    /// failure moves to the next), depth 25, books and trades. Query parameters of the URL are
    /// kept; the client adds `format` and `token`.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            config: SessionConfig::default(),
            symbols: Vec::new(),
            backoff_min: backoff::DEFAULT_MIN,
            backoff_max: backoff::DEFAULT_MAX,
            backoff_seed: None,
            ping_interval: DEFAULT_PING_INTERVAL,
            dead_after: DEFAULT_DEAD_AFTER,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            event_capacity: 1024,
            format: Format::Binary,
            tls_ca_pem: Vec::new(),
            tls_config: None,
        }
    }

    /// Trusts the certificates in `pem` (a CA, e.g. a test's or a private PKI's) for `wss://`
    /// endpoints, next to the Mozilla roots (`webpki-roots`). May be called more than once.
    #[must_use]
    pub fn tls_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_ca_pem.push(pem.into());
        self
    }

    /// The rustls configuration of `wss://` connections (client certificates, pinned roots,
    /// protocol versions…); replaces the default (Mozilla roots plus [`Self::tls_ca_pem`]).
    #[must_use]
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// The rustls configuration for `wss://` endpoints, if any endpoint is one.
    fn tls(&self) -> Result<Option<Arc<rustls::ClientConfig>>, BuildError> {
        if !self.endpoints.iter().any(|e| e.starts_with("wss://")) {
            return Ok(None);
        }
        if let Some(cfg) = &self.tls_config {
            return Ok(Some(cfg.clone()));
        }
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for pem in &self.tls_ca_pem {
            let mut any = false;
            for der in CertificateDer::pem_slice_iter(pem) {
                let der = der.map_err(|e| BuildError::BadCa(e.to_string()))?;
                roots
                    .add(der)
                    .map_err(|e| BuildError::BadCa(e.to_string()))?;
                any = true;
            }
            if !any {
                return Err(BuildError::BadCa("no certificate in the PEM".into()));
            }
        }
        // ring, explicitly: no process-wide provider needs installing.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| BuildError::BadCa(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Arc::new(cfg)))
    }

    /// The encoding of data messages (default: binary).
    #[must_use]
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }

    /// The access token, sent as the `token` query parameter of the upgrade.
    #[must_use]
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// Levels per side of every book: 1, 10, 25 (default), 100, or 0 for the whole book.
    #[must_use]
    pub fn depth(mut self, depth: u16) -> Self {
        self.config.depth = depth;
        self
    }

    /// Highest rate of book updates per second (protocol 1.1, §3.3): the server then sends
    /// conflated snapshots, each replacing the book, at most `hz` a second (it may grant
    /// less). Default: every delta. Servers before 1.1 do not know the field.
    #[must_use]
    pub fn max_hz(mut self, hz: u32) -> Self {
        self.config.max_hz = Some(hz);
        self
    }

    /// The channels of every symbol (default: books and trades).
    #[must_use]
    pub fn channels(mut self, channels: impl IntoIterator<Item = Channel>) -> Self {
        self.config.channels = channels.into_iter().collect();
        self
    }

    /// Symbols to follow from the first connection on (more with [`Client::subscribe`]).
    #[must_use]
    pub fn symbols<S: Into<String>>(mut self, symbols: impl IntoIterator<Item = S>) -> Self {
        self.symbols.extend(symbols.into_iter().map(Into::into));
        self
    }

    /// Reconnect back-off: the first delay is at most `min`, the ceiling doubles per failed
    /// attempt up to `max`, and each delay is uniform below its ceiling (full jitter).
    /// Defaults: 0.5 s and 20 s.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max;
        self
    }

    /// A fixed seed for the back-off's randomness (tests).
    #[must_use]
    pub fn backoff_seed(mut self, seed: u64) -> Self {
        self.backoff_seed = Some(seed);
        self
    }

    /// Interval of the client's own WebSocket pings (default 15 s).
    #[must_use]
    pub fn ping_interval(mut self, every: Duration) -> Self {
        self.ping_interval = every;
        self
    }

    /// Time without a byte from the server after which the connection is dropped and
    /// reconnected: the server's ping interval plus slack (default 30 s + 10 s).
    #[must_use]
    pub fn dead_after(mut self, after: Duration) -> Self {
        self.dead_after = after;
        self
    }

    /// Time allowed to open a connection, upgrade included (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Events buffered for a slow reader before the client stops reading the socket
    /// (default 1024); the server then evicts the connection and the client reconnects.
    #[must_use]
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.event_capacity = n.max(1);
        self
    }

    /// Starts the client's task on the current tokio runtime; returns the handle and the
    /// stream of events.
    ///
    /// # Errors
    /// A [`BuildError`] for an empty or malformed endpoint list, a depth the server does not
    /// offer, a zero duration, or no runtime.
    pub fn build(self) -> Result<(Client, Events), BuildError> {
        if self.endpoints.is_empty() {
            return Err(BuildError::NoEndpoint);
        }
        if let Some(bad) = self
            .endpoints
            .iter()
            .find(|e| !e.starts_with("ws://") && !e.starts_with("wss://"))
        {
            return Err(BuildError::BadEndpoint(bad.clone()));
        }
        let tls = self.tls()?;
        if ![0, 1, 10, 25, 100].contains(&self.config.depth) {
            return Err(BuildError::BadDepth(self.config.depth));
        }
        for (name, d) in [
            ("backoff min", self.backoff_min),
            ("ping interval", self.ping_interval),
            ("dead-after", self.dead_after),
            ("connect timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(BuildError::ZeroDuration(name));
            }
        }
        let rt = tokio::runtime::Handle::try_current().map_err(|_| BuildError::NoRuntime)?;
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::channel(self.event_capacity);
        let mut backoff = Backoff::new(self.backoff_min, self.backoff_max);
        if let Some(seed) = self.backoff_seed {
            backoff = backoff.with_seed(seed);
        }
        let mut session = Session::new(self.config);
        session.subscribe(&self.symbols);
        let driver = Driver {
            endpoints: self.endpoints,
            session,
            backoff,
            ping_interval: self.ping_interval,
            dead_after: self.dead_after,
            connect_timeout: self.connect_timeout,
            format: self.format,
            tls,
            cmds: cmd_rx,
            cmds_open: true,
            events: ev_tx,
        };
        rt.spawn(driver.run());
        Ok((Client { cmds: cmd_tx }, Events { rx: ev_rx }))
    }
}

#[derive(Debug)]
enum Command {
    Subscribe(Vec<String>),
    Unsubscribe(Vec<String>),
    Refresh(String),
    Close,
}

/// A handle to a running client, cheap to clone. The client runs until
/// [`close`](Self::close), a refusal that retrying cannot fix, or until its [`Events`] are
/// dropped; dropping every handle only stops the commands.
#[derive(Debug, Clone)]
pub struct Client {
    cmds: mpsc::UnboundedSender<Command>,
}

impl Client {
    /// A builder; same as [`ClientBuilder::new`].
    pub fn builder<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> ClientBuilder {
        ClientBuilder::new(endpoints)
    }

    /// Follows more symbols, on this connection and every later one.
    ///
    /// # Errors
    /// [`ClientClosed`] when the client has stopped.
    pub fn subscribe<S: Into<String>>(
        &self,
        symbols: impl IntoIterator<Item = S>,
    ) -> Result<(), ClientClosed> {
        let v = symbols.into_iter().map(Into::into).collect();
        self.cmds
            .send(Command::Subscribe(v))
            .map_err(|_| ClientClosed)
    }

    /// Stops following symbols.
    ///
    /// # Errors
    /// [`ClientClosed`] when the client has stopped.
    pub fn unsubscribe<S: Into<String>>(
        &self,
        symbols: impl IntoIterator<Item = S>,
    ) -> Result<(), ClientClosed> {
        let v = symbols.into_iter().map(Into::into).collect();
        self.cmds
            .send(Command::Unsubscribe(v))
            .map_err(|_| ClientClosed)
    }

    /// Replaces the access token: sent now as `{"op":"refresh"}` and used by later
    /// connections. The server answers with [`Event::Refreshed`].
    ///
    /// # Errors
    /// [`ClientClosed`] when the client has stopped.
    pub fn refresh(&self, token: impl Into<String>) -> Result<(), ClientClosed> {
        self.cmds
            .send(Command::Refresh(token.into()))
            .map_err(|_| ClientClosed)
    }

    /// Closes the connection and stops the client; the last event is
    /// [`ConnectionState::Closed`].
    pub fn close(&self) {
        let _ = self.cmds.send(Command::Close);
    }
}

/// The client's events, in order; `None` once the client has stopped.
#[derive(Debug)]
pub struct Events {
    rx: mpsc::Receiver<Event>,
}

impl Events {
    /// The next event.
    pub async fn next(&mut self) -> Option<Event> {
        self.rx.recv().await
    }
}

impl futures_util::Stream for Events {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}

/// How a connection ended.
enum End {
    /// Reconnect.
    Lost(String),
    /// Stop for good.
    Stop(CloseCause),
}

impl fmt::Debug for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lost(c) => write!(f, "lost: {c}"),
            Self::Stop(c) => write!(f, "stop: {c:?}"),
        }
    }
}

struct Driver {
    endpoints: Vec<String>,
    /// The rustls configuration of `wss://` endpoints.
    tls: Option<Arc<rustls::ClientConfig>>,
    session: Session,
    backoff: Backoff,
    ping_interval: Duration,
    dead_after: Duration,
    connect_timeout: Duration,
    format: Format,
    cmds: mpsc::UnboundedReceiver<Command>,
    /// False once every [`Client`] handle is gone (a closed channel must not be polled again:
    /// it is always ready).
    cmds_open: bool,
    events: mpsc::Sender<Event>,
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Driver {
    async fn run(mut self) {
        let mut next = 0usize;
        loop {
            let endpoint = self.endpoints[next % self.endpoints.len()].clone();
            next = next.wrapping_add(1);
            let state = ConnectionState::Connecting {
                endpoint: endpoint.clone(),
                attempt: self.backoff.attempt(),
            };
            if !self.emit(Event::Connection(state)).await {
                return;
            }
            let end = match self.open(&endpoint).await {
                Ok(ws) => {
                    if !self
                        .emit(Event::Connection(ConnectionState::Open {
                            endpoint: endpoint.clone(),
                        }))
                        .await
                    {
                        return;
                    }
                    let end = self.serve(ws).await;
                    self.session.handle_disconnected();
                    end
                }
                Err(end) => end,
            };
            let cause = match end {
                End::Stop(cause) => {
                    let _ = self
                        .events
                        .send(Event::Connection(ConnectionState::Closed { cause }))
                        .await;
                    return;
                }
                End::Lost(cause) => cause,
            };
            tracing::debug!(%endpoint, %cause, "connection lost");
            let delay = self.backoff.next_delay();
            let state = ConnectionState::Reconnecting {
                delay,
                attempt: self.backoff.attempt(),
                cause,
            };
            if !self.emit(Event::Connection(state)).await {
                return;
            }
            let until = Instant::now() + delay;
            loop {
                tokio::select! {
                    () = sleep_until(until) => break,
                    () = self.events.closed() => return,
                    cmd = self.cmds.recv(), if self.cmds_open => {
                        if !self.command(cmd) {
                            let _ = self.events.send(Event::Connection(ConnectionState::Closed { cause: CloseCause::ByUser })).await;
                            return;
                        }
                    }
                }
            }
        }
    }

    /// Applies a command to the session; false when the client must stop.
    fn command(&mut self, cmd: Option<Command>) -> bool {
        match cmd {
            Some(Command::Subscribe(v)) => self.session.subscribe(v),
            Some(Command::Unsubscribe(v)) => self.session.unsubscribe(v),
            Some(Command::Refresh(t)) => self.session.refresh(t),
            // Every handle dropped: carry on for the events' reader.
            None => self.cmds_open = false,
            Some(Command::Close) => return false,
        }
        true
    }

    /// Sends an event; false when nobody listens any more and no handle is left.
    async fn emit(&mut self, ev: Event) -> bool {
        self.note(&ev);
        self.events.send(ev).await.is_ok()
    }

    /// What the driver itself learns from an event.
    fn note(&mut self, ev: &Event) {
        if let Event::Connection(ConnectionState::Subscribed { .. }) = ev {
            // Subscribed again: the connection is useful, the back-off starts over.
            self.backoff.reset();
        }
    }

    async fn open(&mut self, endpoint: &str) -> Result<Ws, End> {
        let mut url = endpoint.to_owned();
        if self.format == Format::Json {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("format=json");
        }
        if let Some(token) = self.session.token() {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str("token=");
            url.push_str(&percent_encode(token));
        }
        match timeout(
            self.connect_timeout,
            tokio_tungstenite::connect_async_tls_with_config(
                url.as_str(),
                None,
                true,
                self.tls.clone().map(tokio_tungstenite::Connector::Rustls),
            ),
        )
        .await
        {
            Err(_) => Err(End::Lost("connect timed out".into())),
            Ok(Ok((ws, _))) => Ok(ws),
            Ok(Err(tungstenite::Error::Http(resp))) => {
                let status = resp.status().as_u16();
                if status == 401 || status == 403 {
                    Err(End::Stop(CloseCause::Refused(status)))
                } else {
                    Err(End::Lost(format!("upgrade refused with HTTP {status}")))
                }
            }
            Ok(Err(e)) => Err(End::Lost(e.to_string())),
        }
    }

    async fn serve(&mut self, mut ws: Ws) -> End {
        let start = Instant::now();
        self.session.handle_connected(start.into_std());
        let mut last_rx = start;
        let mut ping = tokio::time::interval_at(start + self.ping_interval, self.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Flush what the session has to say.
            while let Some(text) = self.session.poll_transmit() {
                if let Err(e) = ws.send(Message::text(text)).await {
                    return End::Lost(e.to_string());
                }
            }
            let mut waited = false;
            while let Some(ev) = self.session.poll_event() {
                self.note(&ev);
                let ev = match self.events.try_reserve() {
                    Ok(permit) => {
                        permit.send(ev);
                        continue;
                    }
                    Err(mpsc::error::TrySendError::Full(())) => ev,
                    Err(mpsc::error::TrySendError::Closed(())) => {
                        let _ = ws.close(None).await;
                        return End::Stop(CloseCause::ByUser);
                    }
                };
                waited = true;
                if self.events.send(ev).await.is_err() {
                    let _ = ws.close(None).await;
                    return End::Stop(CloseCause::ByUser);
                }
            }
            if waited {
                // The reader held the loop up: the socket was not read meanwhile, so that time
                // says nothing about the server.
                last_rx = Instant::now();
            }
            let retry_at = self.session.poll_timeout().map(Instant::from_std);
            let dead_at = last_rx + self.dead_after;
            tokio::select! {
                msg = ws.next() => {
                    last_rx = Instant::now();
                    let result = match msg {
                        None => return End::Lost("connection closed".into()),
                        Some(Err(e)) => return End::Lost(e.to_string()),
                        Some(Ok(Message::Binary(b))) => self.session.handle_binary(&b),
                        Some(Ok(Message::Text(t))) => self.session.handle_text(last_rx.into_std(), &t),
                        Some(Ok(Message::Close(frame))) => {
                            let (code, reason) = frame
                                .map(|f| (f.code, f.reason.to_string()))
                                .unwrap_or((CloseCode::Status, String::new()));
                            // Finish the close handshake, briefly.
                            let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                            if code == CloseCode::Policy {
                                return End::Stop(CloseCause::Policy(reason));
                            }
                            return End::Lost(format!("closed by the server: {} {reason}", u16::from(code)));
                        }
                        Some(Ok(_)) => Ok(()),
                    };
                    if let Err(e) = result {
                        let _ = ws.close(None).await;
                        return End::Lost(format!("undecodable message: {e}"));
                    }
                }
                cmd = self.cmds.recv(), if self.cmds_open => {
                    if !self.command(cmd) {
                        let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                        return End::Stop(CloseCause::ByUser);
                    }
                }
                () = self.events.closed() => {
                    // Nobody reads the events any more.
                    let _ = timeout(Duration::from_secs(1), ws.close(None)).await;
                    return End::Stop(CloseCause::ByUser);
                }
                _ = ping.tick() => {
                    if let Err(e) = ws.send(Message::Ping(Vec::new().into())).await {
                        return End::Lost(e.to_string());
                    }
                }
                () = sleep_until(dead_at) => {
                    return End::Lost(format!("nothing from the server for {:?}", self.dead_after));
                }
                () = async {
                    match retry_at {
                        Some(t) => sleep_until(t).await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.session.handle_timeout(Instant::now().into_std());
                }
            }
        }
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ResyncCause;

    #[test]
    fn builder_refuses_what_cannot_work() {
        assert_eq!(
            ClientBuilder::new(Vec::<String>::new()).build().err(),
            Some(BuildError::NoEndpoint)
        );
        assert_eq!(
            ClientBuilder::new(["http://x"]).build().err(),
            Some(BuildError::BadEndpoint("http://x".into()))
        );
        assert_eq!(
            ClientBuilder::new(["ws://x/ws"]).depth(5).build().err(),
            Some(BuildError::BadDepth(5))
        );
        assert_eq!(
            ClientBuilder::new(["ws://x/ws"]).build().err(),
            Some(BuildError::NoRuntime)
        );
        assert_eq!(percent_encode("a b&c"), "a%20b%26c");
    }

    /// A WebSocket server on loopback that runs `script` on each accepted connection.
    async fn fake_server<F, Fut>(script: F) -> String
    where
        F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(tcp).await {
                    tokio::spawn(script(ws));
                }
            }
        });
        format!("ws://{addr}/ws")
    }

    /// The connection states until `stop` says so or the client stops (bounded).
    async fn states_until(
        events: &mut Events,
        stop: impl Fn(&ConnectionState) -> bool,
    ) -> Vec<ConnectionState> {
        let mut states = Vec::new();
        let _ = timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.next().await {
                if let Event::Connection(s) = ev {
                    let done = stop(&s);
                    states.push(s);
                    if done {
                        return;
                    }
                }
            }
        })
        .await;
        states
    }

    #[tokio::test]
    async fn a_silent_server_is_deemed_dead() {
        // Takes the subscribe, then neither reads nor writes again.
        let url = fake_server(|mut ws| async move {
            let _ = ws.next().await;
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(ws);
        })
        .await;
        let (client, mut events) = Client::builder([url])
            .symbols(["X"])
            .ping_interval(Duration::from_millis(100))
            .dead_after(Duration::from_millis(300))
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .build()
            .expect("build");
        let states = states_until(&mut events, |s| {
            matches!(s, ConnectionState::Reconnecting { .. })
        })
        .await;
        assert!(
            matches!(states.last(), Some(ConnectionState::Reconnecting { cause, .. }) if cause.contains("nothing from the server")),
            "{states:?}"
        );
        client.close();
    }

    #[tokio::test]
    async fn the_client_pings_and_pongs_keep_it_alive() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let url = fake_server(move |mut ws| {
            let tx = tx.clone();
            async move {
                // Reading answers pings with pongs (tungstenite does).
                while let Some(Ok(m)) = ws.next().await {
                    if m.is_ping() {
                        let _ = tx.send(());
                    }
                }
            }
        })
        .await;
        let (client, mut events) = Client::builder([url])
            .symbols(["X"])
            .ping_interval(Duration::from_millis(100))
            // Generous against a loaded machine (a test thread descheduled for a few hundred
            // milliseconds must not look like a dead server); the window below is still three
            // times this long, so only the pongs keep the connection alive.
            .dead_after(Duration::from_millis(1000))
            .build()
            .expect("build");
        let mut pings = 0;
        // Three times the dead-connection time: alive only thanks to the pongs.
        let until = Instant::now() + Duration::from_millis(3000);
        while Instant::now() < until {
            tokio::select! {
                Some(()) = rx.recv() => pings += 1,
                ev = events.next() => {
                    assert!(
                        !matches!(ev, Some(Event::Connection(ConnectionState::Reconnecting { .. }))),
                        "{ev:?}"
                    );
                }
                () = sleep_until(until) => {}
            }
        }
        assert!(pings >= 5, "{pings} pings in 3 s at one per 100 ms");
        client.close();
    }

    #[tokio::test]
    async fn close_1008_is_not_retried() {
        let url = fake_server(|mut ws| async move {
            let _ = ws.next().await;
            let _ = ws
                .close(Some(tungstenite::protocol::CloseFrame {
                    code: CloseCode::Policy,
                    reason: "token expired".into(),
                }))
                .await;
            while ws.next().await.is_some() {}
        })
        .await;
        let (_client, mut events) = Client::builder([url])
            .symbols(["X"])
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .build()
            .expect("build");
        let states =
            states_until(&mut events, |s| matches!(s, ConnectionState::Closed { .. })).await;
        assert_eq!(
            states.last(),
            Some(&ConnectionState::Closed {
                cause: CloseCause::Policy("token expired".into())
            })
        );
        assert!(
            !states
                .iter()
                .any(|s| matches!(s, ConnectionState::Reconnecting { .. }))
        );
    }

    #[tokio::test]
    async fn a_failing_endpoint_moves_to_the_next() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| format!("ws://{a}/ws"))
            .expect("port");
        let live = fake_server(|mut ws| async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    let v: serde_json::Value = serde_json::from_str(&t).expect("json");
                    let reply = serde_json::json!({"op":"subscribed","id":v["id"],"symbols":[]});
                    let _ = ws.send(Message::text(reply.to_string())).await;
                }
            }
        })
        .await;
        let (client, mut events) = Client::builder([dead.clone(), live.clone()])
            .symbols(["X"])
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .build()
            .expect("build");
        let states = states_until(&mut events, |s| {
            matches!(s, ConnectionState::Subscribed { .. })
        })
        .await;
        assert!(
            matches!(&states[0], ConnectionState::Connecting { endpoint, attempt: 0 } if *endpoint == dead),
            "{states:?}"
        );
        assert!(
            states.contains(&ConnectionState::Open { endpoint: live }),
            "{states:?}"
        );
        assert!(matches!(
            states.last(),
            Some(ConnectionState::Subscribed { .. })
        ));
        client.close();
    }

    #[tokio::test]
    async fn reconnects_resume_from_the_positions_held_against_a_1_1_server() {
        use crate::wire::tests::{batch, book_body, record};
        use std::sync::atomic::{AtomicU32, Ordering};
        // A protocol 1.1 server: the first connection gives epoch e1, a snapshot and a delta,
        // then breaks; the second expects the resume and replays from seq 12, no snapshot.
        let conns = std::sync::Arc::new(AtomicU32::new(0));
        let (tx, mut resume_rx) = mpsc::unbounded_channel();
        let url = fake_server(move |mut ws| {
            let n = conns.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            async move {
                let Some(Ok(Message::Text(req))) = ws.next().await else {
                    return;
                };
                let req: serde_json::Value = serde_json::from_str(&req).expect("json");
                let _ = tx.send(req["resume"].clone());
                let recovered = if n == 0 { "" } else { r#","recovered":true"# };
                let reply = format!(
                    r#"{{"op":"subscribed","id":{},"epoch":"e1","symbols":[{{"symbol":"X","sid":1,"px_decimals":2,"qty_decimals":6{recovered}}}]}}"#,
                    req["id"]
                );
                let _ = ws.send(Message::text(reply)).await;
                let recs = if n == 0 {
                    vec![
                        record(1, 1, 1, 10, &book_body(&[(100, 1)], &[(101, 1)], None)),
                        record(2, 0, 1, 11, &book_body(&[(99, 2)], &[], None)),
                    ]
                } else {
                    vec![record(2, 0, 1, 12, &book_body(&[(98, 3)], &[], None))]
                };
                let _ = ws.send(Message::binary(batch(&recs))).await;
                if n == 0 {
                    // Break the connection without a close frame.
                    drop(ws);
                } else {
                    while ws.next().await.is_some() {}
                }
            }
        })
        .await;
        let (client, mut events) = Client::builder([url])
            .symbols(["X"])
            .depth(10)
            .backoff(Duration::from_millis(10), Duration::from_millis(10))
            .build()
            .expect("build");
        let mut seen = Vec::new();
        let ok = timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.next().await {
                match ev {
                    Event::Book(u) => {
                        seen.push(format!("book {} {}", u.book.seq(), u.snapshot));
                        if u.book.seq() == 12 {
                            let bids: Vec<_> = u.book.bids().collect();
                            assert_eq!(bids, vec![(100, 1), (99, 2), (98, 3)]);
                            return;
                        }
                    }
                    Event::Connection(ConnectionState::Subscribed { resumed, epoch }) => {
                        seen.push(format!("subscribed {resumed:?} {epoch:?}"));
                    }
                    Event::Connection(ConnectionState::Reconnecting { .. }) => {
                        seen.push("reconnecting".into());
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(ok.is_ok(), "{seen:?}");
        assert_eq!(
            seen,
            vec![
                r#"subscribed Fresh Some("e1")"#.to_owned(),
                "book 11 true".into(),
                "reconnecting".into(),
                r#"subscribed Recovered Some("e1")"#.into(),
                "book 12 false".into(),
            ]
        );
        assert_eq!(resume_rx.recv().await, Some(serde_json::Value::Null));
        assert_eq!(
            resume_rx.recv().await,
            Some(serde_json::json!({"epoch":"e1","streams":{"X":{"book":11}}}))
        );
        client.close();
    }

    #[tokio::test]
    async fn a_checksum_mismatch_resubscribes_that_symbol_on_the_same_connection() {
        use crate::book::checksum;
        use crate::wire::tests::{batch, book_body, record};
        // A protocol 1.1 server whose second delta for X arrives with a level corrupted (the
        // checksum is that of the true book); Y is fine.
        let (tx, mut requests) = mpsc::unbounded_channel();
        let url = fake_server(move |mut ws| {
            let tx = tx.clone();
            async move {
                let mut snapshot_seq = 10;
                while let Some(Ok(Message::Text(req))) = ws.next().await {
                    let req: serde_json::Value = serde_json::from_str(&req).expect("json");
                    let _ = tx.send(req["symbols"].clone());
                    let infos: Vec<serde_json::Value> = req["symbols"]
                        .as_array()
                        .expect("symbols")
                        .iter()
                        .map(|s| {
                            let sid = if s == "X" { 1 } else { 2 };
                            serde_json::json!({"symbol":s,"sid":sid,"px_decimals":2,"qty_decimals":6})
                        })
                        .collect();
                    let reply = serde_json::json!({"op":"subscribed","id":req["id"],"epoch":"e","symbols":infos});
                    let _ = ws.send(Message::text(reply.to_string())).await;
                    let snap = |sid: u32, seq: u64| {
                        record(1, 3, sid, seq, &book_body(&[(100, 1)], &[], Some(checksum(10, [(100, 1)], []))))
                    };
                    let mut recs: Vec<Vec<u8>> = infos
                        .iter()
                        .map(|i| snap(u32::try_from(i["sid"].as_u64().unwrap_or(0)).unwrap_or(0), snapshot_seq))
                        .collect();
                    if snapshot_seq == 10 {
                        let good = checksum(10, [(100, 2)], []);
                        recs.push(record(2, 2, 1, 11, &book_body(&[(100, 3)], &[], Some(good))));
                        recs.push(record(2, 2, 2, 11, &book_body(&[(100, 2)], &[], Some(good))));
                    }
                    snapshot_seq = 20;
                    let _ = ws.send(Message::binary(batch(&recs))).await;
                }
            }
        })
        .await;
        let (client, mut events) = Client::builder([url])
            .symbols(["X", "Y"])
            .depth(10)
            .build()
            .expect("build");
        let mut resyncs = Vec::new();
        let ok = timeout(Duration::from_secs(20), async {
            while let Some(ev) = events.next().await {
                match ev {
                    Event::Resync(r) => resyncs.push(r),
                    Event::Book(u) if u.book.symbol() == "X" && u.book.seq() == 20 => return,
                    Event::Connection(ConnectionState::Reconnecting { cause, .. }) => {
                        panic!("the connection must stay up: {cause}")
                    }
                    _ => {}
                }
            }
        })
        .await;
        assert!(ok.is_ok(), "X was never resynced: {resyncs:?}");
        assert_eq!(resyncs.len(), 1);
        assert_eq!(&*resyncs[0].symbol, "X");
        assert!(matches!(
            resyncs[0].cause,
            ResyncCause::Checksum { seq: 11, .. }
        ));
        assert_eq!(requests.recv().await, Some(serde_json::json!(["X", "Y"])));
        assert_eq!(
            requests.recv().await,
            Some(serde_json::json!(["X"])),
            "X alone"
        );
        client.close();
    }

    #[tokio::test]
    async fn dropping_the_events_stops_the_client() {
        let url = fake_server(|mut ws| async move { while ws.next().await.is_some() {} }).await;
        let (client, events) = Client::builder([url])
            .symbols(["X"])
            .build()
            .expect("build");
        drop(events);
        let stopped = timeout(Duration::from_secs(10), async {
            while client.subscribe(["Y"]).is_ok() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(stopped.is_ok(), "the client kept running without a reader");
    }

    #[tokio::test]
    async fn nothing_listening_means_reconnecting_with_backoff() {
        // A port nobody listens on: every attempt fails at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("port");
        let (client, mut events) = Client::builder([format!("ws://127.0.0.1:{port}/ws")])
            .backoff(Duration::from_millis(5), Duration::from_millis(20))
            .backoff_seed(3)
            .symbols(["X"])
            .build()
            .expect("build");
        let mut delays = Vec::new();
        while delays.len() < 6 {
            match events.next().await {
                Some(Event::Connection(ConnectionState::Reconnecting {
                    delay, attempt, ..
                })) => {
                    assert_eq!(attempt as usize, delays.len() + 1);
                    delays.push(delay);
                }
                Some(_) => {}
                None => panic!("client stopped"),
            }
        }
        assert!(delays.iter().all(|d| *d <= Duration::from_millis(20)));
        client.close();
        while let Some(ev) = events.next().await {
            if let Event::Connection(ConnectionState::Closed { cause }) = ev {
                assert_eq!(cause, CloseCause::ByUser);
                return;
            }
        }
        panic!("no Closed event");
    }
}
