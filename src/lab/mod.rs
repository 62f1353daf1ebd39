//! The lab.
pub mod dns;
