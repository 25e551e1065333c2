//! b3iq-runtime (being built).
