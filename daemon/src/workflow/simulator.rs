//! The simulator's controls, on simulated kiosks only (the demo and the tests stand in for
//! the person placing a card, a finger or a UKEY): present and remove a synthetic ID card,
//! place and lift a synthetic finger, insert and pull a soft UKEY. A kiosk with real devices
//! answers `not_simulated`; production mode removes the routes altogether.

use std::sync::Arc;

use firmware_interfaces::sam::text::{CardDate, CardText};
use firmware_interfaces::sim::fingerprint::{FingerQuality, SimFinger};
use firmware_interfaces::sim::fixtures;
use hsm::Pin;
use serde::{Deserialize, Serialize};

use super::{Error, ErrorKind, Kiosk, Result};

/// The initial user PIN of a simulated UKEY (as printed on a UKEY's PIN mailer).
pub const SIM_UKEY_PIN: &str = "123456";

/// A synthetic card to present.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimCard {
    /// `resident` | `hk_macao_taiwan` | `foreign_2017` | `foreign_2023`.
    #[serde(default = "default_layout")]
    pub layout: String,
    #[serde(default)]
    pub seed: u32,
    /// Override the synthetic birth date (`YYYY-MM-DD`), e.g. to present a minor.
    pub birth_date: Option<String>,
    /// The card leaves the field during the next read (a card pulled mid-read).
    #[serde(default)]
    pub pull_during_read: bool,
}

fn default_layout() -> String {
    "resident".into()
}

/// A synthetic finger to place.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimFingerInput {
    #[serde(default)]
    pub seed: u32,
    /// A finger too poor to extract features.
    #[serde(default)]
    pub poor: bool,
}

/// How to insert a soft UKEY.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SimUkeyInput {
    /// Pull the UKEY in the middle of the next key generation.
    #[serde(default)]
    pub pull_during_keygen: bool,
}

/// The soft UKEY inserted, with the initial PIN of its PIN mailer.
#[derive(Serialize)]
pub struct SimUkeyInserted {
    pub label: String,
    pub serial: String,
    pub initial_pin: &'static str,
}

fn not_simulated(what: &str) -> Error {
    Error::not_found_code("not_simulated", format!("{what} is not simulated"))
}

fn bad_request(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest, code, message)
}

/// A `YYYY-MM-DD` date.
fn parse_date(text: &str) -> Option<CardDate> {
    let parts = text
        .split('-')
        .map(|p| p.parse::<i32>().ok())
        .collect::<Option<Vec<_>>>()?;
    match parts[..] {
        [y, m, d] => CardDate::new(y, m as u8, d as u8),
        _ => None,
    }
}

impl Kiosk {
    fn idcard_sim(&self) -> Result<&drivers::sim::IdCardSim> {
        self.devices
            .idcard_sim
            .as_ref()
            .ok_or_else(|| not_simulated("the ID-card reader"))
    }

    fn fingerprint_sim(&self) -> Result<&drivers::sim::FingerprintSim> {
        self.devices
            .fingerprint_sim
            .as_ref()
            .ok_or_else(|| not_simulated("the fingerprint sensor"))
    }

    fn ukey_slot(&self) -> Result<&Arc<crate::ukey_sim::SimUkeySlot>> {
        self.ukey_sim.as_ref().ok_or_else(|| {
            Error::not_found_code("not_simulated", "UKEYs are not simulated on this kiosk")
        })
    }

    /// Present a synthetic card on the simulated reader.
    pub fn sim_present_card(&self, req: SimCard) -> Result<()> {
        let sim = self.idcard_sim()?;
        let mut text = match req.layout.as_str() {
            "resident" => fixtures::resident_text(req.seed),
            "hk_macao_taiwan" => fixtures::hk_macao_taiwan_text(req.seed),
            "foreign_2017" => fixtures::foreign_2017_text(req.seed),
            "foreign_2023" => fixtures::foreign_2023_text(req.seed),
            other => {
                return Err(bad_request(
                    "unknown_layout",
                    format!("no card layout {other:?}"),
                ));
            }
        };
        if let Some(b) = &req.birth_date {
            let parsed = parse_date(b)
                .ok_or_else(|| bad_request("bad_date", "birth_date must be YYYY-MM-DD"))?;
            if let CardText::Resident(r) = &mut text {
                r.birth_date = parsed;
                // Keep the ID number consistent with the birth date (GB 11643).
                let region = &r.id_number.expose()[..6];
                let seq = &r.id_number.expose()[14..17];
                r.id_number = fixtures::id_number(&format!("{region}{}{seq}", parsed.compact()));
            }
        }
        sim.present_card(fixtures::card(text, req.seed));
        if req.pull_during_read {
            sim.with(|s| s.faults.remove_card_during_next_read = true);
        }
        self.events.device("idcard", true);
        Ok(())
    }

    /// Take the synthetic card off the reader.
    pub fn sim_remove_card(&self) -> Result<()> {
        self.idcard_sim()?.remove_card();
        self.events.device("idcard", false);
        Ok(())
    }

    /// Place a synthetic finger on the simulated sensor.
    pub fn sim_place_finger(&self, input: SimFingerInput) -> Result<()> {
        self.fingerprint_sim()?.place_finger(SimFinger {
            seed: input.seed,
            quality: if input.poor {
                FingerQuality::Poor
            } else {
                FingerQuality::Good
            },
        });
        self.events.device("fingerprint", true);
        Ok(())
    }

    /// Lift the synthetic finger.
    pub fn sim_remove_finger(&self) -> Result<()> {
        self.fingerprint_sim()?.remove_finger();
        self.events.device("fingerprint", false);
        Ok(())
    }

    /// Insert a simulated UKEY as it comes from staff issuance: initialised, with the
    /// initial PIN of its PIN mailer.
    pub async fn sim_insert_ukey(&self, input: SimUkeyInput) -> Result<SimUkeyInserted> {
        let slot = self.ukey_slot()?.clone();
        let label = format!("UKEY-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let info = self
            .ukeys
            .init_token(
                &label,
                &Pin::new(self.config.ukey.factory_so_pin.expose()),
                &Pin::new(SIM_UKEY_PIN),
            )
            .await?;
        if input.pull_during_keygen {
            slot.arm_pull_during_keygen();
        }
        self.events.device("ukey", true);
        Ok(SimUkeyInserted {
            label: info.label,
            serial: info.serial,
            initial_pin: SIM_UKEY_PIN,
        })
    }

    /// Pull every simulated UKEY.
    pub fn sim_pull_ukeys(&self) -> Result<()> {
        self.ukey_slot()?
            .pull_all()
            .map_err(|e| Error::internal(e.to_string()))?;
        self.events.device("ukey", false);
        Ok(())
    }
}
