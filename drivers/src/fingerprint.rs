//! Fingerprint sensor: the [`FingerprintSensor`] trait and the EF01 engine [`Ef01Sensor`]
//! (R30x / AS608 / ZFM modules), generic over a [`Connector`].
//!
//! On connect: probe the baud (57600 first), verify the password, read the system
//! parameters (packet size, capacity are read, never assumed). Enroll and verify use the
//! module's own matcher on fingers the kiosk captured itself; the module cannot compare
//! against ID-card fingerprint blocks (see [`crate::binding`]).

use std::io;
use std::time::Duration;

use async_trait::async_trait;
use firmware_interfaces::ef01::{
    AckData, Confirmation, DEFAULT_ADDRESS, Ef01Deframer, Ef01FrameError, FingerImage, IMAGE_BYTES,
    Instruction, InstructionError, PacketKind, SystemParameters,
};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::framed::{Framed, RecvError};
use crate::link::{Connector, Link};

/// Baud rates tried, in order (module default 57600 = 9600 × 6).
pub const EF01_PROBE_ORDER: [u32; 5] = [57_600, 115_200, 9_600, 19_200, 38_400];

#[derive(Debug, thiserror::Error)]
pub enum FingerprintError {
    #[error("no finger was placed within {0} ms")]
    NoFinger(u64),
    #[error("the finger was not lifted within {0} ms")]
    FingerNotLifted(u64),
    #[error("the image is too poor to extract features ({0})")]
    PoorImage(Confirmation),
    #[error("no reply to `{command}` within {timeout_ms} ms")]
    Timeout {
        command: &'static str,
        timeout_ms: u64,
    },
    #[error("reply with a bad checksum")]
    Checksum,
    #[error("reply framing error: {0}")]
    Framing(Ef01FrameError),
    #[error("the device went away: {0}")]
    DeviceGone(#[source] io::Error),
    #[error("cannot open {device}: {source}")]
    Open {
        device: String,
        #[source]
        source: io::Error,
    },
    #[error("no EF01 module answered on {device} (tried {tried})")]
    NoResponse { device: String, tried: String },
    #[error("the module rejected the password")]
    WrongPassword,
    #[error("the template library is full")]
    LibraryFull,
    #[error("the two captures could not be combined (different fingers?)")]
    CombineFailed,
    #[error("module answered {0}")]
    Module(Confirmation),
    #[error("reply malformed")]
    Malformed,
}

impl From<InstructionError> for FingerprintError {
    fn from(e: InstructionError) -> Self {
        match e {
            InstructionError::Confirmation(Confirmation::WrongPassword) => Self::WrongPassword,
            InstructionError::Confirmation(Confirmation::CombineFailed) => Self::CombineFailed,
            InstructionError::Confirmation(
                c @ (Confirmation::DisorderlyImage
                | Confirmation::TooFewFeatures
                | Confirmation::NoValidImage),
            ) => Self::PoorImage(c),
            InstructionError::Confirmation(c) => Self::Module(c),
            _ => Self::Malformed,
        }
    }
}

/// The module's parameters as `kioskctl device fingerprint info` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorInfo {
    pub capacity: u16,
    pub security_level: u16,
    /// Data packet payload bytes.
    pub packet_size: usize,
    /// The line speed the module uses (from its parameters).
    pub baud: u32,
    pub stored_templates: u16,
}

/// Result of a 1:1 comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    Match { score: u16 },
    NoMatch,
}

/// What the daemon needs from a fingerprint sensor.
#[async_trait]
pub trait FingerprintSensor: Send {
    async fn info(&mut self) -> Result<SensorInfo, FingerprintError>;
    /// Captures the finger twice (asking for it to be lifted in between), combines and stores
    /// the template at `slot` or the first free slot; returns the slot.
    async fn enroll(&mut self, slot: Option<u16>) -> Result<u16, FingerprintError>;
    /// Captures a finger and compares it with the template at `slot`.
    async fn verify(&mut self, slot: u16) -> Result<VerifyOutcome, FingerprintError>;
    /// Captures a finger and searches the whole library: `(slot, score)` of a match.
    async fn identify(&mut self) -> Result<Option<(u16, u16)>, FingerprintError>;
    async fn delete(&mut self, slot: u16) -> Result<(), FingerprintError>;
    /// Captures a finger and uploads its image (256 × 288, 8-bit grey).
    async fn capture_image(&mut self) -> Result<FingerImage, FingerprintError>;
    fn describe(&self) -> String;
}

#[derive(Debug, Clone)]
pub struct Ef01Settings {
    pub baud: Option<u32>,
    pub address: u32,
    pub password: u32,
    pub probe_timeout: Duration,
    pub command_timeout: Duration,
    /// How long to wait for a finger to be placed (or lifted).
    pub finger_timeout: Duration,
    /// Pause between image-capture polls while waiting for a finger.
    pub finger_poll_interval: Duration,
    pub flush_quiet: Duration,
}

