//! Fuzz target `gateway_messages` (owned by b3iq-protocol's `gateway` module): the tunnel
//! challenge and hello, the request ticket and the public readiness payload must refuse bad
//! bytes with an error, never panic, as JSON and as the hex header values the node and the
//! gateway read; whatever parses re-serializes to itself, and the checks run on it without
//! panicking. Also the verification messages (`b3iq_protocol::verification`): an attestation
//! opening (binary and hex) re-encodes byte-identically, and verifier jobs and answers (JSON)
//! open without panicking.
#![no_main]

use b3iq_core::enrollment::Nonce;
use b3iq_core::NodeKey;
use b3iq_protocol::gateway::{NetworkReadiness, RequestTicket, TunnelChallenge, TunnelHello};
use b3iq_protocol::messages::Audience;
use b3iq_protocol::verification::{OpenedGeneration, VerifyAnswer, VerifyJob};
use libfuzzer_sys::fuzz_target;

fn roundtrip<T>(data: &[u8]) -> Option<T>
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let v = serde_json::from_slice::<T>(data).ok()?;
    let again: T = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
    assert_eq!(v, again);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<TunnelChallenge>(data);
    roundtrip::<NetworkReadiness>(data);
    let gw = NodeKey::from_seed([7; 32]);
    let challenge = TunnelChallenge { gateway_id: Audience::new("gw-fuzz").unwrap(), nonce: Nonce([1; 32]), issued_at_ms: 0, expires_at_ms: u64::MAX, ticket_key: gw.public() };
    let check_hello = |h: &TunnelHello| {
        let _ = h.verify(&challenge, 1_000, 60_000);
        let _ = h.signing_message();
    };
    let check_ticket = |t: &RequestTicket| {
        let _ = t.verify_for(&gw.public(), &challenge.gateway_id, &t.node_id, 1_000, 30_000);
        let _ = t.signing_message();
    };
    if let Some(h) = roundtrip::<TunnelHello>(data) {
        check_hello(&h);
        assert_eq!(TunnelHello::from_header(&h.to_header()).ok(), Some(h));
    }
    if let Some(t) = roundtrip::<RequestTicket>(data) {
        check_ticket(&t);
        assert_eq!(RequestTicket::from_header(&t.to_header()).ok(), Some(t));
    }
    if let Ok(o) = OpenedGeneration::decode(data) {
        assert_eq!(o.encode(), data, "an accepted opening re-encodes byte-identically");
        let _ = o.attestation.body().opens(&o.prompt, &o.completion);
        let _ = o.held_bytes();
    }
    if let Some(j) = roundtrip::<VerifyJob>(data) {
        let _ = j.open();
    }
    if let Some(a) = roundtrip::<VerifyAnswer>(data) {
        let _ = a.verdict();
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(o) = OpenedGeneration::from_hex(s) {
            let again = OpenedGeneration::from_hex(&o.to_hex()).map(|x| x.encode()).ok();
            assert_eq!(again, Some(o.encode()));
        }
        if let Ok(h) = TunnelHello::from_header(s) {
            check_hello(&h);
        }
        if let Ok(t) = RequestTicket::from_header(s) {
            check_ticket(&t);
        }
    }
});
