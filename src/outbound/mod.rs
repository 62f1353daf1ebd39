//! SIP Outbound (RFC 5626): the pure parts of keeping a registration
//! reachable over one flow per address family.
//!
//! - [`flows`]: the sans-IO machine that owns every timing rule (keep-alive
//!   intervals, pong timeout, STUN retransmission, back-off, refresh) and
//!   decides which family each flow is raced in;
//! - [`register`]: the REGISTER of a flow and what its answer says;
//! - [`digest`]: digest authentication (RFC 8760: MD5, SHA-256, SHA-512/256);
//! - [`stun`]: the STUN Binding keep-alive of UDP flows (RFC 5389).
//!
//! The driver that runs these over real connections (the connection table's
//! handles) is `siprace register`'s job.

pub mod digest;
pub mod flows;
pub mod register;
pub mod stun;
