//! The HTTP service: `POST /v1/batches` (mTLS, body = envelope, response = CBOR ack or CBOR
//! rejection), `GET /health` and `GET /metrics` (also served without TLS on an optional
//! separate listener for scrapers and load balancers). Kiosk identity = client certificate CN.
//! With [`start_with_ca`] the same mTLS listener also serves the CA of [`crate::ca`]. With
//! [`start_services`] a separate TLS listener without client authentication serves kiosk
//! enrollment ([`crate::enroll`], which says why it is a listener of its own) and nothing else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::ingest::Ingestor;
/// The authenticated kiosk of a connection (defined in [`crate::tls`], which extracts it).
pub use crate::tls::KioskIdentity;

/// Server start failure.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}

const CBOR: &str = "application/cbor";

fn cbor_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, CBOR)], body).into_response()
}

async fn post_batch(
    State(ingestor): State<Ingestor>,
    identity: Option<Extension<KioskIdentity>>,
    body: Bytes,
) -> Response {
    let Some(Extension(KioskIdentity(kiosk))) = identity else {
        return (StatusCode::UNAUTHORIZED, "client certificate required").into_response();
    };
    match ingestor.ingest(&kiosk, body.to_vec()).await {
        Ok(ack) => match ack.to_bytes() {
            Ok(bytes) => cbor_response(StatusCode::OK, bytes),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        },
        Err(e) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = records::codec::to_vec(&e.rejection()).unwrap_or_default();
            cbor_response(status, body)
        }
    }
}

async fn health(State(ingestor): State<Ingestor>) -> Response {
    let ok = match ingestor.pool().get().await {
        Ok(conn) => conn.simple_query("SELECT 1").await.is_ok(),
        Err(_) => false,
    };
    if ok {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
    }
}

async fn metrics(State(ingestor): State<Ingestor>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ingestor.metrics().render(),
    )
        .into_response()
}

/// The router (without TLS); exposed for in-process tests.
pub fn router(ingestor: Ingestor) -> Router {
    Router::new()
        .route("/v1/batches", post(post_batch))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .layer(DefaultBodyLimit::max(records::envelope::MAX_ENVELOPE_BYTES))
        .with_state(ingestor)
}

/// [`router`] plus the CA's routes when `ca` is given.
pub fn router_with_ca(ingestor: Ingestor, ca: Option<crate::ca::CaService>) -> Router {
    match ca {
        Some(ca) => router(ingestor).merge(crate::ca::routes(ca)),
        None => router(ingestor),
    }
}

/// A running server; dropping it does not stop it, call [`RunningServer::shutdown`].
pub struct RunningServer {
    /// Address of the mTLS listener.
    pub addr: SocketAddr,
    /// Address of the plain health/metrics listener, if any.
    pub metrics_addr: Option<SocketAddr>,
    /// Address of the enrollment listener, if any.
    pub enroll_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    connections: TaskTracker,
}

/// How long [`RunningServer::shutdown`] waits for requests in flight.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

impl RunningServer {
    /// Stop accepting connections, let every request in flight finish (its batch committed and
    /// its ack sent) while idle keep-alive connections close, and wait for that up to
    /// [`DRAIN_TIMEOUT`]. Returns whether every connection finished in time.
    pub async fn shutdown(self) -> bool {
        self.shutdown_within(DRAIN_TIMEOUT).await
    }

    /// [`RunningServer::shutdown`] with another bound on the drain.
    pub async fn shutdown_within(self, drain: std::time::Duration) -> bool {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.connections.close();
        let drained = tokio::time::timeout(drain, self.connections.wait())
            .await
            .is_ok();
        if !drained {
            tracing::warn!(
                connections = self.connections.len(),
                "requests still in flight after the drain period; dropping them (their batches were not acknowledged)"
            );
        }
        drained
    }

    /// Connections being served right now.
    pub fn open_connections(&self) -> usize {
        self.connections.len()
    }

