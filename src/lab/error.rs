//! Errors of the lab.

use std::io;

/// Everything that can go wrong while building, faulting or tearing down a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(
        "the lab needs root (network namespaces, veth, nftables): run it with sudo or as root"
    )]
    NotRoot,
    #[error("`{0}` not found in PATH (root's PATH needs /usr/sbin): install it (Debian: apt-get install {1})")]
    MissingTool(&'static str, &'static str),
    #[error(
        "invalid lab name {0:?}: it takes 1-16 characters from [a-z0-9-], not starting with '-'"
    )]
    InvalidName(String),
    #[error("lab {0:?} already exists (namespace or state left over): run `siprace lab down --name {0}` first")]
    Exists(String),
    #[error(
        "lab {name:?} is busy: {holder} holds it; wait for it to finish, or pick another lab name"
    )]
    InUse { name: String, holder: String },
    #[error("lab {0:?} is not up")]
    NotUp(String),
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Command {
        cmd: String,
        status: String,
        stderr: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot find the siprace binary to run the shaper: set SIPRACE_BIN or LabConfig::shaper"
    )]
    NoShaperBinary,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl LabError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> LabError {
        let context = context.into();
        move |source| LabError::Io { context, source }
    }
}
