//! Structured logs through `tracing`: human-readable or JSON lines on stderr,
//! level from `RUST_LOG` or the configuration. Personal data never reaches a log
//! call: personal values are newtypes whose `Debug`/`Display` mask them.

use kiosk_config::LogFormat;
use tracing_subscriber::EnvFilter;

/// Install the global subscriber. `RUST_LOG` wins over `level` from the config.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    // `try_init` fails only if a subscriber is already set (tests): keep that one.
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
