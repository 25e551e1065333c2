//! Fuzz target `protocol_messages` (owned by b3iq-protocol): every node <-> control-plane JSON
//! message type, the payout API (payout address, account payouts), the registration API
//! (request, grant, contracts) and the public claim file must refuse bad bytes with an error, never panic, and
//! whatever parses must re-serialize and re-parse to the same value.
#![no_main]

use b3iq_protocol::messages::{
    EnrollmentAccepted, EnrollmentChallenge, EnrollmentRequest, HeartbeatAck, HeartbeatRequest, JobPoll,
    JobPollResponse, JobResultAck, JobResultReport, ReceiptUpload, ReceiptUploadAck,
};
use b3iq_protocol::payout_api::{AccountPayouts, PayoutAddressAck, PayoutAddressRequest};
use b3iq_protocol::registration_api::{NetworkContracts, RegistrationGrant, RegistrationRequest};
use b3iq_protocol::settlement::ClaimFile;
use libfuzzer_sys::fuzz_target;

fn roundtrip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    if let Ok(v) = serde_json::from_slice::<T>(data) {
        let again: T = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(v, again);
    }
}

fuzz_target!(|data: &[u8]| {
    roundtrip::<EnrollmentChallenge>(data);
    roundtrip::<PayoutAddressRequest>(data);
    roundtrip::<PayoutAddressAck>(data);
    roundtrip::<AccountPayouts>(data);
    if let Ok(r) = serde_json::from_slice::<PayoutAddressRequest>(data) {
        let _ = r.verify();
    }
    roundtrip::<RegistrationRequest>(data);
    roundtrip::<RegistrationGrant>(data);
    roundtrip::<NetworkContracts>(data);
    if let Ok(r) = serde_json::from_slice::<RegistrationRequest>(data) {
        let _ = r.verify();
    }
    roundtrip::<EnrollmentRequest>(data);
    roundtrip::<EnrollmentAccepted>(data);
    roundtrip::<HeartbeatRequest>(data);
    roundtrip::<HeartbeatAck>(data);
    roundtrip::<JobPoll>(data);
    roundtrip::<JobPollResponse>(data);
    roundtrip::<JobResultReport>(data);
    roundtrip::<JobResultAck>(data);
    roundtrip::<ReceiptUpload>(data);
    roundtrip::<ReceiptUploadAck>(data);
    roundtrip::<ClaimFile>(data);
    if let Ok(p) = serde_json::from_slice::<JobPoll>(data) {
        let _ = p.verify();
    }
    if let Ok(r) = serde_json::from_slice::<JobResultReport>(data) {
        let _ = r.verify();
    }
    if let Ok(u) = serde_json::from_slice::<ReceiptUpload>(data) {
        let _ = u.verify();
    }
});
