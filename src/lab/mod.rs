//! The lab: network namespaces for client, router, SIP server and DNS, wired with
//! veths on documentation prefixes, with faults per family and per server address
//! (blackhole, reject, delay, loss) applied in the router.
//!
//! [`topology`] is the single source of the topology; `siprace lab ...` (in the binary)
//! and `netns-scripts/*.sh` are thin layers over it.

pub mod dns;
pub mod error;
pub mod impair;
pub mod lock;
pub mod names;
pub mod servers;
pub mod shaper;
pub mod state;
pub mod sys;
pub mod topology;

pub use error::LabError;
pub use impair::{impair, Fault};
pub use names::Role;
pub use state::{Direction, Filter, Impairment};
pub use topology::{
    down, list, spawn_in, status, up, Lab, LabAddrs, LabConfig, LabStatus, Prefix, ShaperLaunch,
};
