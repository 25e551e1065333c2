//! b3iq-host (being built).
