//! SAM module simulator.
//!
//! Behaviour (matching the notes and vendor practice): find succeeds once per card
//! presentation (`9F`), then `80` until the card is removed and presented again; select
//! (`90`/`81`) must follow find; reads need a selected card (`41` otherwise); a card pulled
//! during a read answers `41`; bad checksum `10`; bad length `11`; unknown command `21`;
//! split and coalesced writes are reassembled; optional leading garbage before a reply; a
//! silent mode that consumes input and answers nothing.

use crate::framing::FrameAssembler;
use crate::personal::Address;
use crate::sam::command::{SamBaud, SamCommand};
use crate::sam::frame::{SamDeframer, SamFrameError, encode_frame};
use crate::sam::reply::{
    CardData, CardFingerprint, SamId, SamResponse, WltPhoto, encode_appended_address,
};
use crate::sam::status::SamStatus;
use crate::sam::text::CardText;

/// A card that can be placed on the simulated reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCard {
    pub text: CardText,
    pub photo: Vec<u8>,
    pub fingerprints: Vec<CardFingerprint>,
    pub appended_addresses: Vec<Address>,
}

impl SimCard {
    pub fn card_data(&self) -> CardData {
        CardData {
            text: self.text.encode(),
            photo: WltPhoto::new(self.photo.clone()),
            fingerprints: self.fingerprints.clone(),
        }
    }
}

/// Faults to inject; each one-shot fault clears itself when used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamFaults {
    /// Consume everything, answer nothing.
    pub silent: bool,
    /// The card leaves the field during the next read (answers `41`, card gone).
    pub remove_card_during_next_read: bool,
    /// Flip the checksum of the next reply.
    pub corrupt_next_reply: bool,
    /// Bytes sent before the next reply.
    pub garbage_before_next_reply: Vec<u8>,
    /// `11 FF` answers `60`.
    pub self_test_failed: bool,
    /// Behave like an old "0501" module: `30 10` answers `21`.
    pub no_fingerprint_support: bool,
}

/// The simulated SAM module.
pub struct SamSimulator {
    deframer: SamDeframer,
    card: Option<SimCard>,
    found: bool,
    selected: bool,
    authenticated: bool,
    baud: SamBaud,
    sam_id: SamId,
    pub faults: SamFaults,
}

impl Default for SamSimulator {
    fn default() -> Self {
        Self::new()
    }
}

impl SamSimulator {
    pub fn new() -> Self {
        Self {
            deframer: SamDeframer::new(),
            card: None,
            found: false,
            selected: false,
            authenticated: false,
            baud: SamBaud::B115200,
            sam_id: SamId {
                group1: 5,
                group2: 1,
                group3: 20_260_101,
                group4: 1,
                group5: 99,
            },
            faults: SamFaults::default(),
        }
    }

    /// Places a card (a new presentation: find will succeed once).
    pub fn present_card(&mut self, card: SimCard) {
        self.card = Some(card);
        self.found = false;
        self.selected = false;
        self.authenticated = false;
    }

    pub fn remove_card(&mut self) {
        self.card = None;
        self.found = false;
        self.selected = false;
        self.authenticated = false;
    }

    pub fn has_card(&self) -> bool {
        self.card.is_some()
    }

    /// The UART speed the module currently uses.
    pub fn baud(&self) -> SamBaud {
        self.baud
    }

    pub fn set_baud(&mut self, baud: SamBaud) {
        self.baud = baud;
    }

    /// Feeds received bytes; returns the bytes the module sends back.
    pub fn on_bytes(&mut self, input: &[u8]) -> Vec<u8> {
        self.deframer.push(input);
        let mut out = Vec::new();
        while let Some(frame) = self.deframer.next_frame() {
            let reply = match frame {
                Err(SamFrameError::Checksum) => {
                    SamResponse::new(SamStatus::ChecksumError, Vec::new())
                }
                Err(SamFrameError::Length(_)) => {
                    SamResponse::new(SamStatus::LengthError, Vec::new())
                }
                Ok(frame) => match frame.body() {
                    [cmd, para] => match SamCommand::from_code(*cmd, *para) {
                        Some(command) => self.execute(command),
                        None => SamResponse::new(SamStatus::CommandError, Vec::new()),
                    },
                    _ => SamResponse::new(SamStatus::LengthError, Vec::new()),
                },
            };
            if self.faults.silent {
                continue;
            }
            out.append(&mut self.faults.garbage_before_next_reply);
            let mut bytes = reply.encode();
            if std::mem::take(&mut self.faults.corrupt_next_reply) {
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0xFF;
                }
            }
            out.extend_from_slice(&bytes);
        }
        out
    }

    fn execute(&mut self, command: SamCommand) -> SamResponse {
        let status = |s| SamResponse::new(s, Vec::new());
        match command {
            SamCommand::ResetSam => {
                self.found = false;
                self.selected = false;
                self.authenticated = false;
                status(SamStatus::Success)
            }
            SamCommand::SamStatus if self.faults.self_test_failed => {
                status(SamStatus::SelfTestFailed)
            }
            SamCommand::SamStatus => status(SamStatus::Success),
            SamCommand::ReadSamId => SamResponse::new(SamStatus::Success, self.sam_id.encode()),
            SamCommand::FindCard => {
                if self.card.is_some() && !self.found {
                    self.found = true;
                    self.selected = false;
                    self.authenticated = false;
                    SamResponse::new(SamStatus::CardFound, vec![0; 4])
                } else {
                    status(SamStatus::FindFailed)
                }
            }
            SamCommand::SelectCard => {
                if self.card.is_some() && self.found && !self.selected && !self.authenticated {
                    self.selected = true;
                    SamResponse::new(SamStatus::Success, vec![0; 8])
                } else {
                    status(SamStatus::SelectFailed)
                }
            }
            SamCommand::ReadTextAndFingerprint if self.faults.no_fingerprint_support => {
                status(SamStatus::CommandError)
            }
            SamCommand::ReadText | SamCommand::ReadTextAndFingerprint => {
                if std::mem::take(&mut self.faults.remove_card_during_next_read) {
                    self.remove_card();
                    return status(SamStatus::ReadFailed);
                }
                let Some(card) = self.card.as_ref().filter(|_| self.selected) else {
                    return status(SamStatus::ReadFailed);
                };
                let data = card
                    .card_data()
                    .encode(command == SamCommand::ReadTextAndFingerprint);
                self.selected = false;
                self.authenticated = true;
                SamResponse::new(SamStatus::Success, data)
            }
            SamCommand::ReadAppendedAddress => {
                let Some(card) = self.card.as_ref().filter(|_| self.authenticated) else {
                    return status(SamStatus::ReadFailed);
                };
                if card.appended_addresses.is_empty() {
                    return status(SamStatus::NoContent);
                }
                let data = card
                    .appended_addresses
                    .iter()
                    .flat_map(encode_appended_address)
                    .collect();
                SamResponse::new(SamStatus::Success, data)
            }
            SamCommand::SetBaud(baud) => {
                // Answered at the old speed; the caller switches after sending the reply.
                self.baud = baud;
                status(SamStatus::Success)
            }
        }
    }
}

/// Raw frame for an arbitrary command body (tests of unknown commands).
pub fn raw_command(body: &[u8]) -> Vec<u8> {
    encode_frame(body)
}
