//! Simulated devices behind real pseudo-terminals.
//!
//! The simulator runs on the master side in its own thread; production code opens the
//! slave path like any `/dev/ttyUSB0`. The thread paces its output at the device's baud
//! rate (10 bits per byte, 8N1) so transfer times are realistic, and counts the host's
//! bytes as arriving at that rate too. It reads the line speed the driver set (with
//! `openpty`, the master sees the slave's termios) and ignores input sent at the wrong
//! speed, as a real UART would fail to frame it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use firmware_interfaces::sam::SamBaud;
use firmware_interfaces::sim::{Ef01Simulator, SamSimulator, SimCard, SimFinger};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use zeroize::Zeroizing;

/// A device simulator that can be run behind a pty.
pub trait PacedSimulator: Send + 'static {
    fn on_bytes(&mut self, input: &[u8]) -> Vec<u8>;
    /// The device's UART speed in bits per second.
    fn baud(&self) -> u32;
}

impl PacedSimulator for SamSimulator {
    fn on_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        SamSimulator::on_bytes(self, input)
    }

    fn baud(&self) -> u32 {
        SamSimulator::baud(self).bits_per_second()
    }
}

impl PacedSimulator for Ef01Simulator {
    fn on_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        Ef01Simulator::on_bytes(self, input)
    }

    fn baud(&self) -> u32 {
        Ef01Simulator::baud(self)
    }
}

/// Counters of what crossed the simulated link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub bytes_from_host: u64,
    pub bytes_to_host: u64,
}

struct Shared<S> {
    sim: Mutex<S>,
    stats: Mutex<LinkStats>,
    stop: AtomicBool,
}

/// A running simulator on a pty. Dropping it stops the thread and closes the pty.
pub struct PtyDevice<S: PacedSimulator> {
    path: PathBuf,
    shared: Arc<Shared<S>>,
    thread: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl<S: PacedSimulator> PtyDevice<S> {
    /// Opens a pty pair and starts the simulator on the master.
    pub fn spawn(sim: S) -> io::Result<Self> {
        let pty = nix::pty::openpty(None, None).map_err(io::Error::from)?;
        let path = nix::unistd::ttyname(&pty.slave).map_err(io::Error::from)?;
        make_raw(&pty.slave)?;
        let flags = nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_GETFL)
            .map_err(io::Error::from)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&pty.master, nix::fcntl::FcntlArg::F_SETFL(flags))
            .map_err(io::Error::from)?;
        let shared = Arc::new(Shared {
            sim: Mutex::new(sim),
            stats: Mutex::new(LinkStats::default()),
            stop: AtomicBool::new(false),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("pty-sim".into())
            .spawn(move || run(pty.master, pty.slave, &thread_shared))?;
        Ok(Self {
            path,
            shared,
            thread: Some(thread),
        })
    }

    /// The slave device path to hand to the driver (e.g. `/dev/pts/3`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the simulator (inject faults, change state).
    pub fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut lock(&self.shared.sim))
    }

    pub fn stats(&self) -> LinkStats {
        *lock(&self.shared.stats)
    }

    pub fn reset_stats(&self) {
        *lock(&self.shared.stats) = LinkStats::default();
    }
}

