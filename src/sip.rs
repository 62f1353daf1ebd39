//! SIP messages for probes and the responder. (in progress)
