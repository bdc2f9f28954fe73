//! ID-card reader: the [`IdCardReader`] trait and the SAM protocol engine [`SamReader`],
//! generic over a [`Connector`] (serial, TCP, in-memory).
//!
//! One operation at a time (`&mut self`); every operation can be cancelled by dropping its
//! future (the next one discards the stale bytes first); a device that went away is
//! reconnected (and re-probed) on the next operation. Frames are wiped after parsing and
//! never logged.

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use firmware_interfaces::personal::Address;
use firmware_interfaces::sam::{
    CardData, CardText, ReplyError, SamBaud, SamCommand, SamDeframer, SamFrameError, SamId,
    SamReply, SamResponse, SamStatus, TextError,
};
use tokio::time::Instant;

use crate::framed::{Framed, RecvError};
use crate::link::{Connector, Link};

/// Typed reader errors. None carries card contents.
#[derive(Debug, thiserror::Error)]
pub enum IdCardError {
    #[error(
        "no card on the reader (or the same card still there after a read: remove and present it again)"
    )]
    NoCard,
    #[error("the card was removed during the read")]
    CardRemoved,
    #[error("no reply to `{command}` within {timeout_ms} ms")]
    Timeout {
        command: &'static str,
        timeout_ms: u64,
    },
    #[error("reply with a bad checksum")]
    Checksum,
    #[error("reply with a bad length field")]
    Length,
    #[error("the device went away: {0}")]
    DeviceGone(#[source] io::Error),
    #[error("cannot open {device}: {source}")]
    Open {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("no SAM module answered on {device} (tried {tried})")]
    NoResponse { device: String, tried: String },
    #[error("reader answered {0}")]
    Status(SamStatus),
    #[error("reply malformed: {0}")]
    Malformed(ReplyError),
    #[error("card text: {0}")]
    Text(#[from] TextError),
}

impl From<ReplyError> for IdCardError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::Status(s) => Self::Status(s),
            ReplyError::Text(t) => Self::Text(t),
            other => Self::Malformed(other),
        }
    }
}

/// A card as read: the raw blocks (photo, fingerprints) and the decoded text.
#[derive(Debug, Clone)]
pub struct CardRead {
    pub data: CardData,
    pub text: CardText,
}

/// What the daemon needs from an ID-card reader.
#[async_trait]
pub trait IdCardReader: Send {
    /// Checks the SAM answers and passes its self-test (connects and probes if needed).
    async fn check(&mut self) -> Result<(), IdCardError>;
    async fn sam_id(&mut self) -> Result<SamId, IdCardError>;
    /// Find, select and read (text + photo + fingerprints; text + photo on modules without
    /// fingerprint support).
    async fn read_card(&mut self) -> Result<CardRead, IdCardError>;
    /// Appended addresses of the card just read (empty if none).
    async fn read_appended_addresses(&mut self) -> Result<Vec<Address>, IdCardError>;
    /// The line speed in use, once connected (None for links without one).
    fn baud(&self) -> Option<u32>;
    /// Where the reader is.
    fn describe(&self) -> String;
}

/// How a [`SamReader`] talks to its module.
#[derive(Debug, Clone)]
pub struct SamSettings {
    /// A fixed baud rate, or `None` to probe 115200, 57600, 38400, 19200, 9600.
    pub baud: Option<u32>,
    /// How long to wait for the status reply at each probed speed.
    pub probe_timeout: Duration,
    /// Overrides the per-command timeouts (`SamCommand::typical_timeout_ms`) when set.
    pub command_timeout: Option<Duration>,
    /// Quiet period used to flush stale bytes after a cancelled operation.
    pub flush_quiet: Duration,
    /// Ask for fingerprints (`30 10`); falls back to `30 01` on modules that refuse it.
    pub read_fingerprints: bool,
}

impl Default for SamSettings {
    fn default() -> Self {
        Self {
            baud: None,
            probe_timeout: Duration::from_millis(300),
            command_timeout: None,
            flush_quiet: Duration::from_millis(30),
            read_fingerprints: true,
        }
    }
}

/// The SAM protocol engine.
pub struct SamReader<C: Connector> {
    connector: C,
    settings: SamSettings,
    framed: Option<Framed<C::Link, SamDeframer>>,
    baud: Option<u32>,
    fingerprint_supported: bool,
}

impl<C: Connector> SamReader<C> {
    /// Nothing is opened until the first operation.
    pub fn new(connector: C, settings: SamSettings) -> Self {
        Self {
            connector,
            settings,
            framed: None,
            baud: None,
            fingerprint_supported: true,
        }
    }

    fn timeout_for(&self, command: SamCommand) -> Duration {
        self.settings
            .command_timeout
            .unwrap_or(Duration::from_millis(command.typical_timeout_ms()))
    }

