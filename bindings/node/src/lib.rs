//! B3IQ node binding (being built).
