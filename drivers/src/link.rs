//! Byte transports under the protocol engines: serial ports (tokio-serial, built without
//! libudev), TCP serial servers, in-memory pipes for tests; and connectors that (re)open them.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream an engine can talk over.
pub trait Link: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether the line speed is ours to set (serial ports); TCP serial servers and
    /// in-memory pipes have none, so engines skip baud probing on them.
    fn has_baud(&self) -> bool {
        false
    }

    /// Changes the line speed (ignored by links without one).
    fn set_baud(&mut self, baud: u32) -> io::Result<()> {
        let _ = baud;
        Ok(())
    }
}

impl Link for tokio_serial::SerialStream {
    fn has_baud(&self) -> bool {
        true
    }

    fn set_baud(&mut self, baud: u32) -> io::Result<()> {
        use tokio_serial::SerialPort;
        self.set_baud_rate(baud).map_err(io::Error::from)
    }
}

impl Link for tokio::net::TcpStream {}

impl Link for tokio::io::DuplexStream {}

/// Opens a [`Link`] to a device; called again after the device went away.
pub trait Connector: Send + Sync + 'static {
    type Link: Link;

    fn connect(&self) -> impl Future<Output = io::Result<Self::Link>> + Send;

    /// Where the device is, for messages (`serial port /dev/ttyUSB0`).
    fn describe(&self) -> String;
}

/// A serial port by path, opened 8N1 without flow control at `initial_baud`.
#[derive(Debug, Clone)]
pub struct SerialConnector {
    pub path: PathBuf,
    pub initial_baud: u32,
}

impl SerialConnector {
    pub fn new(path: impl Into<PathBuf>, initial_baud: u32) -> Self {
        Self {
            path: path.into(),
            initial_baud,
        }
    }
}

impl Connector for SerialConnector {
    type Link = tokio_serial::SerialStream;

    async fn connect(&self) -> io::Result<Self::Link> {
        let path = self.path.to_string_lossy().into_owned();
        let builder = tokio_serial::new(path, self.initial_baud)
            .data_bits(tokio_serial::DataBits::Eight)
            .parity(tokio_serial::Parity::None)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .timeout(Duration::from_millis(10));
        tokio_serial::SerialStream::open(&builder).map_err(io::Error::from)
    }

    fn describe(&self) -> String {
        format!("serial port {}", self.path.display())
    }
}

/// A "transparent" serial server reached over TCP (`host:port`).
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub address: String,
    pub connect_timeout: Duration,
}

impl TcpConnector {
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            connect_timeout: Duration::from_secs(3),
        }
    }
}

impl Connector for TcpConnector {
    type Link = tokio::net::TcpStream;

    async fn connect(&self) -> io::Result<Self::Link> {
        let stream = tokio::time::timeout(
            self.connect_timeout,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TCP connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn describe(&self) -> String {
        format!("TCP serial server {}", self.address)
    }
}

/// Hands out one pre-opened link once (tests over in-memory pipes).
pub struct OnceConnector<L> {
    link: std::sync::Mutex<Option<L>>,
    name: String,
}

impl<L> OnceConnector<L> {
    pub fn new(link: L, name: impl Into<String>) -> Self {
        Self {
            link: std::sync::Mutex::new(Some(link)),
            name: name.into(),
        }
    }
}

impl<L: Link> Connector for OnceConnector<L> {
    type Link = L;

    async fn connect(&self) -> io::Result<L> {
        let taken = self
            .link
            .lock()
            .map_err(|_| io::Error::other("connector poisoned"))?
            .take();
        taken.ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "link already used"))
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
