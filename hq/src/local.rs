//! A complete HQ in-process for the daemon's "local HQ" demo mode and end-to-end tests: a
//! throwaway PostgreSQL cluster, a demo PKI, migrations and the mTLS service on loopback, with
//! the demo CA ([`crate::ca`], P-256 issuing key in the PKI directory) enabled.

use std::path::Path;
use std::sync::Arc;

use records::{PublicVerifier, RecipientPublicKeys};

use crate::dev_pki::{self, DevPki};
use crate::ingest::{Ingestor, SystemClock};
use crate::pg_cluster::TempCluster;
use crate::server::RunningServer;
use crate::{db, keys, metrics, server, tls};

/// Failure to start the local HQ.
#[derive(Debug, thiserror::Error)]
pub enum LocalHqError {
    /// PostgreSQL cluster.
    #[error(transparent)]
    Cluster(#[from] crate::pg_cluster::ClusterError),
    /// Database.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// PKI.
    #[error(transparent)]
    Pki(#[from] dev_pki::DevPkiError),
    /// Key files.
    #[error(transparent)]
    Keys(#[from] keys::KeyFileError),
    /// TLS.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// Server.
    #[error(transparent)]
    Server(#[from] server::ServerError),
    /// The CA.
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    /// Reading a PKI file.
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
}

impl LocalHqError {
    /// One line for the operator of the kiosk that started this local HQ.
    pub fn one_line(&self) -> String {
        match self {
            LocalHqError::Cluster(c) => format!("PostgreSQL: {}", c.one_line()),
            other => other.to_string().replace('\n', "; "),
        }
    }
}

/// A running local HQ. Dropping it stops PostgreSQL; call [`LocalHq::shutdown`] to stop the
/// listeners first.
pub struct LocalHq {
    /// Demo PKI files (CA to pin, kiosk client cert/key, HQ public keys).
    pub pki: DevPki,
    /// mTLS listener (`https://localhost:<port>`; server name `localhost`).
    pub server: RunningServer,
    /// Connection string of the HQ database.
    pub database_url: String,
    /// HQ's record-encryption public keys (what the kiosk seals to).
    pub recipient_public: RecipientPublicKeys,
    /// HQ's witness key (verifies cosignatures in acks; key name [`WITNESS_NAME`]).
    pub witness: PublicVerifier,
    cluster: TempCluster,
}

/// Key name in HQ's cosignature lines.
pub const WITNESS_NAME: &str = "hq-witness";

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::pg_cluster::ClusterError> + Send + 'static,
) -> Result<T, LocalHqError> {
    Ok(tokio::task::spawn_blocking(f).await.map_err(|e| {
        crate::pg_cluster::ClusterError::Command {
            command: "start".into(),
            detail: e.to_string(),
        }
    })??)
}

/// Connection string of database `name`, created if missing.
async fn ensure_database(cluster: &TempCluster, name: &str) -> Result<String, LocalHqError> {
    let (client, conn) = tokio_postgres::connect(&cluster.url("postgres"), tokio_postgres::NoTls)
        .await
        .map_err(db::DbError::from)?;
    let driver = tokio::spawn(conn);
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .map_err(db::DbError::from)?
        .is_some();
    drop(client);
    let _ = driver.await;
    if exists {
        Ok(cluster.url(name))
    } else {
        Ok(cluster.create_database(name).await?)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, LocalHqError> {
    std::fs::read(path).map_err(|e| LocalHqError::Io(path.display().to_string(), e))
}

impl LocalHq {
    /// Start everything; PKI files go to `pki_dir`. The server listens on `127.0.0.1:0` plus a
    /// plain `/health` + `/metrics` listener. The database is thrown away on drop.
    pub async fn start(pki_dir: &Path) -> Result<Self, LocalHqError> {
        let cluster = blocking(TempCluster::start).await?;
        let database_url = cluster.create_database("hq").await?;
        let pki = dev_pki::generate(pki_dir)?;
        Self::serve(cluster, database_url, pki, dev_pki::IssuingAlgorithm::P256).await
    }

    /// The daemon's local HQ: like [`LocalHq::start`] but everything is kept in `dir`
    /// (`pki/`, `pg/`) and found again on the next start, so records, the kiosk's batch chain
    /// and HQ's keys survive restarts.
    pub async fn open(dir: &Path) -> Result<Self, LocalHqError> {
        Self::open_issuing(dir, dev_pki::IssuingAlgorithm::P256).await
    }

    /// [`LocalHq::open`] with the issuing CA of `algorithm` (an SM2 kiosk gets an SM2 CA).
    pub async fn open_issuing(
        dir: &Path,
        algorithm: dev_pki::IssuingAlgorithm,
    ) -> Result<Self, LocalHqError> {
        let pg_dir = dir.join("pg");
        let cluster = blocking(move || TempCluster::open_kept(&pg_dir)).await?;
        let database_url = ensure_database(&cluster, "hq").await?;
        let pki = dev_pki::load_or_generate(&dir.join("pki"))?;
        Self::serve(cluster, database_url, pki, algorithm).await
    }

    async fn serve(
        cluster: TempCluster,
        database_url: String,
        pki: DevPki,
        algorithm: dev_pki::IssuingAlgorithm,
    ) -> Result<Self, LocalHqError> {
        let (mut client, conn) = tokio_postgres::connect(&database_url, tokio_postgres::NoTls)
            .await
            .map_err(db::DbError::from)?;
        let driver = tokio::spawn(conn);
        db::migrate(&mut client).await?;
        drop(client);
        let _ = driver.await;

        let recipient = keys::load_soft_recipient(&pki.record_key)?;
        let recipient_public = recipient.public_keys();
        let witness_key = keys::load_witness_key(&pki.witness_key)?;
        let witness = witness_key.verifier();
        let ingestor = Ingestor::new(
            db::pool(&database_url, 8)?,
            Arc::new(recipient),
            Arc::new(witness_key),
            WITNESS_NAME.into(),
            Arc::new(SystemClock),
            Arc::new(metrics::Metrics::new()),
        );
        let tls_config = tls::server_config(
            &read(&pki.ca_cert)?,
            &read(&pki.server_cert)?,
            &read(&pki.server_key)?,
        )?;
        let (ca_cert, ca_key) = pki.issuing_ca_for(algorithm)?;
        let ca = crate::ca::CaService::new(
            crate::ca::Issuer::load(&ca_cert, &ca_key, crate::ca::DEFAULT_VALIDITY)?,
            ingestor.pool().clone(),
        )?;
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let server =
            server::start_with_ca(ingestor, Some(ca), tls_config, loopback, Some(loopback)).await?;
        Ok(Self {
            pki,
            server,
            database_url,
            recipient_public,
            witness,
            cluster,
        })
    }

    /// Register a kiosk's envelope-signing key (kiosk id = its client certificate CN).
    pub async fn register_kiosk(
        &self,
        kiosk_id: &str,
        key: &PublicVerifier,
    ) -> Result<(), LocalHqError> {
        let (client, conn) = tokio_postgres::connect(&self.database_url, tokio_postgres::NoTls)
            .await
            .map_err(db::DbError::from)?;
        let driver = tokio::spawn(conn);
        db::register_kiosk(&client, kiosk_id, key).await?;
        drop(client);
        let _ = driver.await;
        Ok(())
    }

    /// Stop the listeners, then PostgreSQL.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
        drop(self.cluster);
    }
}
