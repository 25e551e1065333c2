//! Gateway keys and credits on both stores: a real SQLite file and a real throwaway Postgres
//! (`support/pg.rs`), through `ControlPlane` (the API the gateway calls). Keys are shown once
//! and hashed at rest; holds never overdraw under concurrency; settlement and release are
//! idempotent; the ledger sums to zero and matches the holds; spend and rate limits refuse.

mod support;

use std::path::Path;
use std::sync::Arc;

use b3iq_control::gateway::credits::{HoldState, HOLD_MAX_AGE_MS};
use b3iq_control::store::postgres::PostgresStore;
use b3iq_control::store::sqlite::SqliteStore;
use b3iq_control::store::{ControlStore, Refusal, DAY_MS};
use b3iq_control::{ControlConfig, ControlError, ControlPlane};
use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::{NodeId, NodeKey};
use b3iq_protocol::messages::Audience;

/// A UTC midnight plus one hour, so "the next UTC day" is easy to reach.
const NOW: u64 = 20_000 * DAY_MS + 3_600_000;

fn plane(store: Arc<dyn ControlStore>) -> Arc<ControlPlane> {
    Arc::new(ControlPlane::new(store, ControlConfig::new(Audience::new("cp-credits").unwrap()), NodeKey::from_seed([99; 32])))
}

