//! `POST /v1/sessions/{id}/idcard`: read the applicant's ID card (the
//! workflow's ID-card step) and answer with every value masked and the purpose
//! of each item stated. `POST`/`DELETE /v1/sim/idcard` present and remove a
//! synthetic card on the simulated reader (only in `simulated` mode: the demo
//! and the tests stand in for the person placing a card).

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use drivers::IdCardError;
use firmware_interfaces::sam::text::{CardDate, CardText};
use firmware_interfaces::sim::fixtures;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::sessions::{blocking, session_of};
use super::{ApiError, AppState};
use crate::app::now_ms;
use crate::audit::Actor;
use crate::privacy::Personal;
use crate::privacy::consent::Ledger;
use crate::session::CardBiometrics;
use crate::store::subjects::Subjects;
use crate::workflow::idcard::{self, IdCardStepError};
use crate::workflow::plan::Step;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/sessions/{id}/idcard", post(read))
        .route("/v1/sessions/{id}/guardian", post(guardian))
        .route("/v1/sim/idcard", post(sim_present).delete(sim_remove))
}

impl From<IdCardStepError> for ApiError {
    fn from(e: IdCardStepError) -> Self {
        match e {
            IdCardStepError::Consent(c) => c.into(),
            IdCardStepError::Minor(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "guardian_required", m.to_string())
            }
            IdCardStepError::Device(d) => {
                let (status, code) = match &d {
                    IdCardError::NoCard => (StatusCode::CONFLICT, "no_card"),
                    IdCardError::CardRemoved => (StatusCode::CONFLICT, "card_removed"),
                    IdCardError::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "device_timeout"),
                    _ => (StatusCode::SERVICE_UNAVAILABLE, "device_unavailable"),
                };
                tracing::warn!(error = %d, "ID-card read failed");
                ApiError::new(status, code, d.to_string())
            }
        }
    }
}

#[derive(Serialize)]
struct ItemOut {
    value: String,
    label: String,
    purpose: String,
}

#[derive(Serialize)]
struct CardOut {
    card_type: &'static str,
    fields: BTreeMap<String, ItemOut>,
    withheld: Vec<String>,
}

async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CardOut>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let card = read_card(&state).await?;
    let text = card.text;
    let card_data = card.data;
    let today = time::OffsetDateTime::now_utc().date();
    let guardian = state.memory.guardian(&session.id);
    idcard::check_age(
        &state.catalog,
        &text,
        today,
        guardian.as_ref().map(|g| &g.verified),
    )
    .map_err(IdCardStepError::from)?;
    let card_type = match &text {
        CardText::Resident(_) => "resident",
        CardText::HkMacaoTaiwan(_) => "hk_macao_taiwan",
        CardText::ForeignPermanent2017(_) => "foreign_permanent_2017",
        CardText::ForeignPermanent2023(_) => "foreign_permanent_2023",
    };
    let mut items = idcard::card_items(&text);
    if let Some(g) = guardian {
        items.extend(g.items);
    }
    let st = state.clone();
    let s = session.clone();
    let (shown, withheld) = blocking(move || {
        let mut conn = st.store.conn()?;
        if !st.sessions.is_open(&s.id) {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "session_not_found",
                "the session ended while the card was read",
            ));
        }
        let selected = idcard::select(&st.catalog, &conn, &s.id, &s.service, items)?;
        let ledger = Ledger {
            catalog: &st.catalog,
            session: &s.id,
        };
        let consented = |item: &str| ledger.require(&conn, &s.service, None, item).is_ok();
        let biometrics = CardBiometrics {
            photo: consented("id_photo").then(|| card_data.photo.clone()),
            fingerprints: if consented("fingerprint") {
                card_data.fingerprints.clone()
            } else {
                Vec::new()
            },
        };
        let subjects = Subjects {
            catalog: &st.catalog,
            keys: st.keys.vault.as_ref(),
            cipher: st.config.store.cipher.into(),
        };
        let id_number = selected
            .store
            .iter()
            .find(|p| p.item() == "id_number")
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "consent_required",
                    "the ID-card number needs consent",
                )
            })?;
        let digest = subjects.digest_of(&id_number).map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                e.to_string(),
            )
        })?;
        let tx = conn.transaction()?;
        // A second read in the same session replaces the first subject.
        let previous: Vec<String> = tx
            .prepare("SELECT subject_id FROM subjects WHERE session_id = ?1 AND purged_at IS NULL")?
            .query_map([&s.id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let actor = Actor::Applicant(s.id.clone());
        for p in previous {
            Subjects::purge(&tx, now_ms(), &actor, &p, "replaced")
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        subjects
            .create(&tx, now_ms(), &actor, &s.id, digest, &selected.store)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        tx.commit()?;
        st.memory.put_card(&s.id, biometrics);
        st.memory.complete(&s.id, Step::Idcard);
        let shown: Vec<Personal> = selected
            .store
            .into_iter()
            .chain(selected.session_only)
            .collect();
        Ok((shown, selected.withheld))
    })
    .await?;
    let service_label = state
        .catalog
        .service(&session.service)
        .map(|s| s.label.clone())
        .unwrap_or_default();
    let fields = shown
        .iter()
        .map(|p| {
            let label = state
                .catalog
                .items
                .get(p.item())
                .map(|d| d.label.clone())
                .unwrap_or_default();
            (
                p.item().to_string(),
                ItemOut {
                    value: p.masked(&state.catalog),
                    purpose: format!("{label}: {service_label}"),
                    label,
                },
            )
        })
        .collect();
    tracing::info!(session = %session.id, card_type, "ID card read");
    Ok(Json(CardOut {
        card_type,
        fields,
        withheld,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimCard {
    /// `resident` | `hk_macao_taiwan` | `foreign_2017` | `foreign_2023`.
    #[serde(default = "default_layout")]
    layout: String,
    #[serde(default)]
    seed: u32,
    /// Override the synthetic birth date (`YYYY-MM-DD`), e.g. to present a minor.
    birth_date: Option<String>,
    /// The card leaves the field during the next read (a card pulled mid-read).
    #[serde(default)]
    pull_during_read: bool,
}

fn default_layout() -> String {
    "resident".into()
}

fn sim_handle(state: &AppState) -> Result<&drivers::sim::IdCardSim, ApiError> {
    state.devices.idcard_sim.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_simulated",
            "the ID-card reader is not simulated",
        )
    })
}

async fn sim_present(
    State(state): State<AppState>,
    Json(req): Json<SimCard>,
) -> Result<StatusCode, ApiError> {
    let sim = sim_handle(&state)?;
    let mut text = match req.layout.as_str() {
        "resident" => fixtures::resident_text(req.seed),
        "hk_macao_taiwan" => fixtures::hk_macao_taiwan_text(req.seed),
        "foreign_2017" => fixtures::foreign_2017_text(req.seed),
        "foreign_2023" => fixtures::foreign_2023_text(req.seed),
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_layout",
                format!("no card layout {other:?}"),
            ));
        }
    };
    if let Some(b) = &req.birth_date {
        let parsed = b
            .split('-')
            .map(|p| p.parse::<i32>().ok())
            .collect::<Option<Vec<_>>>()
            .and_then(|v| match v[..] {
                [y, m, d] => CardDate::new(y, m as u8, d as u8),
                _ => None,
            })
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_date",
                    "birth_date must be YYYY-MM-DD",
                )
            })?;
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
    state.events.device("idcard", true);
    Ok(StatusCode::NO_CONTENT)
}

