//! TLS for the local API (config.json `tls`): off, a self-signed certificate the node makes at
//! first start, or a certificate the operator provides.
//!
//! A LAN bind without TLS carries the owner's password, the session cookie and API keys in clear
//! text; `self-signed` gives every LAN client an encrypted channel that it pins by the
//! certificate's SHA-256 fingerprint (shown by `b3iqd serve`, `b3iqd status`, the wizard and
//! `GET /api/setup/status`), as SSH pins a host key. `provided` serves the operator's own
//! certificate (a LAN CA's, or a public one for a real name).
//!
//! ```text
//! $B3IQ_HOME/tls/
//!   self-signed.crt.pem   the certificate (public), mode 0644
//!   self-signed.key.pem   its ECDSA P-256 key, PKCS#8 PEM, mode 0600
//!   self-signed.names     the subject alternative names it was made for, one per line
//!   self-signed.*.previous  the certificate, key (0600) and names it last replaced
//! ```
//!
//! The certificate names `localhost`, `127.0.0.1`, `::1`, every `allowed_hosts` entry and the
//! listen address when it is a specific non-loopback IP. When that set changes, a new
//! certificate (and fingerprint) is made, the one it replaces is kept beside it with a
//! `.previous` suffix, and the change is logged and reported ([`TlsInfo::replaced`], which
//! `b3iqd serve` prints); otherwise the same one is served across restarts, so pinned clients
//! keep working.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::context::home::{write_atomic, Config, Home};
use crate::error::{HostError, Result};

/// The `tls` setting of config.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP (the default; fine on loopback).
    Off,
    /// A certificate the node makes and keeps under `$B3IQ_HOME/tls/`.
    SelfSigned,
    /// The PEM files named by `tls_cert` and `tls_key`.
    Provided,
}

impl TlsMode {
    /// Parse config.json's / `--tls`'s value: `off`, `self-signed` or `provided`.
    ///
    /// # Errors
    /// `Config` naming the accepted values.
    pub fn parse(s: &str) -> Result<TlsMode> {
        match s {
            "off" | "" => Ok(TlsMode::Off),
            "self-signed" => Ok(TlsMode::SelfSigned),
            "provided" => Ok(TlsMode::Provided),
            other => Err(HostError::Config(format!(
                "tls {other:?} is not one of off, self-signed, provided"
            ))),
        }
    }

    /// The config.json spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::SelfSigned => "self-signed",
            TlsMode::Provided => "provided",
        }
    }
}

/// What the node serves over TLS, as shown to users.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TlsInfo {
    /// `self-signed` or `provided`.
    pub mode: &'static str,
    /// SHA-256 of the leaf certificate's DER bytes, upper-case hex in colon-separated pairs (the
    /// form browsers and `openssl x509 -fingerprint -sha256` show).
    pub fingerprint_sha256: String,
    /// The leaf certificate file (PEM): hand it to a client to trust this node
    /// (`curl --cacert`, an `ssl` context for the `openai` client, `NODE_EXTRA_CA_CERTS`).
    /// Printed by `b3iqd serve` on the machine only; never serialised, so no API answer (some are
    /// unauthenticated) reveals a path.
    #[serde(skip)]
    pub cert_path: PathBuf,
    /// The self-signed certificate this start replaced because the node's names changed
    /// (`b3iqd serve` prints it with the new fingerprint); `None` otherwise. Never serialised.
    #[serde(skip)]
    pub replaced: Option<ReplacedCertificate>,
}

/// A self-signed certificate replaced by a new one (the node's names changed), kept on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplacedCertificate {
    /// Its SHA-256 fingerprint: clients that pinned it must pin the new one.
    pub fingerprint_sha256: String,
    /// Where it is kept (`self-signed.crt.pem.previous`; its key beside it as
    /// `self-signed.key.pem.previous`, mode 0600).
    pub cert_path: PathBuf,
}