fn refusal<T: std::fmt::Debug>(r: Result<T, ControlError>) -> Refusal {
    match r {
        Err(ControlError::Refused(x)) => x,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn unauthorized<T: std::fmt::Debug>(r: Result<T, ControlError>) -> String {
    match r {
        Err(ControlError::Unauthorized(m)) => m,
        other => panic!("expected Unauthorized, got {other:?}"),
    }
}

fn node(i: u8) -> NodeId {
    NodeKey::from_seed([i; 32]).node_id()
}

fn receipt(i: u32) -> [u8; 32] {
    let mut r = [0u8; 32];
    r[..4].copy_from_slice(&i.to_be_bytes());
    r[31] = 0xee;
    r
}

async fn assert_ledger_ok(cp: &ControlPlane) {
    let c = cp.ledger_check().await.unwrap();
    assert!(c.ok(), "{c:#?}");
    assert_eq!(c.sum, 0);
}

/// Keys: shown once, hashed at rest, revocable only by their own organisation, refused when
/// revoked, malformed or of another credential kind. Returns every token made, so the caller
/// can look for them in the database.
async fn keys(cp: &ControlPlane) -> Vec<String> {
    let acme = cp.create_org("acme", NOW).await.unwrap();
    let globex = cp.create_org("globex", NOW).await.unwrap();
    let (k, token) = cp.create_gateway_key("acme", "ci runner", 120, Some(5_000_000), NOW).await.unwrap();
    assert!(token.starts_with("b3iq_gateway_") && Credential::parse_kind(&token, CredentialKind::Gateway).is_ok());
    assert!(k.id.starts_with("gk_") && k.id.len() == 19, "{}", k.id);
    assert_eq!((k.org_id.as_str(), k.rate_per_min, k.spend_limit_per_day, k.revoked_at_ms), (acme.id.as_str(), 120, Some(5_000_000), None));
    assert_eq!(cp.authenticate_gateway_key(&token, NOW).await.unwrap(), k);
    // Listing shows the key, never the token.
    let listed = cp.gateway_keys(&acme.id).await.unwrap();
    assert_eq!(listed, vec![k.clone()]);
    assert!(!serde_json::to_string(&listed).unwrap().contains(&token[13..]));
    assert!(cp.gateway_keys(&globex.id).await.unwrap().is_empty());

    // Bad input.
    assert!(matches!(cp.create_gateway_key("acme", "", 60, None, NOW).await, Err(ControlError::Invalid { field: "name", .. })));
    assert!(matches!(cp.create_gateway_key("acme", "x", 0, None, NOW).await, Err(ControlError::Invalid { field: "rate_per_min", .. })));
    assert!(matches!(cp.create_gateway_key("acme", "x", 60, Some(0), NOW).await, Err(ControlError::Invalid { field: "spend_limit_per_day", .. })));
    assert!(matches!(refusal(cp.create_gateway_key("nobody", "x", 60, None, NOW).await), Refusal::NotFound(_)));

    // Malformed, mistyped, other kinds, unknown.
    let m = unauthorized(cp.authenticate_gateway_key("b3iq_gateway_short", NOW).await);
    assert!(m.contains("gateway key") && m.contains("characters long"), "{m}");
    let mut typo = token.clone();
    let last = typo.pop().unwrap();
    typo.push(if last == 'a' { 'b' } else { 'a' });
    assert!(unauthorized(cp.authenticate_gateway_key(&typo, NOW).await).contains("checksum"));
    for kind in [CredentialKind::Local, CredentialKind::Enrollment, CredentialKind::Support] {
        let other = Credential::generate(kind, &mut rand::rngs::OsRng);
        let m = unauthorized(cp.authenticate_gateway_key(other.expose_secret(), NOW).await);
        assert!(m.contains("gateway") && m.contains(kind.as_str()), "{m}");
    }
    // A real enrollment token is not a gateway key either.
    let (_, enroll) = cp.create_enrollment_token("acme", 60_000, NOW).await.unwrap();
    unauthorized(cp.authenticate_gateway_key(&enroll, NOW).await);
    let stranger = Credential::generate(CredentialKind::Gateway, &mut rand::rngs::OsRng);
    assert!(unauthorized(cp.authenticate_gateway_key(stranger.expose_secret(), NOW).await).contains("unknown gateway key"));

    // Another organisation cannot revoke it (nor learn that it exists).
    let (k2, token2) = cp.create_gateway_key(&acme.id, "to revoke", 60, None, NOW + 1).await.unwrap();
    assert!(matches!(refusal(cp.revoke_gateway_key(&globex.id, &k2.id, NOW).await), Refusal::NotFound(_)));
    assert!(matches!(refusal(cp.revoke_gateway_key(&acme.id, "gk_0000000000000000", NOW).await), Refusal::NotFound(_)));
    cp.authenticate_gateway_key(&token2, NOW).await.unwrap();
    // Revoked: refused at once, for authentication and for holds of a key read before.
    cp.add_credits("acme", 1_000, "keys-topup", NOW).await.unwrap();
    cp.revoke_gateway_key(&acme.id, &k2.id, NOW + 2).await.unwrap();
    cp.revoke_gateway_key(&acme.id, &k2.id, NOW + 3).await.unwrap();
    assert!(unauthorized(cp.authenticate_gateway_key(&token2, NOW + 4).await).contains("revoked"));
    assert_eq!(refusal(cp.place_hold(&k2, 10, NOW + 3).await), Refusal::KeyRevoked, "a key read before its revocation");
    let listed = cp.gateway_keys(&acme.id).await.unwrap();
    assert_eq!(listed.iter().map(|k| (k.id.as_str(), k.revoked_at_ms)).collect::<Vec<_>>(), [(k.id.as_str(), None), (k2.id.as_str(), Some(NOW + 2))]);
    vec![token, token2]
}

/// Top-ups, refusals for missing credits, a single hold's settle / release paths, idempotency.
async fn holds(cp: &ControlPlane) {
    let org = cp.create_org("initech", NOW).await.unwrap();
    let (key, token) = cp.create_gateway_key("initech", "app", 1_000, None, NOW).await.unwrap();
    let key_read = cp.authenticate_gateway_key(&token, NOW).await.unwrap();
    assert_eq!(key_read, key);

    // No credits yet.
    assert_eq!(refusal(cp.place_hold(&key, 1, NOW).await), Refusal::InsufficientCredits { available: 0, needed: 1 });
    assert!(matches!(cp.add_credits("initech", 0, "r0", NOW).await, Err(ControlError::Invalid { .. })));
    assert!(matches!(cp.add_credits("initech", 10, "", NOW).await, Err(ControlError::Invalid { field: "reference", .. })));
    assert!(matches!(refusal(cp.add_credits("nobody", 10, "r-nobody", NOW).await), Refusal::NotFound(_)));
    assert_eq!(cp.add_credits("initech", 1_000, "inv-1", NOW).await.unwrap(), 1_000);
    assert!(matches!(refusal(cp.add_credits("initech", 1_000, "inv-1", NOW).await), Refusal::Exists(_)), "a reference tops up once");
    assert_eq!(cp.add_credits(&org.id, 500, "inv-2", NOW).await.unwrap(), 1_500);
    assert_eq!(refusal(cp.place_hold(&key, 1_501, NOW).await), Refusal::InsufficientCredits { available: 1_500, needed: 1_501 });
    assert!(matches!(cp.place_hold(&key, 0, NOW).await, Err(ControlError::Invalid { .. })));

    // Hold, then settle with part of it: the rest comes back.
    let h = cp.place_hold(&key, 600, NOW).await.unwrap();
    assert_eq!((h.org_id.as_str(), h.key_id.as_str(), h.amount), (org.id.as_str(), key.id.as_str(), 600));
    let b = cp.credit_balance(&org.id).await.unwrap();
    assert_eq!((b.available, b.held, b.spent_total, b.topped_up_total), (900, 600, 0, 1_500));
    let n = node(7);
    assert!(matches!(cp.settle_hold(&h.id, 601, &n, &receipt(1), NOW).await, Err(ControlError::Invalid { field: "charge", .. })));
    assert!(cp.settle_hold(&h.id, 450, &n, &receipt(1), NOW + 10).await.unwrap());
    assert!(!cp.settle_hold(&h.id, 450, &n, &receipt(1), NOW + 11).await.unwrap(), "settling twice is a no-op");
    assert!(!cp.settle_hold(&h.id, 1, &n, &receipt(2), NOW + 11).await.unwrap(), "a second settlement changes nothing");
    assert!(!cp.release_hold(&h.id, NOW + 12).await.unwrap(), "a settled hold is not released");
    let b = cp.credit_balance(&org.id).await.unwrap();
    assert_eq!((b.available, b.held, b.spent_total), (1_050, 0, 450));
    assert_eq!(cp.node_earnings(&n).await.unwrap(), 450);
    let rec = cp.hold(&h.id).await.unwrap().unwrap();
    assert_eq!((rec.state, rec.charge, rec.node_id, rec.receipt_id, rec.closed_at_ms), (HoldState::Settled, Some(450), Some(n), Some(receipt(1)), Some(NOW + 10)));

    // Release: everything comes back; idempotent; settling it afterwards charges nothing.
    let h2 = cp.place_hold(&key, 1_000, NOW).await.unwrap();
    assert_eq!(cp.credit_balance(&org.id).await.unwrap().available, 50);
    assert!(cp.release_hold(&h2.id, NOW + 1).await.unwrap());
    assert!(!cp.release_hold(&h2.id, NOW + 2).await.unwrap());
    assert_eq!(refusal(cp.settle_hold(&h2.id, 10, &n, &receipt(3), NOW + 3).await), Refusal::HoldClosed("released"));
    assert_eq!(cp.credit_balance(&org.id).await.unwrap().available, 1_050);
    assert_eq!(cp.hold(&h2.id).await.unwrap().unwrap().state, HoldState::Released);

    // A receipt is charged once; a charge of zero returns everything.
    let h3 = cp.place_hold(&key, 100, NOW).await.unwrap();
    assert_eq!(refusal(cp.settle_hold(&h3.id, 10, &n, &receipt(1), NOW).await), Refusal::ReceiptCharged);
    assert_eq!(cp.hold(&h3.id).await.unwrap().unwrap().state, HoldState::Open, "the refused settlement changed nothing");
    assert!(cp.settle_hold(&h3.id, 0, &n, &receipt(4), NOW).await.unwrap());
    assert_eq!(cp.credit_balance(&org.id).await.unwrap().available, 1_050);
    assert!(matches!(refusal(cp.settle_hold(&[9; 16], 0, &n, &receipt(5), NOW).await), Refusal::NotFound(_)));
    assert!(matches!(refusal(cp.release_hold(&[9; 16], NOW).await), Refusal::NotFound(_)));

    // The organisation's ledger: newest first, each transaction balanced.
    let ledger = cp.credit_ledger(&org.id, 100).await.unwrap();
    let kinds: Vec<&str> = ledger.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["settle", "hold", "release", "hold", "settle", "hold", "topup", "topup"]);
    for e in &ledger {
        assert_eq!(e.rows.iter().map(|r| r.amount).sum::<i64>(), 0, "{e:?}");
        assert_eq!(e.org_id, org.id);
    }
    let settle = &ledger[4];
    assert_eq!(settle.node_id.as_deref(), Some(n.to_text().as_str()));
    assert_eq!(settle.receipt_id.as_deref(), Some(hex::encode(receipt(1)).as_str()));
    let rows: Vec<(&str, i64)> = settle.rows.iter().map(|r| (r.account.as_str(), r.amount)).collect();
    let (avail, held, earned) = (format!("org:{}:available", org.id), format!("org:{}:held", org.id), format!("node:{}:earned", n.to_text()));
    assert_eq!(rows, [(earned.as_str(), 450), (avail.as_str(), 150), (held.as_str(), -600)]);
    assert_eq!(ledger[7].reference, "inv-1");
    assert_eq!(cp.credit_ledger(&org.id, 2).await.unwrap().len(), 2);
    assert_ledger_ok(cp).await;
}

/// 200 holds at concurrency 16 against a balance that covers 100: exactly 100 succeed, no
/// balance goes negative; each is then settled with a charge at most its amount, concurrently.
async fn concurrent_holds(cp: Arc<ControlPlane>) {
    let org = cp.create_org("hooli", NOW).await.unwrap();
    let (key, _) = cp.create_gateway_key("hooli", "burst", 1_000, None, NOW).await.unwrap();
    const AMOUNT: u64 = 1_000;
    const AFFORDABLE: u64 = 100;
    cp.add_credits("hooli", AMOUNT * AFFORDABLE + AMOUNT / 2, "hooli-1", NOW).await.unwrap();
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..16 {
        let (cp, key, next) = (cp.clone(), key.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let (mut ok, mut refused) = (Vec::new(), 0u32);
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 200 {
                match cp.place_hold(&key, AMOUNT, NOW).await {
                    Ok(h) => ok.push(h),
                    Err(ControlError::Refused(Refusal::InsufficientCredits { needed, .. })) if needed == AMOUNT => refused += 1,
                    Err(e) => panic!("unexpected: {e:?}"),
                }
            }
            (ok, refused)
        }));
    }
    let (mut held, mut refused) = (Vec::new(), 0);
    for w in workers {
        let (ok, r) = w.await.unwrap();
        held.extend(ok);
        refused += r;
    }
    assert_eq!((held.len() as u64, refused), (AFFORDABLE, 100), "exactly the affordable number of holds succeed");
    let b = cp.credit_balance(&org.id).await.unwrap();
    assert_eq!((b.available, b.held), (AMOUNT / 2, AMOUNT * AFFORDABLE));
    assert_ledger_ok(&cp).await;

    // Settle each concurrently (charges vary, two nodes), and settle a few twice.
    let nodes = [node(21), node(22)];
    let held = Arc::new(held);
    let mut tasks = Vec::new();
    for w in 0..16usize {
        let (cp, held) = (cp.clone(), held.clone());
        tasks.push(tokio::spawn(async move {
            let mut charged = [0u64; 2];
            for (i, h) in held.iter().enumerate().filter(|(i, _)| i % 16 == w) {
                let charge = AMOUNT - (i as u64 * 37) % (AMOUNT + 1);
                assert!(cp.settle_hold(&h.id, charge, &nodes[i % 2], &receipt(1_000 + i as u32), NOW + 5).await.unwrap());
                charged[i % 2] += charge;
                if i % 10 == 0 {
                    assert!(!cp.settle_hold(&h.id, charge, &nodes[i % 2], &receipt(1_000 + i as u32), NOW + 6).await.unwrap());
                }
            }
            charged
        }));
    }
    let mut charged = [0u64; 2];
    for t in tasks {
        let c = t.await.unwrap();
        charged[0] += c[0];
        charged[1] += c[1];
    }
    let total = charged[0] + charged[1];
    assert!(total > 0 && total < AMOUNT * AFFORDABLE);
    assert_eq!(cp.node_earnings(&nodes[0]).await.unwrap(), charged[0]);
    assert_eq!(cp.node_earnings(&nodes[1]).await.unwrap(), charged[1]);
    let b = cp.credit_balance(&org.id).await.unwrap();
    assert_eq!((b.held, b.spent_total, b.available), (0, total, AMOUNT * AFFORDABLE + AMOUNT / 2 - total));
    assert_ledger_ok(&cp).await;

    // Racing settle and release of the same holds: each hold ends exactly one way.
    cp.add_credits("hooli", 64 * 10, "hooli-2", NOW).await.unwrap();
    let mut hs = Vec::new();
    for _ in 0..32 {
        hs.push(cp.place_hold(&key, 10, NOW).await.unwrap());
    }
    let mut racers = Vec::new();
    for (i, h) in hs.iter().enumerate() {
        for settle in [true, false] {
            let (cp, id) = (cp.clone(), h.id);
            racers.push(tokio::spawn(async move {
                if settle {
                    matches!(cp.settle_hold(&id, 4, &node(23), &receipt(5_000 + i as u32), NOW).await, Ok(true))
                } else {
                    matches!(cp.release_hold(&id, NOW).await, Ok(true))
                }
            }));
        }
    }
    let mut wins = Vec::new();
    for r in racers {
        wins.push(r.await.unwrap());
    }
    for pair in wins.chunks(2) {
        assert!(pair[0] ^ pair[1], "one of settle and release wins: {pair:?}");
    }
    assert_eq!(cp.node_earnings(&node(23)).await.unwrap(), 4 * wins.chunks(2).filter(|p| p[0]).count() as u64);
    assert_eq!(cp.credit_balance(&org.id).await.unwrap().held, 0);
    assert_ledger_ok(&cp).await;
}

