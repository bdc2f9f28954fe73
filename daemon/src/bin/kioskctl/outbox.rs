//! `kioskctl outbox fill --data-dir DIR --count N`: write N synthetic minimized applicant
//! records into the kiosk's outbox (through the real minimizer, sealed to HQ's record key),
//! for tests and benchmarks. Safe while kioskd runs (SQLite WAL). Exit 2 on any error.

use std::path::PathBuf;
use std::process::ExitCode;

use kioskd::store::Store;
use kioskd::sync::synthetic::{self, HqFieldSealer};
use records::envelope::Suite;

#[derive(clap::Subcommand)]
pub enum OutboxCommand {
    /// Add N synthetic applicants (obviously fake values) to the outbox.
    Fill {
        /// kioskd's data directory (holding kiosk.sqlite; kioskd must have started once).
        #[arg(long)]
        data_dir: PathBuf,
        /// Store file name inside the data directory.
        #[arg(long, default_value = "kiosk.sqlite")]
        store: PathBuf,
        /// How many applicants.
        #[arg(long)]
        count: u64,
        /// Kiosk id, used to make the synthetic values distinct per kiosk.
        #[arg(long, default_value = "kiosk")]
        kiosk_id: String,
        /// HQ's record public keys (JSON); default: the local HQ's under the data directory.
        #[arg(long)]
        record_key: Option<PathBuf>,
        /// Field sealing suite: gm or nist.
        #[arg(long, default_value = "gm")]
        suite: String,
        /// Number of the first applicant (to continue an earlier fill).
        #[arg(long, default_value_t = 0)]
        first: u64,
    },
}

pub fn run(cmd: OutboxCommand) -> ExitCode {
    match fill(cmd) {
        Ok(msg) => {
            println!("{msg}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kioskctl outbox fill: {e}");
            ExitCode::from(2)
        }
    }
}

fn fill(cmd: OutboxCommand) -> Result<String, String> {
    let OutboxCommand::Fill {
        data_dir,
        store,
        count,
        kiosk_id,
        record_key,
        suite,
        first,
    } = cmd;
    let path = data_dir.join(store);
    if !path.is_file() {
        return Err(format!(
            "{}: no such store (start kioskd once)",
            path.display()
        ));
    }
    let key_path =
        record_key.unwrap_or_else(|| data_dir.join("hq-local/pki/hq-record-public.json"));
    let text = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("HQ record key {}: {e}", key_path.display()))?;
    let recipient = records::public_keys::recipient_public_from_json(&text)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let suite = match suite.as_str() {
        "gm" => Suite::Gm,
        "nist" => Suite::Nist,
        other => return Err(format!("unknown suite {other:?} (gm or nist)")),
    };
    let store = Store::open(&path).map_err(|e| e.to_string())?;
    let catalog = kiosk_config::Catalog::embedded();
    let sealer = HqFieldSealer { suite, recipient };
    let last = synthetic::fill(&store, &catalog, &sealer, &kiosk_id, first, count, 500)
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "{count} synthetic applicants in the outbox (last seq {last})"
    ))
}