impl Default for Ef01Settings {
    fn default() -> Self {
        Self {
            baud: None,
            address: DEFAULT_ADDRESS,
            password: 0,
            probe_timeout: Duration::from_millis(300),
            command_timeout: Duration::from_secs(2),
            finger_timeout: Duration::from_secs(10),
            finger_poll_interval: Duration::from_millis(30),
            flush_quiet: Duration::from_millis(30),
        }
    }
}

struct Session<L> {
    framed: Framed<L, Ef01Deframer>,
    params: SystemParameters,
}

/// The EF01 protocol engine.
pub struct Ef01Sensor<C: Connector> {
    connector: C,
    settings: Ef01Settings,
    session: Option<Session<C::Link>>,
}

fn instruction_name(ins: &Instruction) -> &'static str {
    match ins {
        Instruction::GenImg => "capture image",
        Instruction::Img2Tz { .. } => "extract features",
        Instruction::Match => "match",
        Instruction::Search { .. } | Instruction::HighSpeedSearch { .. } => "search",
        Instruction::RegModel => "combine",
        Instruction::Store { .. } => "store",
        Instruction::LoadChar { .. } => "load template",
        Instruction::UpChar { .. } => "upload template",
        Instruction::DownChar { .. } => "download template",
        Instruction::UpImage => "upload image",
        Instruction::DownImage => "download image",
        Instruction::DeleteChar { .. } => "delete",
        Instruction::Empty => "empty library",
        Instruction::SetSysPara { .. } => "set parameter",
        Instruction::ReadSysPara => "read parameters",
        Instruction::SetPwd { .. } => "set password",
        Instruction::VfyPwd { .. } => "verify password",
        Instruction::GetRandomCode => "random",
        Instruction::SetAddr { .. } => "set address",
        Instruction::TemplateCount => "template count",
        Instruction::ReadIndexTable { .. } => "read index table",
        Instruction::HandShake => "handshake",
    }
}

/// Sends one command and returns the acknowledgement payload.
async fn command<L: Link>(
    framed: &mut Framed<L, Ef01Deframer>,
    address: u32,
    ins: Instruction,
    timeout: Duration,
) -> Result<Zeroizing<Vec<u8>>, FingerprintError> {
    framed
        .send(&ins.encode(address))
        .await
        .map_err(FingerprintError::DeviceGone)?;
    let deadline = Instant::now() + timeout;
    loop {
        let packet = recv(framed, deadline, instruction_name(&ins), timeout).await?;
        if packet.kind == PacketKind::Ack && packet.address == address {
            return Ok(packet.payload);
        }
    }
}

async fn recv<L: Link>(
    framed: &mut Framed<L, Ef01Deframer>,
    deadline: Instant,
    name: &'static str,
    timeout: Duration,
) -> Result<firmware_interfaces::ef01::Packet, FingerprintError> {
    match framed.recv(deadline).await {
        Ok(p) => Ok(p),
        Err(RecvError::Timeout) => Err(FingerprintError::Timeout {
            command: name,
            timeout_ms: timeout.as_millis() as u64,
        }),
        Err(RecvError::Gone(e)) => Err(FingerprintError::DeviceGone(e)),
        Err(RecvError::Frame(Ef01FrameError::Checksum)) => Err(FingerprintError::Checksum),
        Err(RecvError::Frame(e)) => Err(FingerprintError::Framing(e)),
    }
}

impl<C: Connector> Ef01Sensor<C> {
    pub fn new(connector: C, settings: Ef01Settings) -> Self {
        Self {
            connector,
            settings,
            session: None,
        }
    }

