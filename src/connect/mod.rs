//! Attempts per transport. (in progress)
