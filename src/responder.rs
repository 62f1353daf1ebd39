//! SIP responder. (in progress)
