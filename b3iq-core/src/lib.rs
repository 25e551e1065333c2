//! b3iq-core (being built).