/// Certificate chain, key and what to show about them.
pub struct TlsMaterial {
    /// What users see.
    pub info: TlsInfo,
    /// The rustls server configuration (ALPN `h2`, `http/1.1`).
    pub server_config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial").field("info", &self.info).finish_non_exhaustive()
    }
}

/// SHA-256 fingerprint of a DER certificate in the browsers' form (`AB:CD:...`, 95 characters).
pub fn fingerprint_sha256(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let mut s = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// The subject alternative names a self-signed certificate for this config and bound address
/// carries: loopback names, `allowed_hosts` (brackets of IPv6 literals removed, lower-cased,
/// trailing dot dropped) and the listen IP when it is specific and not loopback. Sorted, unique.
pub fn self_signed_names(config: &Config, listen: Option<SocketAddr>) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in &config.allowed_hosts {
        let h = h.trim().trim_start_matches('[').trim_end_matches(']').trim_end_matches('.').to_ascii_lowercase();
        if !h.is_empty() {
            names.push(h);
        }
    }
    if let Some(a) = listen {
        if !a.ip().is_unspecified() && !a.ip().is_loopback() {
            names.push(a.ip().to_string());
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Load (or, for `self-signed`, make) what `config` asks for. `None` when `tls` is `off`.
///
/// # Errors
/// `Config` for an unknown mode, `provided` without both paths, unreadable or mismatched PEM
/// files, or a name rcgen cannot put in a certificate; `Home` when the files cannot be written.
pub fn load(home: &Home, config: &Config, listen: Option<SocketAddr>) -> Result<Option<TlsMaterial>> {
    match TlsMode::parse(&config.tls)? {
        TlsMode::Off => Ok(None),
        TlsMode::SelfSigned => self_signed(home, &self_signed_names(config, listen)).map(Some),
        TlsMode::Provided => {
            let (Some(cert), Some(key)) = (config.tls_cert.as_deref(), config.tls_key.as_deref()) else {
                return Err(HostError::Config(PROVIDED_NEEDS_FILES.into()));
            };
            load_pem(&under_home(home, cert), &under_home(home, key), "provided").map(Some)
        }
    }
}

/// What `tls` `provided` without a certificate or key is told: where both can be given.
pub const PROVIDED_NEEDS_FILES: &str = "tls \"provided\" needs a certificate and its private key (PEM files): pass `--tls-cert FILE --tls-key FILE` to `b3iqd serve`, or set \"tls_cert\" and \"tls_key\" in config.json";

/// A certificate or key path as config.json gives it: relative paths are under the home, whatever
/// the daemon's working directory (the CLI passes absolute ones).
fn under_home(home: &Home, p: &str) -> PathBuf {
    if Path::new(p).is_relative() {
        home.root().join(p)
    } else {
        PathBuf::from(p)
    }
}

/// The certificate a node with `config` serves, read from disk without its key and without
/// making one (`b3iqd status` while no daemon runs): the self-signed certificate under
/// `$B3IQ_HOME/tls/` or the `tls_cert` file. `None` for `off`, before a self-signed certificate
/// was first made, or when the file cannot be read. A self-signed certificate whose names no
/// longer match is still the one on disk until the next start replaces it.
pub fn certificate_on_disk(home: &Home, config: &Config) -> Option<TlsInfo> {
    let (mode, path) = match TlsMode::parse(&config.tls).ok()? {
        TlsMode::Off => return None,
        TlsMode::SelfSigned => ("self-signed", tls_dir(home).join("self-signed.crt.pem")),
        TlsMode::Provided => ("provided", under_home(home, config.tls_cert.as_deref()?)),
    };
    let leaf = CertificateDer::pem_file_iter(&path).ok()?.next()?.ok()?;
    Some(TlsInfo { mode, fingerprint_sha256: fingerprint_sha256(&leaf), cert_path: path, replaced: None })
}

fn tls_dir(home: &Home) -> PathBuf {
    home.root().join("tls")
}

fn self_signed(home: &Home, names: &[String]) -> Result<TlsMaterial> {
    self_signed_in(&tls_dir(home), names)
}

/// A self-signed certificate for `names` kept in `dir` (`self-signed.crt.pem`,
/// `self-signed.key.pem` mode 0600, `self-signed.names`): made on first use and whenever the
/// name set changes, otherwise reused, so clients that pinned it keep working. The control
/// plane uses it for its own endpoint.
///
/// # Errors
/// `Config` when a name is not a valid DNS name or IP address, or the files cannot be read back;
/// `Home` when the directory cannot be written.
pub fn self_signed_in(dir: &Path, names: &[String]) -> Result<TlsMaterial> {
    let dir = dir.to_path_buf();
    let (crt, key, list) = (dir.join("self-signed.crt.pem"), dir.join("self-signed.key.pem"), dir.join("self-signed.names"));
    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&list).ok();
    let mut replaced = None;
    if current.as_deref() != Some(wanted.as_str()) || !crt.exists() || !key.exists() {
        if crt.exists() {
            replaced = Some(keep_previous(&crt, &key, &list)?);
        }
        make_self_signed(&dir, names, &crt, &key, &list)?;
    }
    let mut m = load_pem(&crt, &key, "self-signed")?;
    if let Some(old) = &replaced {
        tracing::warn!(
            names = %names.join(","),
            fingerprint_sha256 = %m.info.fingerprint_sha256,
            previous_fingerprint_sha256 = %old.fingerprint_sha256,
            previous = %old.cert_path.display(),
            "the node's names changed: made a new self-signed certificate (clients that pinned the previous fingerprint must pin the new one); the previous certificate is kept"
        );
    }
    m.info.replaced = replaced;
    Ok(m)
}

/// Move the self-signed certificate, key and name list aside (`.previous`, replacing an older
/// one) before new ones are made; returns what was kept. The key keeps mode 0600.
fn keep_previous(crt: &Path, key: &Path, list: &Path) -> Result<ReplacedCertificate> {
    let prev = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push(".previous");
        PathBuf::from(s)
    };
    let fingerprint = CertificateDer::pem_file_iter(crt)
        .ok()
        .and_then(|mut it| it.next())
        .and_then(|c| c.ok())
        .map(|c| fingerprint_sha256(&c))
        .unwrap_or_else(|| "unreadable".to_string());
    for p in [key, crt, list] {
        if p.exists() {
            std::fs::rename(p, prev(p)).map_err(|e| HostError::home(format!("keep the previous TLS file {}", p.display()), e))?;
        } else {
            // No stale file of an older pair beside the one kept.
            let _ = std::fs::remove_file(prev(p));
        }
    }
    if prev(key).exists() {
        crate::context::home::set_mode(&prev(key), 0o600)?;
    }
    Ok(ReplacedCertificate { fingerprint_sha256: fingerprint, cert_path: prev(crt) })
}

fn make_self_signed(dir: &Path, names: &[String], crt: &Path, key: &Path, list: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| HostError::home("create tls directory", e))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())
        .map_err(|e| HostError::Config(format!("cannot make a certificate for {names:?}: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "b3iq node (self-signed)");
    // Valid from the start of last year for five years: clocks that lag a little still accept it.
    let year = 1970 + (crate::context::unix_now() / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 5, 1, 1);
    let kp = rcgen::KeyPair::generate().map_err(|e| HostError::Config(format!("cannot make a TLS key: {e}")))?;
    let cert = params.self_signed(&kp).map_err(|e| HostError::Config(format!("cannot sign the TLS certificate: {e}")))?;
    // Key first: a crash in between leaves a key without a certificate, which is remade.
    write_atomic(key, kp.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(crt, cert.pem().as_bytes(), 0o644)?;
    write_atomic(list, names.join("\n").as_bytes(), 0o644)?;
    Ok(())
}

/// Loads a PEM certificate chain and private key into a rustls server configuration (ALPN
/// `h2`, `http/1.1`); `mode` is what [`TlsInfo::mode`] shows.
///
/// # Errors
/// `Config` naming the file for an unreadable certificate or key, or a pair that does not match.
pub fn load_pem(cert_path: &Path, key_path: &Path, mode: &'static str) -> Result<TlsMaterial> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| HostError::Config(format!("tls certificate {}: {e}", cert_path.display())))?;
    let Some(leaf) = chain.first() else {
        return Err(HostError::Config(format!("tls certificate {}: no CERTIFICATE block", cert_path.display())));
    };
    let fingerprint = fingerprint_sha256(leaf);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| HostError::Config(format!("tls key {}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut sc = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| HostError::Config(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => HostError::Config(format!(
                "the private key in {} does not match the certificate in {}: give the key the certificate was issued for (or the certificate of this key)",
                key_path.display(),
                cert_path.display()
            )),
            e => HostError::Config(format!(
                "tls certificate {} and key {} do not make a usable pair: {e}",
                cert_path.display(),
                key_path.display()
            )),
        })?;
    sc.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsMaterial {
        info: TlsInfo { mode, fingerprint_sha256: fingerprint, cert_path: cert_path.to_path_buf(), replaced: None },
        server_config: Arc::new(sc),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let d = tempfile::tempdir().unwrap();
        let h = Home::at(d.path());
        h.ensure().unwrap();
        (d, h)
    }

    #[test]
    fn modes_parse_and_unknown_is_refused() {
        assert_eq!(TlsMode::parse("off").unwrap(), TlsMode::Off);
        assert_eq!(TlsMode::parse("self-signed").unwrap(), TlsMode::SelfSigned);
        assert_eq!(TlsMode::parse("provided").unwrap(), TlsMode::Provided);
        let e = TlsMode::parse("on").unwrap_err().to_string();
        assert!(e.contains("off, self-signed, provided"), "{e}");
    }

    #[test]
    fn names_cover_loopback_allowed_hosts_and_a_specific_lan_ip() {
        let c = Config { allowed_hosts: vec!["Gamer-PC.lan.".into(), "[fd00::5]".into(), "gamer-pc.lan".into()], ..Config::default() };
        let n = self_signed_names(&c, Some("192.168.1.20:7420".parse().unwrap()));
        assert_eq!(n, vec!["127.0.0.1", "192.168.1.20", "::1", "fd00::5", "gamer-pc.lan", "localhost"]);
        let n = self_signed_names(&Config::default(), Some("0.0.0.0:7420".parse().unwrap()));
        assert_eq!(n, vec!["127.0.0.1", "::1", "localhost"]);
    }

    #[test]
    fn self_signed_is_kept_across_starts_and_remade_when_names_change() {
        let (_d, h) = home();
        let mut c = Config { tls: "self-signed".into(), ..Config::default() };
        let a = load(&h, &c, None).unwrap().unwrap();
        assert_eq!(a.info.fingerprint_sha256.len(), 95);
        let pem = std::fs::read(&a.info.cert_path).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(fingerprint_sha256(&der), a.info.fingerprint_sha256, "the fingerprint is the served file's");
        use std::os::unix::fs::PermissionsExt;
        let key_mode = std::fs::metadata(tls_dir(&h).join("self-signed.key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(key_mode, 0o600);
        let b = load(&h, &c, None).unwrap().unwrap();
        assert_eq!(a.info.fingerprint_sha256, b.info.fingerprint_sha256, "same names: same certificate");
        assert_eq!((a.info.replaced.as_ref(), b.info.replaced.as_ref()), (None, None), "nothing replaced");
        c.allowed_hosts = vec!["box.lan".into()];
        let d = load(&h, &c, None).unwrap().unwrap();
        assert_ne!(a.info.fingerprint_sha256, d.info.fingerprint_sha256, "new name: new certificate");
        // The replaced certificate is reported and kept, its key still 0600.
        let old = d.info.replaced.clone().expect("the replaced certificate is reported");
        assert_eq!(old.fingerprint_sha256, a.info.fingerprint_sha256);
        assert_eq!(old.cert_path, tls_dir(&h).join("self-signed.crt.pem.previous"));
        assert_eq!(std::fs::read(&old.cert_path).unwrap(), pem, "the previous certificate's bytes");
        let prev_key = tls_dir(&h).join("self-signed.key.pem.previous");
        assert_eq!(std::fs::metadata(&prev_key).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(load_pem(&old.cert_path, &prev_key, "self-signed").is_ok(), "the previous pair still matches");
        // What is on disk is what a start serves (`b3iqd status` with no daemon running).
        let on_disk = certificate_on_disk(&h, &c).unwrap();
        assert_eq!((on_disk.mode, on_disk.fingerprint_sha256.as_str()), ("self-signed", d.info.fingerprint_sha256.as_str()));
        assert!(certificate_on_disk(&h, &Config::default()).is_none(), "tls off");
        let (_d2, empty) = home();
        assert!(certificate_on_disk(&empty, &c).is_none(), "not made yet");
    }

    #[test]
    fn provided_needs_both_paths_and_a_matching_pair() {
        let (d, h) = home();
        let c = Config { tls: "provided".into(), tls_cert: Some("/nonexistent.pem".into()), ..Config::default() };
        // Without both files: the message names the flags and the config.json keys.
        let e = load(&h, &c, None).unwrap_err().to_string();
        for part in ["--tls-cert", "--tls-key", "\"tls_cert\"", "\"tls_key\"", "config.json"] {
            assert!(e.contains(part), "{part} missing: {e}");
        }
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("--tls-cert") && e.contains("\"tls_key\""), "{e}");
        // Two self-signed pairs; the first's certificate with the second's key is refused.
        let mk = |dir: &str| {
            let p = d.path().join(dir);
            make_self_signed(&p, &["localhost".into()], &p.join("c.pem"), &p.join("k.pem"), &p.join("n")).unwrap();
            p
        };
        let (p1, p2) = (mk("one"), mk("two"));
        let c = Config {
            tls: "provided".into(),
            tls_cert: Some(p1.join("c.pem").display().to_string()),
            tls_key: Some(p2.join("k.pem").display().to_string()),
            ..Config::default()
        };
        // In words, naming both files; not rustls' `KeyMismatch`.
        let e = load(&h, &c, None).unwrap_err().to_string();
        assert!(e.contains("private key") && e.contains("does not match the certificate"), "{e}");
        assert!(e.contains(&p2.join("k.pem").display().to_string()) && e.contains(&p1.join("c.pem").display().to_string()), "{e}");
        assert!(!e.contains("KeyMismatch"), "{e}");
        let c = Config { tls_key: Some(p1.join("k.pem").display().to_string()), ..c };
        let m = load(&h, &c, None).unwrap().unwrap();
        assert_eq!(m.info.mode, "provided");
        let c = Config { tls_cert: Some(p1.join("n").display().to_string()), ..c };
        assert!(load(&h, &c, None).unwrap_err().to_string().contains("no CERTIFICATE block"));
        // Certificate files with another mode would be silently unused: refused at load.
        let c = Config { tls: "self-signed".into(), ..c };
        assert!(c.validate().unwrap_err().to_string().contains("only with tls \"provided\""));
        // A relative path in config.json is under the home.
        std::fs::copy(p1.join("c.pem"), h.root().join("node.crt")).unwrap();
        std::fs::copy(p1.join("k.pem"), h.root().join("node.key")).unwrap();
        let c = Config { tls: "provided".into(), tls_cert: Some("node.crt".into()), tls_key: Some("node.key".into()), ..Config::default() };
        assert_eq!(load(&h, &c, None).unwrap().unwrap().info.cert_path, h.root().join("node.crt"));
    }
}
