//! Every CPU at work: the application processors are found in the MADT and
//! started through the real-mode trampoline ([`start`]), run the kernel's
//! tables and idle until given a job ([`ap`]), and take jobs from the boot
//! CPU ([`job`]).

pub mod ap;
#[cfg_attr(
    not(any(test, feature = "bench")),
    expect(dead_code, reason = "only the tests and benchmarks give CPUs jobs")
)]
pub mod job;
#[cfg(test)]
mod shootdown_tests;
pub mod start;
#[cfg(test)]
mod stress;
#[cfg(test)]
mod tests;

pub use start::start;
