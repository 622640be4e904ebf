//! Starting and stopping the whole engine: feed (embedded or external), ingester, shards.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::config::{Config, ConfigError, FeedSource, FeedUrl, Role};
use crate::fanout::interest::Interest;
use crate::feed::ingest::{self, IngestContext};
use crate::metrics::Metrics;
use crate::replay::epoch::{Epoch, EpochCell};
use crate::ring::{Ring, SymbolDirectory};
use crate::shard::{self, ShardContext};
use crate::tls::{self, CertStore, TlsError};

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A setting is invalid; the message names it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The client listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// The embedded simulated exchange could not start.
    #[error("cannot start the embedded feed simulator: {0}")]
    Simulator(#[source] feed_sim::SimError),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    /// Creating an epoll instance, a waker or a thread failed.
    #[error("cannot start engine threads: {0}")]
    Threads(#[from] io::Error),
}

/// A running engine.
#[derive(Debug)]
pub struct Engine {
    local_addr: SocketAddr,
    feed_url: String,
    metrics: Arc<Metrics>,
    shutdown: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    ingest_waker: Arc<mio::Waker>,
    rings: Vec<Arc<Ring>>,
    simulator: Option<feed_sim::Simulator>,
    /// The served certificate (with `--tls-cert`), reloaded on SIGHUP.
    certs: Option<Arc<CertStore>>,
    /// The JWT key (with `--jwt-secret-file`/`--jwt-public-key`), reloaded on SIGHUP: a clone
    /// sharing the shards' key.
    jwt: Option<crate::config::JwtKey>,
}

impl Engine {
    /// Validates `config`, binds every shard's listener, starts the feed, the ingester and the
    /// shards, and returns at once.
    ///
    /// # Errors
    /// See [`StartError`].
    pub fn start(config: Config) -> Result<Self, StartError> {
        config.validate()?;
        let config = Arc::new(config);
        let (certs, tls_config) = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let store = Arc::new(CertStore::load(cert, key)?);
                let cfg = tls::server_config(store.clone()).map_err(|e| TlsError {
                    path: cert.clone(),
                    reason: e.to_string(),
                })?;
                (Some(store), Some(cfg))
            }
            _ => (None, None),
        };
        let (feed, simulator) = match &config.feed {
            // An edge reads no feed: its streams come over NATS.
            _ if config.role == Role::Edge => (
                FeedUrl::parse("ws://127.0.0.1:1/not-read-by-an-edge")?,
                None,
            ),
            FeedSource::External(url) => (url.clone(), None),
            FeedSource::Embedded {
                symbols,
                rate,
                seed,
            } => {
                let sim_cfg = feed_sim::SimConfig {
                    listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                    symbols: *symbols,
                    seed: *seed,
                    rate: *rate,
                    ..feed_sim::SimConfig::default()
                };
                let sim = feed_sim::Simulator::start(sim_cfg).map_err(StartError::Simulator)?;
                let url = FeedUrl::parse(&sim.feed_url())?;
                tracing::info!(feed = %url.url, symbols, rate, "embedded simulated exchange started");
                (url, Some(sim))
            }
        };

        // Bind every listener before any thread starts: an error is reported, not logged.
        let mut listeners = Vec::with_capacity(config.shards);
        let mut addr = config.listen;
        for _ in 0..config.shards {
            let l =
                shard::bind_listener(addr).map_err(|source| StartError::Listen { addr, source })?;
            // With port 0 the first bind picks the port; the other shards share it.
            addr = l
                .local_addr()
                .map_err(|source| StartError::Listen { addr, source })?;
            listeners.push(l);
        }

        let metrics = Arc::new(Metrics::new(config.shards));
        // An ingest node's bus publisher is one more consumer of the ingester, after the shards.
        let bus_shard = (config.role == Role::Ingest).then_some(config.shards);
        let interest = Arc::new(Interest::new(
            config.shards + usize::from(bus_shard.is_some()),
            config.max_symbols,
        ));
        let symbols = Arc::new(SymbolDirectory::default());
        let shutdown = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(shard::limits::ConnCounter::new(
            config.max_conns,
            config.max_conns_per_ip,
        ));
        let (req_tx, req_rx) = crossbeam_channel::unbounded();
        // One numbering per process: a restart is a new epoch (docs/protocol.md §4.3).
        let epoch = Arc::new(EpochCell::new(Epoch::generate()));
        let ingest_poll = mio::Poll::new()?;
        let ingest_waker = Arc::new(mio::Waker::new(ingest_poll.registry(), ingest::REQUESTS)?);

        let mut polls = Vec::with_capacity(config.shards);
        let mut rings = Vec::with_capacity(config.shards);
        for _ in 0..config.shards {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), shard::WAKER)?;
            rings.push(Arc::new(Ring::new(config.ring_capacity, waker)));
            polls.push(poll);
        }

        let cores = if config.pin {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut threads = Vec::new();
        for (id, (poll, listener)) in polls.into_iter().zip(listeners).enumerate() {
            let ctx = ShardContext {
                id,
                config: config.clone(),
                ring: rings[id].clone(),
                interest: interest.clone(),
                symbols: symbols.clone(),
                requests: req_tx.clone(),
                ingest_waker: ingest_waker.clone(),
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
                conns: conns.clone(),
                tls: tls_config.clone(),
                epoch: epoch.clone(),
            };
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let t = std::thread::Builder::new()
                .name(format!("shard-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        if core_affinity::set_for_current(core) {
                            tracing::info!(shard = id, core = core.id, "shard pinned");
                        } else {
                            tracing::warn!(shard = id, core = core.id, "could not pin shard");
                        }
                    }
                    if let Err(e) = shard::run(ctx, poll, listener) {
                        tracing::error!(shard = id, error = %e, "shard stopped on an event-loop error");
                    }
                })?;
            threads.push(t);
        }

        // The bus needs tokio's network types, which its loom build lacks (the loom build runs
        // the ring's models only).
        #[cfg(loom)]
        if config.role != Role::Standalone {
            return Err(StartError::Threads(io::Error::other(
                "the ingest and edge roles are not built with --cfg loom",
            )));
        }
        #[cfg(not(loom))]
        if config.role == Role::Edge {
            let bus = crate::bus::edge::EdgeBus {
                nats_url: config.nats_url.clone().unwrap_or_default(),
                subjects: crate::bus::Subjects::new(&config.nats_prefix),
                rings: rings.clone(),
                interest,
                symbols,
                requests: req_rx,
                poll: ingest_poll,
                reconnect: (config.reconnect_min, config.reconnect_max),
                epoch: epoch.clone(),
                replay: config.replay,
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            };
            let t = std::thread::Builder::new()
                .name("bus-edge".into())
                .spawn(move || {
                    if let Err(e) = bus.run() {
                        tracing::error!(error = %e, "bus subscriber stopped");
                    }
                })?;
            threads.push(t);
            let scheme = if certs.is_some() { "wss" } else { "ws" };
            tracing::info!(listen = %addr, shards = config.shards, "tickcast edge serving {scheme}://{addr}/ws");
            return Ok(Self {
                local_addr: addr,
                feed_url: String::new(),
                metrics,
                shutdown,
                threads,
                ingest_waker,
                rings,
                simulator,
                certs,
                jwt: config.jwt.clone(),
            });
        }

        #[cfg_attr(loom, allow(unused_mut))]
        let mut ingest_rings = rings.clone();
        #[cfg(not(loom))]
        if let Some(bus_shard) = bus_shard {
            let poll = mio::Poll::new()?;
            let waker = mio::Waker::new(poll.registry(), mio::Token(0))?;
            let ring = Arc::new(Ring::new(config.ring_capacity, waker));
            // The bus takes the streams the edges hold leases on (its publisher tells the
            // ingester), or with bus-publish-all every stream of every symbol in both formats.
            if config.bus_publish_all {
                for i in 0..crate::fanout::Topic::count(config.max_symbols) {
                    interest.add(bus_shard, crate::bus::topic_of_index(i));
                }
            }
            ingest_rings.push(ring.clone());
            let bus = crate::bus::ingest::IngestBus {
                nats_url: config.nats_url.clone().unwrap_or_default(),
                subjects: crate::bus::Subjects::new(&config.nats_prefix),
                ring,
                poll,
                shard: bus_shard,
                requests: req_tx.clone(),
                ingest_waker: ingest_waker.clone(),
                symbols: symbols.clone(),
                epoch: epoch.clone(),
                reconnect: (config.reconnect_min, config.reconnect_max),
                interest: interest.clone(),
                publish_all: config.bus_publish_all,
                metrics: metrics.clone(),
                shutdown: shutdown.clone(),
            };
            metrics.bus.epoch.store(
                u64::from(epoch.get().as_u32()),
                std::sync::atomic::Ordering::Relaxed,
            );
            let t = std::thread::Builder::new()
                .name("bus-ingest".into())
                .spawn(move || {
                    if let Err(e) = bus.run() {
                        tracing::error!(error = %e, "bus publisher stopped");
                    }
                })?;
            threads.push(t);
        }
        let ictx = IngestContext {
            feed: feed.clone(),
            rings: ingest_rings,
            interest,
            symbols,
            requests: req_rx,
            metrics: metrics.clone(),
            shutdown: shutdown.clone(),
            reconnect_min: config.reconnect_min,
            reconnect_max: config.reconnect_max,
            stall_timeout: config.feed_stall_timeout,
            epoch,
            replay: config.replay,
        };
        let t = std::thread::Builder::new()
            .name("ingest".into())
            .spawn(move || {
                if let Err(e) = ingest::run(ictx, ingest_poll) {
                    tracing::error!(error = %e, "ingester stopped on an event-loop error");
                }
            })?;
        threads.push(t);
        let scheme = if certs.is_some() { "wss" } else { "ws" };
        tracing::info!(listen = %addr, shards = config.shards, feed = %feed.url, "tickcast serving {scheme}://{addr}/ws");
        Ok(Self {
            local_addr: addr,
            feed_url: feed.url,
            metrics,
            shutdown,
            threads,
            ingest_waker,
            rings,
            simulator,
            certs,
            jwt: config.jwt.clone(),
        })
    }

    /// Whether the client port speaks TLS.
    pub fn tls(&self) -> bool {
        self.certs.is_some()
    }

    /// Makes SIGHUP reload the TLS certificate and key and the JWT key from their files (new
    /// connections get the new certificate and are verified with the new key; open ones keep
    /// theirs). A reload that fails is logged and what was loaded before stays. With neither,
    /// SIGHUP is logged and ignored.
    ///
    /// # Errors
    /// When the handler cannot be installed.
    pub fn reload_on_sighup(&self) -> io::Result<()> {
        let certs = self.certs.clone();
        let jwt = self.jwt.clone();
        let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
        std::thread::Builder::new()
            .name("sighup".into())
            .spawn(move || {
                for _ in signals.forever() {
                    if certs.is_none() && jwt.is_none() {
                        tracing::info!("SIGHUP: nothing to reload (no TLS, no JWT key)");
                    }
                    if let Some(store) = &certs {
                        match store.reload() {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                            Err(e) => {
                                tracing::error!(error = %e, "SIGHUP: TLS reload failed; the current certificate stays");
                            }
                        }
                    }
                    if let Some(key) = &jwt {
                        match key.reload() {
                            Ok(()) => tracing::info!("SIGHUP: JWT key reloaded"),
                            Err(e) => {
                                tracing::error!(error = %e, "SIGHUP: JWT key reload failed; the current key stays");
                            }
                        }
                    }
                }
            })?;
        Ok(())
    }

    /// The address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The feed being read.
    pub fn feed_url(&self) -> &str {
        &self.feed_url
    }

    /// Process metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A flag that stops the engine when set (for signal handlers).
    pub fn shutdown_flag(&self) -> Arc<AtomicBool> {
        self.shutdown.clone()
    }

    /// Makes SIGTERM and SIGINT start a graceful shutdown: stop accepting, close every client
    /// with 1001, flush, and return from [`Engine::wait`] within the shutdown deadline. A second
    /// signal while shutting down ends the process at once (exit code 130).
    ///
    /// # Errors
    /// When a handler cannot be installed.
    pub fn stop_on_signals(&self) -> io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        for sig in [SIGTERM, SIGINT] {
            // Registered first, so it sees the flag still clear on the first signal and set on
            // the second one.
            signal_hook::flag::register_conditional_shutdown(sig, 130, self.shutdown.clone())?;
            signal_hook::flag::register(sig, self.shutdown.clone())?;
        }
        let waker = self.ingest_waker.clone();
        let rings = self.rings.clone();
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        // The handlers above only set the flag; this thread blocks until a signal arrives and
        // turns it into wake-ups, so that sleeping shards and the ingester notice at once.
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if signals.forever().next().is_none() {
                    return;
                }
                tracing::info!("shutdown requested");
                let _ = waker.wake();
                for r in &rings {
                    r.wake_now();
                }
            })?;
        Ok(())
    }

    /// Blocks until the engine stops (after [`Engine::shutdown_flag`] is set or a thread ends).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(sim) = self.simulator.take() {
            sim.shutdown();
        }
    }

    /// Stops every thread: clients get close 1001, then the threads are joined.
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Relaxed);
        let _ = self.ingest_waker.wake();
        for r in &self.rings {
            r.wake_now();
        }
        self.wait();
    }
}
