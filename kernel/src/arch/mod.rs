//! Architecture support. Only x86_64 exists; the module boundary keeps
//! port I/O, descriptor tables and inline assembly out of the rest of the kernel.

pub mod x86_64;
