//! Lab DNS server. (in progress)
