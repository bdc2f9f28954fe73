//! Structured logs through `tracing`: to journald (`tracing-journald`, one structured entry
//! per event, its fields as journal fields) when systemd connected stderr to the journal,
//! else human-readable or JSON lines on stderr; level from `RUST_LOG` or the configuration.
//! Personal data never reaches a log call, whichever the sink: personal values are newtypes
//! whose `Debug`/`Display` mask them.

use kiosk_config::LogFormat;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Where the logs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// The systemd journal, natively.
    Journald,
    /// stderr, in the configured format.
    Stderr(LogFormat),
}

/// journald when `JOURNAL_STREAM` (`device:inode`, set by systemd for a service whose stderr
/// is the journal) names the file stderr is now (`stderr_id`); else stderr. A kioskd started
/// from a shell of a service, or with stderr redirected, inherits `JOURNAL_STREAM` without
/// writing to the journal: it keeps the stderr logs.
pub fn choose(
    journal_stream: Option<&str>,
    stderr_id: Option<(u64, u64)>,
    format: LogFormat,
) -> Sink {
    let named = journal_stream.and_then(|s| {
        let (dev, ino) = s.split_once(':')?;
        Some((dev.parse::<u64>().ok()?, ino.parse::<u64>().ok()?))
    });
    match (named, stderr_id) {
        (Some(named), Some(actual)) if named == actual => Sink::Journald,
        _ => Sink::Stderr(format),
    }
}

/// The (device, inode) of this process's stderr.
fn stderr_id() -> Option<(u64, u64)> {
    let stat = nix::sys::stat::fstat(std::io::stderr()).ok()?;
    Some((stat.st_dev as u64, stat.st_ino as u64))
}

fn filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Install the global subscriber. `RUST_LOG` wins over `level` from the config.
pub fn init(level: &str, format: LogFormat) {
    let journal_stream = std::env::var("JOURNAL_STREAM").ok();
    if choose(journal_stream.as_deref(), stderr_id(), format) == Sink::Journald {
        match tracing_journald::layer() {
            Ok(journald) => {
                let journald = journald.with_syslog_identifier("kioskd".into());
                // `try_init` fails only if a subscriber is already set (tests): keep that one.
                let _ = tracing_subscriber::registry()
                    .with(filter(level))
                    .with(journald)
                    .try_init();
                return;
            }
            // No journal socket after all: stderr still reaches the journal, as text.
            Err(e) => eprintln!("kioskd: journald unavailable ({e}); logging to stderr"),
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under systemd (stderr is the journal) the logs go to journald natively; anywhere else
    /// — no `JOURNAL_STREAM`, an inherited one that names another file, a malformed one —
    /// they stay on stderr in the configured format, which the tests parse.
    #[test]
    fn the_journal_is_used_only_when_journal_stream_names_stderr() {
        let stderr = Some((64770, 123456));
        assert_eq!(
            choose(Some("64770:123456"), stderr, LogFormat::Json),
            Sink::Journald
        );
        assert_eq!(
            choose(None, stderr, LogFormat::Json),
            Sink::Stderr(LogFormat::Json)
        );
        assert_eq!(
            choose(Some("64770:999"), stderr, LogFormat::Human),
            Sink::Stderr(LogFormat::Human)
        );
        assert_eq!(
            choose(Some("garbage"), stderr, LogFormat::Json),
            Sink::Stderr(LogFormat::Json)
        );
        assert_eq!(
            choose(Some("64770:123456"), None, LogFormat::Json),
            Sink::Stderr(LogFormat::Json)
        );
    }

    /// This very process: its stderr is not the journal unless `JOURNAL_STREAM` says so.
    #[test]
    fn journal_stream_is_compared_with_the_real_stderr() {
        let (dev, ino) = stderr_id().expect("stderr has an inode");
        assert_eq!(
            choose(Some(&format!("{dev}:{ino}")), stderr_id(), LogFormat::Json),
            Sink::Journald
        );
        assert_eq!(
            choose(
                Some(&format!("{dev}:{}", ino + 1)),
                stderr_id(),
                LogFormat::Json
            ),
            Sink::Stderr(LogFormat::Json)
        );
    }
}