/// The spend limit per key and UTC day counts settled charges and open holds; the rate limit
/// refuses past the key's requests per minute with a retry hint; stale holds are swept.
async fn limits_and_sweeper(cp: &ControlPlane) {
    let org = cp.create_org("umbrella", NOW).await.unwrap();
    cp.add_credits("umbrella", 100_000, "umb-1", NOW).await.unwrap();
    let (key, _) = cp.create_gateway_key("umbrella", "capped", 1_000, Some(500), NOW).await.unwrap();
    let a = cp.place_hold(&key, 200, NOW).await.unwrap();
    let b_hold = cp.place_hold(&key, 200, NOW).await.unwrap();
    assert_eq!(refusal(cp.place_hold(&key, 200, NOW).await), Refusal::SpendLimit { limit: 500, used: 400, needed: 200 });
    // Settling for less frees the rest of the day's limit.
    assert!(cp.settle_hold(&a.id, 50, &node(31), &receipt(9_000), NOW).await.unwrap());
    let c = cp.place_hold(&key, 250, NOW).await.unwrap();
    assert!(matches!(refusal(cp.place_hold(&key, 1, NOW).await), Refusal::SpendLimit { used: 500, .. }));
    // Releasing frees it too; another key of the same organisation has its own limit.
    assert!(cp.release_hold(&c.id, NOW).await.unwrap());
    cp.place_hold(&key, 250, NOW).await.unwrap();
    let (other, _) = cp.create_gateway_key("umbrella", "uncapped", 1_000, None, NOW).await.unwrap();
    cp.place_hold(&other, 5_000, NOW).await.unwrap();
    // The next UTC day starts from zero (the day of the hold counts, not of the settlement).
    let tomorrow = (NOW / DAY_MS + 1) * DAY_MS;
    cp.place_hold(&key, 500, tomorrow).await.unwrap();
    assert!(matches!(refusal(cp.place_hold(&key, 1, tomorrow + 1).await), Refusal::SpendLimit { .. }));
    assert_ledger_ok(cp).await;

    // Rate: 3 per minute.
    let (slow, _) = cp.create_gateway_key("umbrella", "slow", 3, None, NOW).await.unwrap();
    for _ in 0..3 {
        cp.place_hold(&slow, 1, NOW).await.unwrap();
    }
    let r = cp.place_hold(&slow, 1, NOW).await;
    let e = r.unwrap_err();
    assert_eq!(e.retry_after_ms(), Some(20_000));
    assert_eq!(e.parts().0, axum::http::StatusCode::TOO_MANY_REQUESTS);
    assert!(e.to_string().contains("3 requests per minute"), "{e}");
    cp.place_hold(&slow, 1, NOW + 20_000).await.unwrap();

    // Sweeper: holds older than the bound are released (recorded as `expire`), younger stay.
    let before = cp.credit_balance(&org.id).await.unwrap();
    assert!(before.held > 0);
    assert_eq!(cp.expire_holds(HOLD_MAX_AGE_MS, NOW + HOLD_MAX_AGE_MS - 1).await.unwrap(), 0);
    let open_today = cp.expire_holds(HOLD_MAX_AGE_MS, NOW + HOLD_MAX_AGE_MS).await.unwrap();
    assert!(open_today >= 5, "{open_today}");
    let after = cp.credit_balance(&org.id).await.unwrap();
    assert_eq!(after.held, 500 + 1, "tomorrow's hold and the last rate-limited one are younger than the bound");
    assert_eq!(after.available, before.available + before.held - 501);
    assert_eq!(cp.expire_holds(HOLD_MAX_AGE_MS, NOW + HOLD_MAX_AGE_MS).await.unwrap(), 0, "swept once");
    assert_eq!(cp.hold(&b_hold.id).await.unwrap().unwrap().state, HoldState::Expired);
    assert!(!cp.release_hold(&b_hold.id, NOW).await.unwrap());
    assert_eq!(refusal(cp.settle_hold(&b_hold.id, 1, &node(31), &receipt(9_001), NOW).await), Refusal::HoldClosed("expired"));
    assert!(cp.credit_ledger(&org.id, 500).await.unwrap().iter().any(|e| e.kind == "expire"));
    // The key's spend for the day dropped with the expiry.
    cp.place_hold(&key, 450, NOW + HOLD_MAX_AGE_MS).await.unwrap();
    assert_ledger_ok(cp).await;
}

