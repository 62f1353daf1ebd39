//! RFC 3263 location. (in progress)