    /// Wait until the server stops (it only stops via `shutdown` from elsewhere or on error).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// Start the mTLS listener on `addr` (port 0 for any) and optionally a plain listener for
/// `/health` and `/metrics`.
pub async fn start(
    ingestor: Ingestor,
    tls: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningServer, ServerError> {
    start_with_ca(ingestor, None, tls, addr, metrics_addr).await
}

/// [`start`], also serving the CA (EST and status routes) to authenticated kiosks when `ca` is
/// given (the plain listener refuses them: it carries no client certificate).
pub async fn start_with_ca(
    ingestor: Ingestor,
    ca: Option<crate::ca::CaService>,
    tls: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningServer, ServerError> {
    start_services(ingestor, ca, None, tls, addr, metrics_addr).await
}

/// The enrollment listener of [`start_services`].
pub struct EnrollListener {
    /// The service.
    pub service: crate::enroll::EnrollService,
    /// Where to listen (port 0 for any).
    pub addr: SocketAddr,
    /// TLS without client authentication ([`crate::tls::enroll_server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
}

/// [`start_with_ca`], plus the enrollment listener when `enroll` is given.
pub async fn start_services(
    ingestor: Ingestor,
    ca: Option<crate::ca::CaService>,
    enroll: Option<EnrollListener>,
    tls: Arc<rustls::ServerConfig>,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
) -> Result<RunningServer, ServerError> {
    let (stop, stop_rx) = watch::channel(false);
    let pool = ingestor.pool().clone();
    let app = router_with_ca(ingestor, ca);
    let listener = bind(addr).await?;
    let local = listener
        .local_addr()
        .map_err(|source| ServerError::Bind { addr, source })?;
    let connections = TaskTracker::new();
    let mut tasks = vec![tokio::spawn(accept_tls(
        listener,
        tokio_rustls::TlsAcceptor::from(tls),
        app.clone(),
        pool,
        stop_rx.clone(),
        connections.clone(),
    ))];
    let mut metrics_local = None;
    if let Some(maddr) = metrics_addr {
        let ml = bind(maddr).await?;
        metrics_local = ml.local_addr().ok();
        tasks.push(tokio::spawn(accept_plain(
            ml,
            app,
            stop_rx.clone(),
            connections.clone(),
        )));
    }
    let mut enroll_local = None;
    if let Some(enroll) = enroll {
        let el = bind(enroll.addr).await?;
        enroll_local = el.local_addr().ok();
        tasks.push(tokio::spawn(accept_enroll(
            el,
            tokio_rustls::TlsAcceptor::from(enroll.tls),
            crate::enroll::router(enroll.service),
            stop_rx,
            connections.clone(),
        )));
    }
    tracing::info!(%local, metrics = ?metrics_local, enroll = ?enroll_local, "hq-ingest listening");
    Ok(RunningServer {
        addr: local,
        metrics_addr: metrics_local,
        enroll_addr: enroll_local,
        stop,
        tasks,
        connections,
    })
}

/// The next TCP connection, or `None` once `stop` fires (a failed accept is logged and
/// skipped).
async fn next_connection(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = stop.changed() => return None,
            accepted = listener.accept() => match accepted {
                Ok(a) => return Some(a),
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    pool: deadpool_postgres::Pool,
    mut stop: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    loop {
        let Some((tcp, peer)) = next_connection(&listener, &mut stop).await else {
            return;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let pool = pool.clone();
        let conn_stop = stop.clone();
        connections.spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "TLS handshake rejected");
                    return;
                }
            };
            let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            let identity = leaf.and_then(crate::tls::common_name);
            let Some(kiosk) = identity else {
                tracing::warn!(%peer, "client certificate without common name rejected");
                return;
            };
            // A kiosk revoked at HQ is dropped even before its certificate reaches the CRL.
            // A database failure admits the connection: every route behind it needs the
            // database too, and refuses without it.
            let serial = leaf.and_then(crate::tls::serial_hex).unwrap_or_default();
            match crate::kiosk_revocation::admit(&pool, &kiosk, &serial).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(%peer, kiosk, "revoked kiosk refused");
                    return;
                }
                Err(e) => tracing::warn!(%peer, error = %e, "kiosk revocation not checked"),
            }
            serve(
                TokioIo::new(tls),
                app,
                Some(KioskIdentity(kiosk)),
                conn_stop,
            )
            .await;
        });
    }
}

/// The enrollment listener: TLS without client certificates, the enrollment route only (its
/// router has no other), no kiosk identity on its requests.
async fn accept_enroll(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    loop {
        let Some((tcp, peer)) = next_connection(&listener, &mut stop).await else {
            return;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let conn_stop = stop.clone();
        connections.spawn(async move {
            let tls =
                match tokio::time::timeout(ENROLL_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "enrollment TLS handshake rejected");
                        return;
                    }
                    Err(_) => return,
                };
            serve(TokioIo::new(tls), app, None, conn_stop).await;
        });
    }
}

/// An unauthenticated peer gets this long to finish its handshake.
const ENROLL_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

async fn accept_plain(
    listener: TcpListener,
    app: Router,
    mut stop: watch::Receiver<bool>,
    connections: TaskTracker,
) {
    // Only health and metrics: the batch route refuses requests without an identity.
    loop {
        let (tcp, _) = tokio::select! {
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let app = app.clone();
        connections.spawn(serve(TokioIo::new(tcp), app, None, stop.clone()));
    }
}

/// Serve one connection until it ends; once `stop` turns true the connection finishes the
/// request in flight, if any, and closes.
async fn serve<IO>(
    io: IO,
    app: Router,
    identity: Option<KioskIdentity>,
    mut stop: watch::Receiver<bool>,
) where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if let Some(id) = &identity {
                req.extensions_mut().insert(id.clone());
            }
            let mut app = app.clone();
            async move { app.call(req).await }
        });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stopping = async move {
        // The borrow it returns is not kept across the drain below.
        let _ = stop.wait_for(|stopping| *stopping).await.is_ok();
    };
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stopping => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with error");
    }
}
