//! `kioskctl audit verify --data-dir DIR`: check the kiosk's audit log offline.
//! Exit 0 when intact, 1 naming the first bad entry, 2 when the log cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use kioskd::audit;
use rusqlite::{Connection, OpenFlags};

#[derive(clap::Subcommand)]
pub enum AuditCommand {
    /// Verify every entry, the Merkle tree and the signed checkpoints.
    Verify {
        /// kioskd's data directory (holding kiosk.sqlite).
        #[arg(long)]
        data_dir: PathBuf,
        /// Store file name inside the data directory.
        #[arg(long, default_value = "kiosk.sqlite")]
        store: PathBuf,
    },
}

pub fn run(cmd: AuditCommand) -> ExitCode {
    match cmd {
        AuditCommand::Verify { data_dir, store } => verify(data_dir.join(store)),
    }
}

fn verify(path: PathBuf) -> ExitCode {
    if !path.is_file() {
        eprintln!("kioskctl audit verify: {}: no such store", path.display());
        return ExitCode::from(2);
    }
    let conn = match Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("kioskctl audit verify: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let key = match audit::device_key(&conn) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("kioskctl audit verify: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let (name, verifier) = match &key {
        Some((n, v)) => (n.as_str(), Some(v)),
        None => ("", None),
    };
    match audit::verify(&conn, name, verifier) {
        Ok(report) => match report.tamper {
            None => {
                println!(
                    "audit log intact: {} entries, {} checkpoints{}, root {}",
                    report.entries,
                    report.checkpoints,
                    if verifier.is_some() {
                        " (signatures verified)"
                    } else {
                        " (no device key recorded: signatures not checked)"
                    },
                    hex::encode(report.root)
                );
                ExitCode::SUCCESS
            }
            Some(t) => {
                println!("audit log TAMPERED: {t}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("kioskctl audit verify: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}
