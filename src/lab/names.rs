//! The names of a lab's parts: its namespaces ([`Role`], `sr-<name>-<role>`),
//! the rule for a lab's name, and where it keeps its state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::LabError;

/// Where a lab keeps its state (pids, faults, shaper config): `/run/siprace-lab/<name>/`.
pub const STATE_ROOT: &str = "/run/siprace-lab";
/// Prefix of every namespace: `sr-<name>-<role>`.
pub const NS_PREFIX: &str = "sr-";

/// A namespace of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Client,
    Router,
    Server,
    Dns,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Client, Role::Router, Role::Server, Role::Dns];

    /// The short suffix used in the namespace name.
    pub fn short(self) -> &'static str {
        match self {
            Role::Client => "cli",
            Role::Router => "rtr",
            Role::Server => "srv",
            Role::Dns => "dns",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = LabError;
    fn from_str(s: &str) -> Result<Role, LabError> {
        match s.to_ascii_lowercase().as_str() {
            "cli" | "client" => Ok(Role::Client),
            "rtr" | "router" => Ok(Role::Router),
            "srv" | "server" => Ok(Role::Server),
            "dns" => Ok(Role::Dns),
            _ => Err(LabError::Invalid(format!(
                "unknown role {s:?} (client|router|server|dns)"
            ))),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short())
    }
}

/// The namespace of `role` in lab `name`: `sr-<name>-<role>`.
pub fn ns_name(name: &str, role: Role) -> String {
    format!("{NS_PREFIX}{name}-{}", role.short())
}

/// Where lab `name` keeps its state: `/run/siprace-lab/<name>/`.
pub fn state_dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

/// Checks a lab name: 1-16 characters of `[a-z0-9-]`, not starting with `-`
/// (it goes into namespace and interface names).
pub fn check_name(name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 16
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidName(name.to_string()))
    }
}