impl<S: PacedSimulator> Drop for PtyDevice<S> {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn make_raw(fd: &OwnedFd) -> io::Result<()> {
    use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
    let mut t = tcgetattr(fd).map_err(io::Error::from)?;
    cfmakeraw(&mut t);
    tcsetattr(fd, SetArg::TCSANOW, &t).map_err(io::Error::from)
}

/// The output speed currently set on the line (exact, via `TCGETS2`).
fn line_baud(fd: &OwnedFd) -> Option<u32> {
    let mut t2: nix::libc::termios2 = unsafe { std::mem::zeroed() };
    // SAFETY: TCGETS2 writes a `termios2` into the pointer we pass, which is valid and sized.
    let rc = unsafe { nix::libc::ioctl(fd.as_raw_fd(), nix::libc::TCGETS2, &mut t2) };
    (rc == 0).then_some(t2.c_ospeed)
}

fn byte_time(n: usize, baud: u32) -> Duration {
    Duration::from_nanos((n as u64) * 10 * 1_000_000_000 / u64::from(baud.max(1)))
}

fn run<S: PacedSimulator>(master: OwnedFd, slave_keepalive: OwnedFd, shared: &Shared<S>) {
    // Holding a slave fd keeps the master readable (no EIO/HUP) between driver sessions.
    let _keep = slave_keepalive;
    let mut buf = Zeroizing::new(vec![0u8; 4096]);
    let mut rx_done = Instant::now();
    let mut tx_free = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(20u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return,
        }
        let n = match nix::unistd::read(&master, &mut buf) {
            Ok(0) | Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EIO) => continue,
            Ok(n) => n,
            Err(_) => return,
        };
        let input = buf.get(..n).unwrap_or_default();
        let now = Instant::now();
        let (out, baud) = {
            let mut sim = lock(&shared.sim);
            let baud = sim.baud();
            // The host's bytes arrive at the device's speed.
            rx_done = rx_done.max(now) + byte_time(n, baud);
            if line_baud(&master).is_some_and(|line| line != baud) {
                continue; // wrong speed: the UART cannot frame these bytes
            }
            (Zeroizing::new(sim.on_bytes(input)), baud)
        };
        lock(&shared.stats).bytes_from_host += n as u64;
        if out.is_empty() {
            continue;
        }
        let start = rx_done.max(tx_free);
        if !paced_write(&master, &out, baud, start, &shared.stop) {
            return;
        }
        tx_free = start + byte_time(out.len(), baud);
        lock(&shared.stats).bytes_to_host += out.len() as u64;
    }
}

/// Writes `out` so that no byte reaches the host before it would have on a real line.
fn paced_write(master: &OwnedFd, out: &[u8], baud: u32, start: Instant, stop: &AtomicBool) -> bool {
    const CHUNK: usize = 16;
    let mut sent = 0;
    for chunk in out.chunks(CHUNK) {
        let due = start + byte_time(sent + chunk.len(), baud);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut rest = chunk;
        while !rest.is_empty() {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            match nix::unistd::write(master, rest) {
                Ok(n) => rest = rest.get(n..).unwrap_or_default(),
                Err(nix::errno::Errno::EAGAIN) => {
                    let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(20u16));
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return false,
            }
        }
        sent += chunk.len();
    }
    true
}

/// A simulated ID-card reader on a pty.
pub type IdCardSim = PtyDevice<SamSimulator>;
/// A simulated EF01 fingerprint module on a pty.
pub type FingerprintSim = PtyDevice<Ef01Simulator>;

/// Starts a SAM reader simulator (no card on it) at `baud` behind a pty.
pub fn spawn_idcard_pty(baud: SamBaud) -> io::Result<IdCardSim> {
    let mut sim = SamSimulator::new();
    sim.set_baud(baud);
    PtyDevice::spawn(sim)
}

/// Starts an EF01 module simulator with `capacity` slots at 9600 × `baud_multiplier`.
pub fn spawn_fingerprint_pty(capacity: u16, baud_multiplier: u16) -> io::Result<FingerprintSim> {
    let mut sim = Ef01Simulator::new(capacity);
    sim.set_baud_multiplier(baud_multiplier);
    PtyDevice::spawn(sim)
}

impl IdCardSim {
    /// Places a card (a new presentation).
    pub fn present_card(&self, card: SimCard) {
        self.with(|s| s.present_card(card));
    }

    pub fn remove_card(&self) {
        self.with(|s| s.remove_card());
    }

    pub fn set_baud(&self, baud: SamBaud) {
        self.with(|s| s.set_baud(baud));
    }
}

impl FingerprintSim {
    pub fn place_finger(&self, finger: SimFinger) {
        self.with(|s| s.place_finger(finger));
    }

    pub fn remove_finger(&self) {
        self.with(|s| s.remove_finger());
    }

    pub fn set_baud_multiplier(&self, n: u16) {
        self.with(|s| s.set_baud_multiplier(n));
    }
}

/// Runs `sim` behind an in-memory pipe (no pacing, no baud): the returned end is a
/// [`crate::link::Link`] for engines under test. The task ends when the pipe is closed.
pub fn spawn_in_memory<S: PacedSimulator>(sim: Arc<Mutex<S>>) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, mut device) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let mut buf = Zeroizing::new(vec![0u8; 4096]);
        loop {
            let n = match device.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let out = Zeroizing::new(lock(&sim).on_bytes(buf.get(..n).unwrap_or_default()));
            if device.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    host
}
