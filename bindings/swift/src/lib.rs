//! B3IQ swift binding (being built).
