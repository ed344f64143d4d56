//! `log` backend: `[   seconds.micros] LEVEL target: message` on serial and
//! on the screen, where the line takes its level's colour.

use log::{Level, LevelFilter, Log, Metadata, Record};

use super::output;
use crate::arch::x86_64::tsc;

struct KernelLogger;

static LOGGER: KernelLogger = KernelLogger;

impl Log for KernelLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let micros = tsc::uptime_micros();
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN ",
            Level::Info => "INFO ",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        output::print(
            record.level().into(),
            format_args!(
                "[{:5}.{:06}] {level} {}: {}\n",
                micros / 1_000_000,
                micros % 1_000_000,
                record
                    .target()
                    .strip_prefix("kernel::")
                    .unwrap_or(record.target()),
                record.args()
            ),
        );
    }

    fn flush(&self) {}
}

/// Installs the logger; `level` is the most verbose level printed.
pub fn init(level: LevelFilter) {
    // A second call keeps the first logger; nothing to report.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
