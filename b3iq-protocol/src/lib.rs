//! b3iq-protocol (being built).
