//! Software versions: the Semantic Versioning 2.0.0 form (`MAJOR.MINOR.PATCH`, an optional
//! `-PRERELEASE` and `+BUILD`) that B3IQ's releases, heartbeats and `update` jobs carry, with
//! SemVer's precedence (section 11: numbers compare numerically, a pre-release sorts before its
//! release, build metadata is ignored).
//!
//! ```
//! use b3iq_core::version::SoftwareVersion;
//! let a = SoftwareVersion::parse("1.2.10").unwrap();
//! assert!(a > SoftwareVersion::parse("1.2.9").unwrap());
//! assert!(SoftwareVersion::parse("2.0.0-rc.1").unwrap() < SoftwareVersion::parse("2.0.0").unwrap());
//! assert!(SoftwareVersion::parse("1.2").is_err());
//! ```

use std::cmp::Ordering;

use crate::error::{CoreError, Result};

/// Longest version string accepted, bytes.
pub const MAX_VERSION_LEN: usize = 64;

/// One dot-separated pre-release identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pre {
    Num(u64),
    Alnum(String),
}

/// A parsed SemVer 2.0.0 version. Equality and order follow SemVer precedence, so two versions
/// that differ only in build metadata are equal.
#[derive(Debug, Clone)]
pub struct SoftwareVersion {
    major: u64,
    minor: u64,
    patch: u64,
    pre: Vec<Pre>,
    text: String,
}

fn bad(s: &str, why: &str) -> CoreError {
    CoreError::field(
        "version",
        format!(
            "{:?} is not a release version ({why}); use MAJOR.MINOR.PATCH, e.g. 1.4.2 or 2.0.0-rc.1",
            s.chars().take(MAX_VERSION_LEN).collect::<String>()
        ),
    )
}

fn number(s: &str, part: &str, what: &str) -> Result<u64> {
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(s, &format!("{what} must be a number")));
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(bad(s, &format!("{what} has a leading zero")));
    }
    part.parse().map_err(|_| bad(s, &format!("{what} is too large")))
}

fn idents(s: &str, part: &str, what: &str) -> Result<()> {
    for id in part.split('.') {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(bad(s, &format!("{what} identifiers are [0-9A-Za-z-], dot separated")));
        }
    }
    Ok(())
}

impl SoftwareVersion {
    /// Parses `s` (at most [`MAX_VERSION_LEN`] bytes).
    ///
    /// # Errors
    /// `InvalidField { field: "version" }` naming what is wrong (`1.2`, `v1.2.3`, `01.2.3`,
    /// `1.2.3-`, anything longer than 64 bytes).
    pub fn parse(s: &str) -> Result<SoftwareVersion> {
        if s.len() > MAX_VERSION_LEN {
            return Err(bad(s, "longer than 64 bytes"));
        }
        let (rest, build) = match s.split_once('+') {
            Some((r, b)) => (r, Some(b)),
            None => (s, None),
        };
        if let Some(b) = build {
            idents(s, b, "build")?;
        }
        let (core, pre) = match rest.split_once('-') {
            Some((c, p)) => (c, Some(p)),
            None => (rest, None),
        };
        let parts: Vec<&str> = core.split('.').collect();
        if parts.len() != 3 {
            return Err(bad(s, "it needs exactly three numbers"));
        }
        let mut pres = Vec::new();
        if let Some(p) = pre {
            idents(s, p, "pre-release")?;
            for id in p.split('.') {
                pres.push(if id.bytes().all(|b| b.is_ascii_digit()) {
                    Pre::Num(number(s, id, "a numeric pre-release identifier")?)
                } else {
                    Pre::Alnum(id.to_string())
                });
            }
        }
        Ok(SoftwareVersion {
            major: number(s, parts[0], "MAJOR")?,
            minor: number(s, parts[1], "MINOR")?,
            patch: number(s, parts[2], "PATCH")?,
            pre: pres,
            text: s.to_string(),
        })
    }

    /// The version as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether it is a pre-release (`2.0.0-rc.1`).
    pub fn is_prerelease(&self) -> bool {
        !self.pre.is_empty()
    }
}

impl std::fmt::Display for SoftwareVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::str::FromStr for SoftwareVersion {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl Ord for SoftwareVersion {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.major, self.minor, self.patch)
            .cmp(&(o.major, o.minor, o.patch))
            .then_with(|| match (self.pre.is_empty(), o.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&o.pre) {
                        let c = match (a, b) {
                            (Pre::Num(x), Pre::Num(y)) => x.cmp(y),
                            (Pre::Num(_), Pre::Alnum(_)) => Ordering::Less,
                            (Pre::Alnum(_), Pre::Num(_)) => Ordering::Greater,
                            (Pre::Alnum(x), Pre::Alnum(y)) => x.cmp(y),
                        };
                        if c != Ordering::Equal {
                            return c;
                        }
                    }
                    self.pre.len().cmp(&o.pre.len())
                }
            })
    }
}

impl PartialOrd for SoftwareVersion {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for SoftwareVersion {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for SoftwareVersion {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_precedence_from_the_spec() {
        // SemVer 2.0.0 section 11's example chain, in increasing order.
        let chain = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "1.10.0",
            "2.0.0",
        ];
        for w in chain.windows(2) {
            let (a, b) = (SoftwareVersion::parse(w[0]).unwrap(), SoftwareVersion::parse(w[1]).unwrap());
            assert!(a < b, "{a} < {b}");
        }
        assert_eq!(SoftwareVersion::parse("1.0.0+a").unwrap(), SoftwareVersion::parse("1.0.0+b").unwrap());
        assert!(SoftwareVersion::parse("2.0.0-rc.1").unwrap().is_prerelease());
    }

    #[test]
    fn refuses_what_is_not_a_version() {
        for s in ["", "1", "1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.x", "1.2.3-", "1.2.3-a..b", "1.2.3+", "1.2.3-é", "latest", "1.2.3 ", &"9".repeat(70)] {
            let e = SoftwareVersion::parse(s).unwrap_err();
            assert_eq!(e.code(), "invalid_field", "{s:?}");
            assert!(e.to_string().contains("MAJOR.MINOR.PATCH"), "{e}");
        }
        assert!(SoftwareVersion::parse("99999999999999999999.0.0").is_err(), "overflow");
    }
}
