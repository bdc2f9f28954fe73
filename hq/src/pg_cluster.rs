//! A throwaway PostgreSQL cluster under a temp dir (`initdb` + `pg_ctl`), for tests, benches and
//! the daemon's local-HQ demo. Listens only on a Unix socket inside its own directory (no port
//! conflicts). When running as root it runs the server as the `postgres` user (PostgreSQL
//! refuses root) via `runuser`. Stopped on drop; a watchdog process also stops it (and removes a
//! temp directory) when the owning process exits, even by SIGKILL (so a cluster never leaks).
//! [`TempCluster::open_kept`] is the same server over a directory that outlives the process
//! (the daemon's local HQ keeps its records across restarts).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Cluster start failure.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// PostgreSQL binaries not found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found: install postgresql or set PG_BIN_DIR"
    )]
    NoBinaries,
    /// A command failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// What ran.
        command: String,
        /// Output.
        detail: String,
    },
    /// Filesystem trouble.
    #[error("temp dir: {0}")]
    Io(#[from] std::io::Error),
}

/// A running throwaway cluster.
pub struct TempCluster {
    dir: ClusterDir,
    bin: PathBuf,
    run_as: Option<String>,
}

/// Where the cluster lives: removed with the process, or kept.
enum ClusterDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl ClusterDir {
    fn path(&self) -> &Path {
        match self {
            ClusterDir::Temp(t) => t.path(),
            ClusterDir::Kept(p) => p,
        }
    }
}

fn find_bin_dir() -> Option<PathBuf> {
    let has = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Some(d) = std::env::var_os("PG_BIN_DIR").map(PathBuf::from)
        && has(&d)
    {
        return Some(d);
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|d| has(d))
        .collect();
    versions.sort();
    if let Some(d) = versions.pop() {
        return Some(d);
    }
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .filter(|d| has(d))
                .collect::<Vec<_>>()
        })
        .and_then(|mut v| v.drain(..).next())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, user])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    Some((id("-u")?, id("-g")?))
}

impl TempCluster {
    /// initdb + start. `fsync=off` (throwaway data; a killed server still loses nothing that
    /// the OS page cache holds).
    pub fn start() -> Result<Self, ClusterError> {
        let dir = tempfile::Builder::new().prefix("hq-pg-").tempdir()?;
        Self::init_and_start(ClusterDir::Temp(dir), false)
    }

    /// A cluster in `dir` (created and initialised on first use, started again afterwards;
    /// `fsync` on). A server left running by a killed owner is stopped and started again.
    pub fn open_kept(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir)?;
        Self::init_and_start(ClusterDir::Kept(dir.to_owned()), true)
    }

    fn init_and_start(dir: ClusterDir, durable: bool) -> Result<Self, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::NoBinaries)?;
        let run_as = if is_root() {
            let (uid, gid) = user_ids("postgres").ok_or_else(|| ClusterError::Command {
                command: "id postgres".into(),
                detail: "running as root needs a `postgres` user to run the server".into(),
            })?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
            Some("postgres".to_owned())
        } else {
            None
        };
        let kept = matches!(dir, ClusterDir::Kept(_));
        let cluster = Self { dir, bin, run_as };
        let data = cluster.data_dir();
        let initialised = Path::new(&data).join("PG_VERSION").is_file();
        if !initialised {
            cluster.run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "--no-instructions",
                ],
            )?;
        } else if kept && cluster.run("pg_ctl", &["-D", &data, "status"]).is_ok() {
            // Left running by an owner that was killed before its watchdog noticed.
            cluster.stop()?;
        }
        cluster.start_server(durable)?;
        cluster.spawn_watchdog(!kept);
        Ok(cluster)
    }

    fn start_server(&self, durable: bool) -> Result<(), ClusterError> {
        let sync = if durable {
            ""
        } else {
            " -c fsync=off -c full_page_writes=off"
        };
        let opts = format!(
            "-c listen_addresses='' -k {}{sync} -c max_connections=200",
            self.socket_dir()
        );
        let log = self.dir.path().join("server.log").display().to_string();
        self.run(
            "pg_ctl",
            &[
                "-D",
                &self.data_dir(),
                "-o",
                &opts,
                "-l",
                &log,
                "-w",
                "start",
            ],
        )
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> Result<(), ClusterError> {
        let out = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        if out.status.success() {
            Ok(())
        } else {
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            Err(ClusterError::Command {
                command: program.to_owned(),
                detail: format!(
                    "{}{}{log}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    }

    /// Stops the server when this process exits, even without `Drop` (statics, panics, kill).
    fn spawn_watchdog(&self, remove_dir: bool) {
        let pg_ctl = self.bin.join("pg_ctl");
        let prefix = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- "),
            None => String::new(),
        };
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {prefix}'{pg}' -D '{data}' -m {mode} stop >/dev/null 2>&1; {cleanup}",
            pid = std::process::id(),
            pg = pg_ctl.display(),
            data = self.data_dir(),
            mode = if remove_dir { "immediate" } else { "fast" },
            cleanup = if remove_dir {
                format!("rm -rf '{}'", self.dir.path().display())
            } else {
                String::new()
            },
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// libpq connection string for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("host={} user=postgres dbname={database}", self.socket_dir())
    }

    /// Create a fresh database and return its connection string.
    pub async fn create_database(&self, name: &str) -> Result<String, crate::db::DbError> {
        let (client, conn) =
            tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await?;
        let driver = tokio::spawn(conn);
        let ident = name.replace('"', "");
        client
            .batch_execute(&format!("CREATE DATABASE \"{ident}\""))
            .await?;
        drop(client);
        let _ = driver.await;
        Ok(self.url(&ident))
    }

    /// Stop the server now (`-m immediate`: like a crash, for recovery tests; also used on drop).
    pub fn stop(&self) -> Result<(), ClusterError> {
        self.run(
            "pg_ctl",
            &["-D", &self.data_dir(), "-m", "immediate", "stop"],
        )
    }

    /// Start again after [`TempCluster::stop`].
    pub fn restart(&self) -> Result<(), ClusterError> {
        self.start_server(matches!(self.dir, ClusterDir::Kept(_)))
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