    async fn connect(&mut self) -> Result<(), IdCardError> {
        let device = self.connector.describe();
        let link = self
            .connector
            .connect()
            .await
            .map_err(|source| IdCardError::Open {
                device: device.clone(),
                source,
            })?;
        let mut framed = Framed::new(link, SamDeframer::new());
        if !framed.link_mut().has_baud() {
            exchange(
                &mut framed,
                SamCommand::SamStatus,
                self.settings.probe_timeout,
            )
            .await
            .map_err(|e| match e {
                IdCardError::Timeout { .. } | IdCardError::Checksum | IdCardError::Length => {
                    IdCardError::NoResponse {
                        device: device.clone(),
                        tried: "one status request".into(),
                    }
                }
                other => other,
            })?;
            self.framed = Some(framed);
            return Ok(());
        }
        let candidates: Vec<u32> = match self.settings.baud {
            Some(b) => vec![b],
            None => SamBaud::PROBE_ORDER
                .iter()
                .map(|b| b.bits_per_second())
                .collect(),
        };
        for &baud in &candidates {
            framed
                .link_mut()
                .set_baud(baud)
                .map_err(IdCardError::DeviceGone)?;
            framed
                .discard_input(self.settings.flush_quiet)
                .await
                .map_err(IdCardError::DeviceGone)?;
            match exchange(
                &mut framed,
                SamCommand::SamStatus,
                self.settings.probe_timeout,
            )
            .await
            {
                // Any well-formed reply (even a failed self-test) proves the speed is right.
                Ok(_) | Err(IdCardError::Status(_)) => {
                    tracing::debug!(device = %device, baud, "SAM module answered");
                    self.baud = Some(baud);
                    self.framed = Some(framed);
                    return Ok(());
                }
                Err(IdCardError::DeviceGone(e)) => return Err(IdCardError::DeviceGone(e)),
                Err(_) => continue,
            }
        }
        let tried = candidates
            .iter()
            .map(|b| format!("SAM status at {b} baud"))
            .collect::<Vec<_>>()
            .join(", ");
        Err(IdCardError::NoResponse { device, tried })
    }

    /// Sends `command` and returns the typed reply; reconnects first if needed.
    async fn transact(&mut self, command: SamCommand) -> Result<SamReply, IdCardError> {
        if self.framed.is_none() {
            self.connect().await?;
        }
        let timeout = self.timeout_for(command);
        let quiet = self.settings.flush_quiet;
        let Some(framed) = self.framed.as_mut() else {
            return Err(IdCardError::NoCard);
        };
        let result = match framed.begin(quiet).await {
            Ok(()) => exchange(framed, command, timeout).await,
            Err(e) => Err(IdCardError::DeviceGone(e)),
        };
        match &result {
            Err(IdCardError::DeviceGone(_)) => {
                tracing::warn!(device = %self.connector.describe(), "ID-card reader went away; will reconnect");
                self.framed = None;
                self.baud = None;
            }
            _ => framed.end(),
        }
        result.and_then(|resp| Ok(command.decode_reply(&resp)?))
    }
}

/// One command → one response frame.
async fn exchange<L: Link>(
    framed: &mut Framed<L, SamDeframer>,
    command: SamCommand,
    timeout: Duration,
) -> Result<SamResponse, IdCardError> {
    framed
        .send(&command.encode())
        .await
        .map_err(IdCardError::DeviceGone)?;
    let deadline = Instant::now() + timeout;
    match framed.recv(deadline).await {
        Ok(frame) => Ok(SamResponse::from_frame(&frame)?),
        Err(RecvError::Timeout) => Err(IdCardError::Timeout {
            command: command.name(),
            timeout_ms: timeout.as_millis() as u64,
        }),
        Err(RecvError::Gone(e)) => Err(IdCardError::DeviceGone(e)),
        Err(RecvError::Frame(SamFrameError::Checksum)) => Err(IdCardError::Checksum),
        Err(RecvError::Frame(SamFrameError::Length(_))) => Err(IdCardError::Length),
    }
}

#[async_trait]
impl<C: Connector> IdCardReader for SamReader<C> {
    async fn check(&mut self) -> Result<(), IdCardError> {
        self.transact(SamCommand::SamStatus).await.map(|_| ())
    }

    async fn sam_id(&mut self) -> Result<SamId, IdCardError> {
        match self.transact(SamCommand::ReadSamId).await? {
            SamReply::SamId(id) => Ok(id),
            _ => Err(IdCardError::Malformed(ReplyError::Malformed(
                "unexpected reply",
            ))),
        }
    }

    async fn read_card(&mut self) -> Result<CardRead, IdCardError> {
        match self.transact(SamCommand::FindCard).await {
            Ok(_) => {}
            Err(IdCardError::Status(SamStatus::FindFailed)) => return Err(IdCardError::NoCard),
            Err(e) => return Err(e),
        }
        match self.transact(SamCommand::SelectCard).await {
            Ok(_) => {}
            Err(IdCardError::Status(SamStatus::SelectFailed)) => {
                return Err(IdCardError::CardRemoved);
            }
            Err(e) => return Err(e),
        }
        let mut command = if self.settings.read_fingerprints && self.fingerprint_supported {
            SamCommand::ReadTextAndFingerprint
        } else {
            SamCommand::ReadText
        };
        let reply = loop {
            match self.transact(command).await {
                Err(IdCardError::Status(SamStatus::CommandError))
                    if command == SamCommand::ReadTextAndFingerprint =>
                {
                    // Old "0501" modules: no fingerprint read. Remember and use 30 01.
                    self.fingerprint_supported = false;
                    command = SamCommand::ReadText;
                }
                Err(IdCardError::Status(SamStatus::ReadFailed)) => {
                    return Err(IdCardError::CardRemoved);
                }
                other => break other?,
            }
        };
        let SamReply::Card(data) = reply else {
            return Err(IdCardError::Malformed(ReplyError::Malformed(
                "unexpected reply",
            )));
        };
        let text = data.text.decode()?;
        Ok(CardRead { data: *data, text })
    }

    async fn read_appended_addresses(&mut self) -> Result<Vec<Address>, IdCardError> {
        match self.transact(SamCommand::ReadAppendedAddress).await {
            Ok(SamReply::AppendedAddresses(a)) => Ok(a),
            Ok(_) => Err(IdCardError::Malformed(ReplyError::Malformed(
                "unexpected reply",
            ))),
            Err(IdCardError::Status(SamStatus::ReadFailed)) => Err(IdCardError::CardRemoved),
            Err(e) => Err(e),
        }
    }

    fn baud(&self) -> Option<u32> {
        self.baud
    }

    fn describe(&self) -> String {
        self.connector.describe()
    }
}
