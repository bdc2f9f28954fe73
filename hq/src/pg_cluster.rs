//! A throwaway PostgreSQL cluster under a temp dir (`initdb` + `pg_ctl`), for tests, benches and
//! the daemon's local-HQ demo. Listens only on a Unix socket inside its own directory (no port
//! conflicts). When running as root it runs the server as the `postgres` user (PostgreSQL
//! refuses root) via `runuser`. Stopped on drop; a watchdog process also stops it (and removes a
//! temp directory) when the owning process exits, even by SIGKILL (so a cluster never leaks).
//! Every program runs directly (`Command` with separate arguments, never a shell line).
//! [`TempCluster::open_kept`] is the same server over a directory that outlives the process
//! (the daemon's local HQ keeps its records across restarts).
//!
//! A kept directory the `postgres` user cannot reach (a data directory below root's `0700`
//! home, say) is not made reachable by loosening the permissions of someone's directories:
//! the cluster then lives in the `postgres` user's own home, where Debian keeps clusters
//! (`/var/lib/postgresql/kioskd-local-hq/<instance>`, `0700 postgres`), and the kept
//! directory holds a `relocated` file naming it. An instance whose kept directory is gone is
//! removed the next time any local HQ starts.

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
    /// The kept directory cannot be created.
    #[error(
        "cannot create the cluster directory {path}: {source} (fix: move away what is in the way, or choose another data directory)"
    )]
    Dir {
        /// The directory.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Neither the kept directory nor a relocated one can be used by the server's user.
    #[error(
        "the PostgreSQL server (user {user}) cannot use {dir}: {detail} (fix: choose a data directory the {user} user can reach, e.g. below /var/lib or /srv, or run kioskd as an unprivileged user)"
    )]
    Unreachable {
        /// The server's user.
        user: String,
        /// The directory.
        dir: String,
        /// Why.
        detail: String,
    },
}

