//! [`PcpConfig`]: how much each CPU's cache holds and moves at a time.

use super::lists::{PCP_CAPACITY, PCP_ORDERS};

/// High-water marks and batch sizes of the per-CPU lists, per order.
///
/// `high[k]`: most frames of order `k` one CPU keeps (at most
/// [`PCP_CAPACITY`]); `batch[k]`: frames moved per refill or drain.
/// [`PcpConfig::DEFAULT`] keeps up to 96 single pages (moved 32 at a time)
/// and 24 blocks of orders 1..=3 (moved 8 at a time): at most
/// 96 + 24 * (2 + 4 + 8) = 432 pages (1.7 MiB) per CPU.
///
/// ```
/// use framekeep::PcpConfig;
/// let c = PcpConfig { high: [200, 8, 8, 0], batch: [0, 4, 4, 4] }.validated();
/// assert_eq!(c.high[0], 128);        // capped at PCP_CAPACITY
/// assert_eq!(c.batch[0], 1);         // at least 1
/// assert_eq!((c.high[3], c.batch[3]), (0, 1)); // high 0: order 3 is not cached
/// ```
#[derive(Copy, Clone, PartialEq, Eq, Debug)]
pub struct PcpConfig {
    /// Most frames kept per CPU, per order (0 disables caching of that order).
    pub high: [u16; PCP_ORDERS],
    /// Frames moved per refill/drain, per order.
    pub batch: [u16; PCP_ORDERS],
}

impl PcpConfig {
    /// The default: `high = [96, 24, 24, 24]`, `batch = [32, 8, 8, 8]`.
    ///
    /// ```
    /// assert_eq!(framekeep::PcpConfig::DEFAULT.batch[0], 32);
    /// ```
    pub const DEFAULT: PcpConfig = PcpConfig {
        high: [96, 24, 24, 24],
        batch: [32, 8, 8, 8],
    };

    /// `high` capped at [`PCP_CAPACITY`], `batch` clamped to `1..=max(high, 1)`.
    ///
    /// ```
    /// let c = framekeep::PcpConfig { high: [4; 4], batch: [9; 4] }.validated();
    /// assert_eq!(c.batch, [4; 4]);
    /// ```
    pub const fn validated(mut self) -> Self {
        let mut order = 0;
        while order < PCP_ORDERS {
            if self.high[order] as usize > PCP_CAPACITY {
                self.high[order] = PCP_CAPACITY as u16;
            }
            let max = if self.high[order] == 0 {
                1
            } else {
                self.high[order]
            };
            if self.batch[order] == 0 {
                self.batch[order] = 1;
            }
            if self.batch[order] > max {
                self.batch[order] = max;
            }
            order += 1;
        }
        self
    }
}

impl Default for PcpConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}