async fn sim_remove(State(state): State<AppState>) -> Result<StatusCode, ApiError> {
    sim_handle(&state)?.remove_card();
    state.events.device("idcard", false);
    Ok(StatusCode::NO_CONTENT)
}

/// Read the card on the reader, with a bound on the whole operation.
async fn read_card(state: &AppState) -> Result<drivers::CardRead, ApiError> {
    let mut reader = state.devices.idcard.lock().await;
    Ok(
        tokio::time::timeout(Duration::from_secs(20), reader.read_card())
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "device_timeout",
                    "the ID-card reader did not answer",
                )
            })?
            .map_err(IdCardStepError::from)?,
    )
}

/// `POST /v1/sessions/{id}/guardian`: a guardian places their own ID card
/// before a minor's. They must be an adult; their consent for the minor is
/// recorded (audited, with their keyed digest only) and held in the session's
/// memory until the minor's card is read; their name and ID number then go
/// with the minor's record as the catalog's guardian items.
async fn guardian(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&state, &headers, &id)?;
    let st = state.clone();
    let s = session.clone();
    blocking(move || {
        let conn = st.store.conn()?;
        let ledger = crate::privacy::consent::Ledger {
            catalog: &st.catalog,
            session: &s.id,
        };
        for item in ["guardian_name", "guardian_id_number"] {
            ledger.require(&conn, &s.service, None, item)?;
        }
        Ok(())
    })
    .await?;
    let text = read_card(&state).await?.text;
    let today = time::OffsetDateTime::now_utc().date();
    let birth = text.birth_date().date();
    if crate::privacy::minors::age_on(birth, today) < 18 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "guardian_not_adult",
            "a guardian must be an adult",
        ));
    }
    let items = idcard::guardian_items(&text);
    let vault = state.keys.vault.clone();
    let id_item = items[1].clone();
    let st = state.clone();
    let sid = session.id.clone();
    let digest = blocking(move || {
        let digest = crate::keys::KeyVault::keyed_digest(
            vault.as_ref(),
            "subject",
            id_item.expose().as_bytes(),
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "token_unavailable",
                e.to_string(),
            )
        })?;
        let mut conn = st.store.conn()?;
        crate::audit::record(
            &mut conn,
            now_ms(),
            &crate::audit::AuditEvent {
                actor: Actor::Applicant(sid),
                action: "consent.guardian",
                subject: Some(digest),
                detail: serde_json::json!({ "policy": st.catalog.policy_version }),
            },
        )?;
        Ok(digest)
    })
    .await?;
    let masked_name = items[0].masked(&state.catalog);
    state.memory.put_guardian(
        &session.id,
        crate::session::Guardian {
            verified: crate::privacy::minors::VerifiedGuardian {
                birth,
                subject_digest: digest,
                consented: true,
            },
            items,
        },
    );
    tracing::info!(session = %session.id, "guardian verified and consented");
    Ok(Json(
        serde_json::json!({ "verified": true, "guardian": { "name": masked_name } }),
    ))
}
