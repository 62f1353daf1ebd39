//! siprace: Happy Eyeballs for SIP.
//!
//! The crate is laid out as the pipeline a dial runs through:
//!
//! 1. [`target`]: parse what the user asked for (`sip:`/`sips:` URI or `host[:port]`).
//! 2. [`locate`]: RFC 3263 location (NAPTR → SRV → AAAA and A) as a pure
//!    (sans-IO) machine that says which query to send when and hands on
//!    each answer the moment it arrives.
//! 3. [`race`]: a pure Happy Eyeballs engine (RFC 8305 / HEv3) that
//!    decides which endpoint to try when.
//! 4. [`connect`]: the attempts themselves, one per transport (UDP probe, TCP...).
//! 5. [`report`]: the timeline of a dial, for humans and as JSON.
//!
//! [`dial_machine`] composes location and the race into one pure machine
//! per dial; [`dialer`] is the driver that performs its actions, with
//! [`dns`] for the lookups (and the answers kept for their TTL) and
//! [`network`] for which network the dial is on (history is kept per
//! network).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use siprace::{Dialer, DialerConfig};
//! let dialer = Dialer::new(DialerConfig::default())?;
//! let dial = dialer.dial("sip:example.test").await?;
//! println!("connected to {} in {:?}", dial.endpoint, dial.report.total);
//! # Ok(()) }
//! ```

// The library's public items are documented; the tools' modules below are
// exempt (see there).
#![warn(missing_docs)]

mod civil_date;
pub mod connect;
pub mod dial_machine;
pub mod dialer;
pub mod dns;
pub mod endpoint;
pub mod history_file;
pub mod keep;
pub mod locate;
pub mod network;
pub mod outbound;
pub mod race;
pub mod report;
pub mod sip;
mod socket;
pub mod target;
mod task_set;

// The command-line tool's parts (feature `tools`, on by default): public so
// that the `siprace` binary and the integration tests can drive them, but
// they are the tool's internals, not the dialing library's API, and do not
// follow its documentation and stability rules. Build with
// `default-features = false` to leave them out.
#[allow(missing_docs)]
#[cfg(feature = "tools")]
pub mod bench;
#[allow(missing_docs)]
#[cfg(feature = "tools")]
pub mod lab;
#[allow(missing_docs)]
#[cfg(feature = "tools")]
pub mod responder;

// What a user of the dialer needs, at the crate root.
pub use connect::{ConnectConfig, Connection, ProbeResponse};
pub use dialer::{Dial, DialError, Dialer, DialerConfig};
pub use endpoint::{AttemptError, ConfigError, Endpoint, ErrorClass, Family, Transport};
pub use locate::LocateConfig;
pub use race::history::{History, NetworkId};
pub use race::strategy::Strategy;
pub use race::RaceConfig;
pub use report::Report;
pub use target::Target;
