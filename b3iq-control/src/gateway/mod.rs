//! The hosted gateway's side of the control plane: developers call its OpenAI-compatible `/v1`
//! with `b3iq_gateway_` keys that spend an organisation's credits.

pub mod credits;
