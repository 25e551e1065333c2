//! Credential helpers over `b3iq_core::credential`: generation with the OS rng, format checks
//! (prefix + checksum, refused without a lookup), and the hash that is stored instead of a secret.

use b3iq_core::credential::{Credential, CredentialKind};
use b3iq_core::digest::Sha256Digest;
use rand::RngCore;

fn generate(kind: CredentialKind) -> String {
    Credential::generate(kind, &mut rand::rngs::OsRng).expose_secret().to_string()
}

/// A new `b3iq_local_` key.
pub fn new_local_key() -> String {
    generate(CredentialKind::Local)
}

/// A new `b3iq_support_` grant secret.
pub fn new_support_key() -> String {
    generate(CredentialKind::Support)
}

/// A new `b3iq_setup_` token.
pub fn new_setup_token() -> String {
    generate(CredentialKind::Setup)
}

/// A new session cookie value (256 random bits, hex).
pub fn new_session_secret() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// A short random id (80 bits, hex) for records.
pub fn random_id() -> String {
    let mut b = [0u8; 10];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

/// The hash stored for a secret: sha256 of its text, hex (the same as
/// `Credential::hash_for_storage` for credentials).
pub fn hash_secret(secret: &str) -> String {
    Sha256Digest::of(secret.as_bytes()).to_hex()
}

/// A non-secret hint for listings (`b3iq_local_...Ab3x`).
pub fn display_prefix(secret: &str) -> String {
    Credential::parse(secret).map(|c| c.hint()).unwrap_or_else(|_| "invalid".into())
}

fn check(text: &str, kind: CredentialKind) -> Result<(), String> {
    Credential::parse_kind(text, kind).map(|_| ()).map_err(|e| e.to_string())
}

/// Check a `b3iq_local_` key's format and checksum.
pub fn check_local_key_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Local)
}

/// Check a `b3iq_support_` secret's format and checksum.
pub fn check_support_key_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Support)
}

/// Check a `b3iq_setup_` token's format and checksum.
pub fn check_setup_token_format(text: &str) -> Result<(), String> {
    check(text, CredentialKind::Setup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_hashes() {
        let k = new_local_key();
        assert!(k.starts_with("b3iq_local_"));
        assert!(check_local_key_format(&k).is_ok());
        assert!(check_support_key_format(&k).is_err());
        assert!(check_setup_token_format(&new_setup_token()).is_ok());
        let h = hash_secret(&k);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&k[11..20]));
        assert!(display_prefix(&k).starts_with("b3iq_local_..."));
        assert_ne!(new_session_secret(), new_session_secret());
    }
}

/// A bound on argon2id hashes computed at once (sign-in, claim, password reset). Each hash takes
/// 19 MiB and tens of milliseconds of a core (argon2's default parameters, RFC 9106's second
/// recommended option), so a burst of strangers costs at most `max` of them; a caller beyond it
/// gets `SignInBusy` at once instead of queueing on the blocking pool. The hashes run on `max`
/// dedicated threads, so the allocator keeps at most `max` such buffers around after a burst
/// (run on whichever blocking-pool thread asked, each thread's malloc arena would keep one).
#[derive(Debug)]
pub struct HashSlots {
    in_use: std::sync::atomic::AtomicUsize,
    max: usize,
    workers: std::sync::OnceLock<std::sync::mpsc::Sender<HashJob>>,
}

type HashJob = Box<dyn FnOnce() + Send>;

/// Hashing slots a node allows at once.
pub const MAX_CONCURRENT_HASHES: usize = 2;

impl HashSlots {
    /// At most `max` hashes at once.
    pub fn new(max: usize) -> HashSlots {
        HashSlots { in_use: std::sync::atomic::AtomicUsize::new(0), max: max.max(1), workers: std::sync::OnceLock::new() }
    }

    /// Take a slot, released when the guard drops; `SignInBusy(1)` when all are in use (never waits).
    pub fn take(&self) -> Result<HashSlot<'_>, crate::error::HostError> {
        use std::sync::atomic::Ordering;
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max).then_some(n + 1))
            .map(|_| HashSlot(self))
            .map_err(|_| crate::error::HostError::SignInBusy(1))
    }

    /// Run `f` (a password hash) in a slot on one of the hashing threads and wait for it.
    /// `SignInBusy(1)` when every slot is taken.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, crate::error::HostError> {
        let _slot = self.take()?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: HashJob = Box::new(move || {
            let _ = tx.send(f());
        });
        self.workers
            .get_or_init(|| spawn_hash_workers(self.max))
            .send(job)
            .map_err(|_| crate::error::HostError::Internal("the password hashing threads stopped".into()))?;
        rx.recv().map_err(|_| crate::error::HostError::Internal("a password hash panicked".into()))
    }

    /// Slots in use now.
    pub fn in_use(&self) -> usize {
        self.in_use.load(std::sync::atomic::Ordering::Acquire)
    }
}

fn spawn_hash_workers(n: usize) -> std::sync::mpsc::Sender<HashJob> {
    let (tx, rx) = std::sync::mpsc::channel::<HashJob>();
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("b3iq-hash-{i}")).spawn(move || loop {
            let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                Ok(job) => job,
                Err(_) => return,
            };
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a password hashing thread");
        }
    }
    tx
}

impl Default for HashSlots {
    fn default() -> Self {
        HashSlots::new(MAX_CONCURRENT_HASHES)
    }
}

/// One taken hashing slot.
#[derive(Debug)]
pub struct HashSlot<'a>(&'a HashSlots);

impl Drop for HashSlot<'_> {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