async fn suite(cp: Arc<ControlPlane>) -> Vec<String> {
    let tokens = keys(&cp).await;
    holds(&cp).await;
    concurrent_holds(cp.clone()).await;
    limits_and_sweeper(&cp).await;
    let c = cp.ledger_check().await.unwrap();
    assert!(c.ok() && c.transactions > 250 && c.accounts >= 10, "{c:?}");
    tokens
}

fn file_contains(path: &Path, needle: &[u8]) -> bool {
    std::fs::read(path).map(|b| b.windows(needle.len()).any(|w| w == needle)).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_gateway_credits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let cp = plane(Arc::new(SqliteStore::open(&path).unwrap()));
    let tokens = suite(cp.clone()).await;
    // Hashed at rest: no token, nor its random body, is anywhere in the database files.
    let files = ["control.db", "control.db-wal", "control.db-shm"].map(|f| dir.path().join(f));
    assert!(files[0].exists());
    for t in &tokens {
        for f in &files {
            assert!(!file_contains(f, t.as_bytes()) && !file_contains(f, &t.as_bytes()["b3iq_gateway_".len()..]), "token found in {}", f.display());
        }
    }
    // ...while something that is stored is found the same way (the search works).
    let key_id = cp.gateway_keys(&cp.org("acme").await.unwrap().id).await.unwrap()[0].id.clone();
    assert!(files.iter().any(|f| file_contains(f, key_id.as_bytes())));
    drop(cp);
    // Reopening keeps the ledger consistent.
    let cp = plane(Arc::new(SqliteStore::open(&path).unwrap()));
    assert!(cp.ledger_check().await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_gateway_credits() {
    let pg = support::pg::Pg::start();
    let url = pg.create_db("credits").await;
    let cp = plane(Arc::new(PostgresStore::connect(&url, 20).await.unwrap()));
    let tokens = suite(cp).await;
    // Hashed at rest: no row of any table holds a token.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    let h = tokio::spawn(conn);
    let tables: Vec<String> = client
        .query("SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = 'public'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.contains(&"gateway_keys".to_string()));
    let mut dump = String::new();
    for t in &tables {
        for r in client.query(&format!("SELECT t::TEXT FROM {t} t"), &[]).await.unwrap() {
            dump.push_str(r.get::<_, &str>(0));
        }
    }
    assert!(dump.contains("gk_"), "the dump reads the rows");
    for t in &tokens {
        assert!(!dump.contains(&t["b3iq_gateway_".len()..]));
    }
    drop(client);
    let _ = h.await;
    // A second replica on the same database sees the same ledger.
    let cp2 = plane(Arc::new(PostgresStore::connect(&url, 2).await.unwrap()));
    assert!(cp2.ledger_check().await.unwrap().ok());
}