    async fn connect(&mut self) -> Result<(), FingerprintError> {
        let device = self.connector.describe();
        let link = self
            .connector
            .connect()
            .await
            .map_err(|source| FingerprintError::Open {
                device: device.clone(),
                source,
            })?;
        let mut framed = Framed::new(link, Ef01Deframer::new());
        let has_baud = framed.link_mut().has_baud();
        let candidates: Vec<u32> = match (has_baud, self.settings.baud) {
            (false, _) => vec![0],
            (true, Some(b)) => vec![b],
            (true, None) => EF01_PROBE_ORDER.to_vec(),
        };
        let (address, password) = (self.settings.address, self.settings.password);
        for &baud in &candidates {
            if has_baud {
                framed
                    .link_mut()
                    .set_baud(baud)
                    .map_err(FingerprintError::DeviceGone)?;
            }
            framed
                .discard_input(self.settings.flush_quiet)
                .await
                .map_err(FingerprintError::DeviceGone)?;
            let ack = match command(
                &mut framed,
                address,
                Instruction::VfyPwd { password },
                self.settings.probe_timeout,
            )
            .await
            {
                Ok(ack) => ack,
                Err(FingerprintError::DeviceGone(e)) => {
                    return Err(FingerprintError::DeviceGone(e));
                }
                Err(_) => continue,
            };
            Instruction::VfyPwd { password }.decode_ack(&ack)?;
            let ack = command(
                &mut framed,
                address,
                Instruction::ReadSysPara,
                self.settings.command_timeout,
            )
            .await?;
            let AckData::Parameters(params) = Instruction::ReadSysPara.decode_ack(&ack)? else {
                return Err(FingerprintError::Malformed);
            };
            tracing::debug!(device = %device, baud, "EF01 module answered");
            self.session = Some(Session { framed, params });
            return Ok(());
        }
        let tried = candidates
            .iter()
            .map(|b| {
                if *b == 0 {
                    "one password check".to_string()
                } else {
                    format!("password check at {b} baud")
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        Err(FingerprintError::NoResponse { device, tried })
    }

    async fn session(&mut self) -> Result<&mut Session<C::Link>, FingerprintError> {
        if self.session.is_none() {
            self.connect().await?;
        }
        let quiet = self.settings.flush_quiet;
        let begun = match self.session.as_mut() {
            Some(session) => session.framed.begin(quiet).await,
            None => return Err(FingerprintError::Malformed),
        };
        if let Err(e) = begun {
            self.session = None;
            return Err(FingerprintError::DeviceGone(e));
        }
        self.session.as_mut().ok_or(FingerprintError::Malformed)
    }

    fn finish<T>(&mut self, result: Result<T, FingerprintError>) -> Result<T, FingerprintError> {
        match &result {
            Err(FingerprintError::DeviceGone(_)) => {
                tracing::warn!(device = %self.connector.describe(), "fingerprint module went away; will reconnect");
                self.session = None;
            }
            _ => {
                if let Some(s) = self.session.as_mut() {
                    s.framed.end();
                }
            }
        }
        result
    }

    async fn ask(&mut self, ins: Instruction) -> Result<AckData, FingerprintError> {
        let (address, timeout) = (self.settings.address, self.settings.command_timeout);
        let session = self.session().await?;
        let result = async {
            let ack = command(&mut session.framed, address, ins, timeout).await?;
            Ok(ins.decode_ack(&ack)?)
        }
        .await;
        self.finish(result)
    }

    /// Polls GenImg until a finger is imaged.
    async fn wait_for_finger(&mut self) -> Result<(), FingerprintError> {
        let deadline = Instant::now() + self.settings.finger_timeout;
        loop {
            match self.ask(Instruction::GenImg).await {
                Ok(_) => return Ok(()),
                Err(FingerprintError::Module(
                    Confirmation::NoFinger | Confirmation::CaptureFailed,
                )) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(FingerprintError::NoFinger(
                    self.settings.finger_timeout.as_millis() as u64,
                ));
            }
            tokio::time::sleep(self.settings.finger_poll_interval).await;
        }
    }

    /// Polls GenImg until the sensor reports no finger.
    async fn wait_for_lift(&mut self) -> Result<(), FingerprintError> {
        let deadline = Instant::now() + self.settings.finger_timeout;
        loop {
            match self.ask(Instruction::GenImg).await {
                Err(FingerprintError::Module(Confirmation::NoFinger)) => return Ok(()),
                Ok(_) | Err(FingerprintError::Module(Confirmation::CaptureFailed)) => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(FingerprintError::FingerNotLifted(
                    self.settings.finger_timeout.as_millis() as u64,
                ));
            }
            tokio::time::sleep(self.settings.finger_poll_interval).await;
        }
    }

    async fn capture_features(&mut self, buffer: u8) -> Result<(), FingerprintError> {
        self.wait_for_finger().await?;
        self.ask(Instruction::Img2Tz { buffer }).await.map(|_| ())
    }

    async fn free_slot(&mut self, capacity: u16) -> Result<u16, FingerprintError> {
        let pages = capacity.div_ceil(256).min(4) as u8;
        for page in 0..pages {
            let AckData::IndexTable(bits) = self.ask(Instruction::ReadIndexTable { page }).await?
            else {
                return Err(FingerprintError::Malformed);
            };
            for (byte_idx, byte) in bits.iter().enumerate() {
                for bit in 0..8u16 {
                    let slot = u16::from(page) * 256 + byte_idx as u16 * 8 + bit;
                    if slot < capacity && byte & (1 << bit) == 0 {
                        return Ok(slot);
                    }
                }
            }
        }
        Err(FingerprintError::LibraryFull)
    }

    fn params(&self) -> Option<SystemParameters> {
        self.session.as_ref().map(|s| s.params)
    }

    async fn ensure_params(&mut self) -> Result<SystemParameters, FingerprintError> {
        if self.session.is_none() {
            self.connect().await?;
        }
        self.params().ok_or(FingerprintError::Malformed)
    }
}

#[async_trait]
impl<C: Connector> FingerprintSensor for Ef01Sensor<C> {
    async fn info(&mut self) -> Result<SensorInfo, FingerprintError> {
        self.ensure_params().await?;
        let AckData::Parameters(params) = self.ask(Instruction::ReadSysPara).await? else {
            return Err(FingerprintError::Malformed);
        };
        if let Some(s) = self.session.as_mut() {
            s.params = params;
        }
        let AckData::Count(stored) = self.ask(Instruction::TemplateCount).await? else {
            return Err(FingerprintError::Malformed);
        };
        Ok(SensorInfo {
            capacity: params.capacity,
            security_level: params.security_level,
            packet_size: params.packet_size.bytes(),
            baud: params.baud(),
            stored_templates: stored,
        })
    }

    async fn enroll(&mut self, slot: Option<u16>) -> Result<u16, FingerprintError> {
        let params = self.ensure_params().await?;
        let slot = match slot {
            Some(s) if s >= params.capacity => {
                return Err(FingerprintError::Module(Confirmation::BadLocation));
            }
            Some(s) => s,
            None => self.free_slot(params.capacity).await?,
        };
        self.capture_features(1).await?;
        self.wait_for_lift().await?;
        self.capture_features(2).await?;
        self.ask(Instruction::RegModel).await?;
        match self
            .ask(Instruction::Store {
                buffer: 1,
                page: slot,
            })
            .await
        {
            Ok(_) => Ok(slot),
            Err(FingerprintError::Module(Confirmation::BadLocation)) => {
                Err(FingerprintError::LibraryFull)
            }
            Err(e) => Err(e),
        }
    }

    async fn verify(&mut self, slot: u16) -> Result<VerifyOutcome, FingerprintError> {
        self.capture_features(1).await?;
        self.ask(Instruction::LoadChar {
            buffer: 2,
            page: slot,
        })
        .await?;
        match self.ask(Instruction::Match).await {
            Ok(AckData::Score(score)) => Ok(VerifyOutcome::Match { score }),
            Ok(_) => Err(FingerprintError::Malformed),
            Err(FingerprintError::Module(Confirmation::NoMatch)) => Ok(VerifyOutcome::NoMatch),
            Err(e) => Err(e),
        }
    }

    async fn identify(&mut self) -> Result<Option<(u16, u16)>, FingerprintError> {
        let params = self.ensure_params().await?;
        self.capture_features(1).await?;
        match self
            .ask(Instruction::Search {
                buffer: 1,
                start: 0,
                count: params.capacity,
            })
            .await
        {
            Ok(AckData::Found { page, score }) => Ok(Some((page, score))),
            Ok(_) => Err(FingerprintError::Malformed),
            Err(FingerprintError::Module(Confirmation::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn delete(&mut self, slot: u16) -> Result<(), FingerprintError> {
        self.ask(Instruction::DeleteChar {
            page: slot,
            count: 1,
        })
        .await
        .map(|_| ())
    }

    async fn capture_image(&mut self) -> Result<FingerImage, FingerprintError> {
        self.wait_for_finger().await?;
        let (address, timeout) = (self.settings.address, self.settings.command_timeout);
        let session = self.session().await?;
        let result = async {
            let ack = command(&mut session.framed, address, Instruction::UpImage, timeout).await?;
            Instruction::UpImage.decode_ack(&ack)?;
            let mut image = Zeroizing::new(Vec::with_capacity(IMAGE_BYTES));
            // The whole image takes seconds at 57600 baud: the timeout applies per DATA
            // packet. Only image data renews it, so a device that keeps sending other packets
            // cannot hold the upload open for ever; the image size bounds the data packets.
            let mut deadline = Instant::now() + timeout;
            loop {
                let p = recv(&mut session.framed, deadline, "upload image", timeout).await?;
                if !matches!(p.kind, PacketKind::Data | PacketKind::EndData) {
                    continue;
                }
                if image.len() + p.payload.len() > IMAGE_BYTES {
                    return Err(FingerprintError::Malformed);
                }
                deadline = Instant::now() + timeout;
                image.extend_from_slice(&p.payload);
                if p.kind == PacketKind::EndData {
                    break;
                }
            }
            FingerImage::unpack(&image).ok_or(FingerprintError::Malformed)
        }
        .await;
        self.finish(result)
    }

    fn describe(&self) -> String {
        self.connector.describe()
    }
}