impl ClusterError {
    /// One line for an operator: the command's first error line rather than its whole output.
    pub fn one_line(&self) -> String {
        match self {
            ClusterError::Command { command, detail } => {
                let first = detail
                    .lines()
                    .map(str::trim)
                    .find(|l| {
                        let l = l.to_ascii_lowercase();
                        l.contains("error") || l.contains("fatal") || l.contains("could not")
                    })
                    .or_else(|| detail.lines().map(str::trim).find(|l| !l.is_empty()))
                    .unwrap_or("no output");
                if detail.contains("Permission denied") {
                    format!(
                        "{command} failed: {first} (fix: give the {SERVER_USER} user access to the data directory, or choose one below /var/lib or /srv)"
                    )
                } else {
                    format!("{command} failed: {first}")
                }
            }
            other => other.to_string(),
        }
    }
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

fn postgres_ids() -> Result<(u32, u32), ClusterError> {
    user_ids(SERVER_USER).ok_or_else(|| ClusterError::Command {
        command: format!("id {SERVER_USER}"),
        detail: format!(
            "running as root needs a `{SERVER_USER}` user to run the server (fix: install the postgresql package)"
        ),
    })
}

/// The user the server runs as when this process is root.
const SERVER_USER: &str = "postgres";

/// Whether `user` can create files in `dir` (every parent traversable, `dir` writable).
fn reachable_by(user: &str, dir: &Path) -> bool {
    Command::new("runuser")
        .args(["-u", user, "--", "test", "-w"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Where a kept cluster lives when its own directory is out of the server user's reach.
mod relocation {
    use std::path::{Path, PathBuf};

    use super::{ClusterError, SERVER_USER, reachable_by};

    /// In the kept directory: the path of the relocated cluster.
    const MARKER: &str = "relocated";
    /// In the relocated cluster: the kept directory that owns it.
    const OWNER: &str = "owner";

    fn home_of(user: &str) -> Option<PathBuf> {
        let out = std::process::Command::new("getent")
            .args(["passwd", user])
            .output()
            .ok()?;
        let line = String::from_utf8_lossy(&out.stdout);
        let home = line.trim().split(':').nth(5)?;
        (!home.is_empty()).then(|| PathBuf::from(home))
    }

    /// The directory to run the cluster in for kept directory `dir` (already absolute).
    pub(super) fn effective_dir(dir: &Path, uid: u32, gid: u32) -> Result<PathBuf, ClusterError> {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
        let marker = dir.join(MARKER);
        if let Ok(text) = std::fs::read_to_string(&marker) {
            let target = PathBuf::from(text.trim());
            if target.join(OWNER).is_file() {
                return Ok(target);
            }
        }
        if reachable_by(SERVER_USER, dir) {
            return Ok(dir.to_path_buf());
        }
        let unreachable = |detail: String| ClusterError::Unreachable {
            user: SERVER_USER.into(),
            dir: dir.display().to_string(),
            detail,
        };
        let home = home_of(SERVER_USER).filter(|h| h.is_dir()).ok_or_else(|| {
            unreachable(
                "a parent directory is closed to it and it has no home directory to use instead"
                    .to_string(),
            )
        })?;
        let base = home.join("kioskd-local-hq");
        std::fs::create_dir_all(&base)?;
        std::os::unix::fs::chown(&base, Some(uid), Some(gid))?;
        remove_orphans(&base);
        let mut id = [0u8; 12];
        getrandom::fill(&mut id).map_err(|e| std::io::Error::other(e.to_string()))?;
        let target = base.join(hex::encode(id));
        std::fs::create_dir(&target)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))?;
        }
        std::fs::write(target.join(OWNER), format!("{}\n", dir.display()))?;
        std::os::unix::fs::chown(&target, Some(uid), Some(gid))?;
        if !reachable_by(SERVER_USER, &target) {
            let _ = std::fs::remove_dir_all(&target);
            return Err(unreachable(format!(
                "neither it nor {} is open to that user",
                base.display()
            )));
        }
        std::fs::write(&marker, format!("{}\n", target.display()))?;
        tracing::info!(
            kept = %dir.display(),
            cluster = %target.display(),
            "the PostgreSQL user cannot reach the data directory; the local HQ's cluster lives in its home instead"
        );
        Ok(target)
    }

    /// Instances whose kept directory no longer names them (deleted data directories).
    fn remove_orphans(base: &Path) {
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let instance = entry.path();
            let Ok(owner) = std::fs::read_to_string(instance.join(OWNER)) else {
                continue;
            };
            let owner = PathBuf::from(owner.trim());
            let claimed = std::fs::read_to_string(owner.join(MARKER))
                .is_ok_and(|t| Path::new(t.trim()) == instance);
            if claimed {
                continue;
            }
            // Stop a server still running there (its owner was deleted under it), then remove.
            if let Some(bin) = super::find_bin_dir() {
                let _ = std::process::Command::new("runuser")
                    .args(["-u", SERVER_USER, "--"])
                    .arg(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(instance.join("data"))
                    .args(["-m", "immediate", "stop"])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .status();
            }
            tracing::info!(cluster = %instance.display(), "removing the cluster of a deleted local HQ");
            let _ = std::fs::remove_dir_all(&instance);
        }
    }
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
    /// When running as root and the `postgres` user cannot reach `dir`, the cluster lives in
    /// that user's home instead (see the module documentation).
    pub fn open_kept(dir: &Path) -> Result<Self, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Dir {
            path: dir.display().to_string(),
            source,
        })?;
        let dir = std::path::absolute(dir)?;
        let effective = if is_root() {
            let (uid, gid) = postgres_ids()?;
            relocation::effective_dir(&dir, uid, gid)?
        } else {
            dir
        };
        Self::init_and_start(ClusterDir::Kept(effective), true)
    }

    /// The directory holding the data, the socket and the server log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn init_and_start(dir: ClusterDir, durable: bool) -> Result<Self, ClusterError> {
        let bin = find_bin_dir().ok_or(ClusterError::NoBinaries)?;
        let run_as = if is_root() {
            let (uid, gid) = postgres_ids()?;
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
            // Left running by an owner that was killed before its watchdog noticed (which may
            // stop it meanwhile: then there is nothing left to stop, and starting says so if
            // a server still runs).
            let _ = cluster.stop();
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

    /// The pid of the running postmaster (first line of `postmaster.pid`).
    pub fn postmaster_pid(&self) -> Option<i32> {
        let text =
            std::fs::read_to_string(Path::new(&self.data_dir()).join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
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
        let mut stop = Vec::new();
        if let Some(user) = &self.run_as {
            stop.extend(["runuser".into(), "-u".into(), user.clone(), "--".into()]);
        }
        stop.extend([
            self.bin.join("pg_ctl").display().to_string(),
            "-D".into(),
            self.data_dir(),
            "-m".into(),
            if remove_dir { "immediate" } else { "fast" }.into(),
            "stop".into(),
        ]);
        let remove = remove_dir.then(|| self.dir.path().to_path_buf());
        // Only the server this owner started: a new owner that took the kept cluster over after
        // a crash (and restarted it) must not lose it when the old owner's watchdog wakes up.
        let pid_file = Path::new(&self.data_dir()).join("postmaster.pid");
        let ours = self.postmaster_pid().map(|pid| (pid_file, pid));
        if let Err(e) = watchdog::spawn(&stop, remove.as_deref(), ours) {
            tracing::warn!(error = %e, "no watchdog for the PostgreSQL cluster: it is stopped on drop only");
        }
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

/// A process that outlives this one by a moment: it waits until this process is gone, then runs
/// `pg_ctl stop` and, for a temporary cluster, removes its directory. It is a fork of this
/// process that only makes async-signal-safe calls (everything is prepared before the fork)
/// and then `exec`s the programs directly: no shell, so no path is ever parsed as a command.
mod watchdog {
    use std::ffi::CString;
    use std::path::{Path, PathBuf};

    use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, signal, sigprocmask};
    use nix::sys::wait::waitpid;
    use nix::unistd::{ForkResult, fork, getppid, setsid};

    fn program(name: &str) -> Option<PathBuf> {
        let p = Path::new(name);
        if p.is_absolute() {
            return p.is_file().then(|| p.to_path_buf());
        }
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()))
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    }

    fn c(s: &str) -> std::io::Result<CString> {
        CString::new(s).map_err(std::io::Error::other)
    }

    /// A program and its arguments, ready for `execv` without allocating.
    struct Exec {
        path: CString,
        _args: Vec<CString>,
        pointers: Vec<*const nix::libc::c_char>,
    }

    impl Exec {
        /// `execv`; returns only on failure.
        ///
        /// # Safety
        /// Async-signal-safe: no allocation.
        unsafe fn exec(&self) {
            unsafe { nix::libc::execv(self.path.as_ptr(), self.pointers.as_ptr()) };
        }
    }

    fn argv(args: &[String]) -> std::io::Result<Exec> {
        let exe = program(&args[0])
            .ok_or_else(|| std::io::Error::other(format!("{} not found", args[0])))?;
        let path = c(&exe.display().to_string())?;
        let args: Vec<CString> = args.iter().map(|a| c(a)).collect::<Result<_, _>>()?;
        let mut pointers: Vec<_> = args.iter().map(|a| a.as_ptr()).collect();
        pointers.push(std::ptr::null());
        Ok(Exec {
            path,
            _args: args,
            pointers,
        })
    }

    /// Highest file descriptor open now (the child closes everything above stderr up to it).
    fn max_fd() -> i32 {
        std::fs::read_dir("/proc/self/fd")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .max()
            .unwrap_or(1024)
    }

    /// Reads the first line of `path` as a pid, without allocating (the forked child).
    ///
    /// # Safety
    /// Async-signal-safe: open, read, close on a buffer on the stack.
    unsafe fn pid_in(path: &CString) -> Option<i32> {
        let fd = unsafe { nix::libc::open(path.as_ptr(), nix::libc::O_RDONLY) };
        if fd < 0 {
            return None;
        }
        let mut buf = [0u8; 32];
        let n = unsafe { nix::libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        unsafe { nix::libc::close(fd) };
        if n <= 0 {
            return None;
        }
        let mut pid: i32 = 0;
        let mut digits = 0;
        for &b in &buf[..n as usize] {
            if !b.is_ascii_digit() {
                break;
            }
            pid = pid.checked_mul(10)?.checked_add(i32::from(b - b'0'))?;
            digits += 1;
        }
        (digits > 0).then_some(pid)
    }

    /// `ours`: the server's pid file and the pid this owner started; the server is stopped only
    /// if that pid still holds it.
    pub(super) fn spawn(
        stop: &[String],
        remove: Option<&Path>,
        ours: Option<(PathBuf, i32)>,
    ) -> std::io::Result<()> {
        let ours = match ours {
            Some((file, pid)) => Some((c(&file.display().to_string())?, pid)),
            None => None,
        };
        let stop = argv(stop)?;
        let rm = match remove {
            Some(dir) => Some(argv(&[
                "rm".into(),
                "-rf".into(),
                "--".into(),
                dir.display().to_string(),
            ])?),
            None => None,
        };
        let dev_null = c("/dev/null")?;
        let owner = nix::unistd::getpid();
        let last_fd = max_fd() + 64;
        // SAFETY: the child only makes async-signal-safe calls (signal, sigprocmask, open,
        // dup2, close, setsid, getppid, nanosleep, fork, waitpid, execv, _exit) on data
        // prepared above, before the fork.
        match unsafe { fork() }.map_err(std::io::Error::from)? {
            ForkResult::Parent { .. } => Ok(()),
            ForkResult::Child => unsafe {
                for sig in [
                    Signal::SIGTERM,
                    Signal::SIGINT,
                    Signal::SIGHUP,
                    Signal::SIGQUIT,
                    Signal::SIGPIPE,
                ] {
                    let _ = signal(sig, SigHandler::SigDfl);
                }
                let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
                let null = nix::libc::open(dev_null.as_ptr(), nix::libc::O_RDWR);
                for fd in 0..3 {
                    nix::libc::dup2(null, fd);
                }
                for fd in 3..=last_fd {
                    nix::libc::close(fd);
                }
                // Its own session: a Ctrl-C or a kill of the owner's process group leaves it.
                let _ = setsid();
                let pause = nix::libc::timespec {
                    tv_sec: 1,
                    tv_nsec: 0,
                };
                while getppid() == owner {
                    nix::libc::nanosleep(&pause, std::ptr::null_mut());
                }
                if let Some((file, pid)) = &ours {
                    if pid_in(file) != Some(*pid) {
                        // Stopped already, or another owner's server now: not ours to stop.
                        nix::libc::_exit(0);
                    }
                }
                match fork() {
                    Ok(ForkResult::Child) => {
                        stop.exec();
                        nix::libc::_exit(127);
                    }
                    Ok(ForkResult::Parent { child }) => {
                        let _ = waitpid(child, None);
                    }
                    Err(_) => {}
                }
                if let Some(rm) = &rm {
                    rm.exec();
                }
                nix::libc::_exit(0);
            },
        }
    }
}
