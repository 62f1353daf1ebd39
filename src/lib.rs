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

pub mod connect;
pub mod dial_machine;
pub mod dialer;
pub mod dns;
pub mod endpoint;
pub mod history_file;
pub mod locate;
pub mod network;
pub mod race;
pub mod report;
pub mod sip;
mod socket;
pub mod target;
mod task_set;

#[cfg(feature = "tools")]
pub mod bench;
#[cfg(feature = "tools")]
pub mod lab;
#[cfg(feature = "tools")]
pub mod responder;

pub use dialer::{Dial, DialError, Dialer, DialerConfig};
pub use endpoint::{AttemptError, Endpoint, ErrorClass, Family, Transport};
pub use target::Target;
