//! B3IQ python binding (being built).
