//! The signed release repository and its install script (docs/release.md).
//!
//! * `GET /releases/metadata/<file>` and `GET /releases/targets/<file>`: the TUF repository as
//!   `b3iq-release publish` wrote it under `$B3IQ_CONTROL_HOME/releases/` (file names of
//!   `[A-Za-z0-9._-]`, no leading dot; anything else is 404).
//! * `GET /install.sh`: a POSIX shell script that installs the current signed `b3iqd` for the
//!   caller's platform. The control plane first verifies its repository with tough against the
//!   root pinned in this build ([`b3iq_host::update::PINNED_ROOT`]); the script embeds each
//!   platform's signed length and SHA-256 and refuses a download that does not match, then runs
//!   the installed binary's own TUF check (`b3iqd update check`) against the same repository and
//!   compares the hash it reports. No unsigned binary is ever run.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// A target of the verified repository: (name, length in bytes, SHA-256 hex).
pub type SignedTarget = (String, u64, String);

/// Routes for `/releases/...` and `/install.sh` over the repository in `dir`.
pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/releases/{kind}/{file}", get(file))
        .route("/install.sh", get(install_sh))
        .with_state(std::sync::Arc::new(dir))
}

fn safe_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && s.len() <= 255 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

async fn file(State(dir): State<std::sync::Arc<PathBuf>>, UrlPath((kind, name)): UrlPath<(String, String)>) -> Response {
    if !matches!(kind.as_str(), "metadata" | "targets") || !safe_name(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(dir.join(&kind).join(&name)).await {
        Ok(bytes) => {
            let ct = if kind == "metadata" { "application/json" } else { "application/octet-stream" };
            ([(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache")], bytes).into_response()
        }
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Verifies the repository in `dir` against `root` (tough, file transport, no datastore kept)
/// and returns its `b3iqd-*` targets.
///
/// Errors: a message naming the TUF failure (expired, bad signature, missing file...).
pub async fn verified_targets(dir: &Path, root: &[u8]) -> Result<Vec<SignedTarget>, String> {
    let meta = url::Url::from_directory_path(dir.join("metadata")).map_err(|_| "the releases directory must be an absolute path".to_string())?;
    let targets = url::Url::from_directory_path(dir.join("targets")).map_err(|_| "the releases directory must be an absolute path".to_string())?;
    let repo = tough::RepositoryLoader::new(&root, meta, targets)
        .transport(tough::FilesystemTransport)
        .limits(b3iq_host::update::LIMITS)
        .load()
        .await
        .map_err(|e| format!("the release repository does not verify against the pinned root: {e}"))?;
    Ok(repo
        .targets()
        .signed
        .targets
        .iter()
        .filter(|(n, _)| n.raw().starts_with("b3iqd-"))
        .map(|(n, t)| (n.raw().to_string(), t.length, hex::encode(&t.hashes.sha256)))
        .collect())
}

/// The install script for `base` (the control plane's public URL, e.g. `https://cp.example:7430`)
/// and the verified targets.
pub fn script(base: &str, targets: &[SignedTarget]) -> String {
    let mut cases = String::new();
    for (name, len, sha) in targets {
        // Names and hashes are [A-Za-z0-9._-] / hex (checked by tough and safe_name): no quoting issue.
        if safe_name(name) && sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            cases.push_str(&format!("  {name}) LEN={len}; SHA={sha} ;;\n"));
        }
    }
    format!(
        r#"#!/bin/sh
# B3IQ installer: installs the current signed b3iqd release (docs/release.md).
# The length and SHA-256 below come from the release metadata, verified by the control plane
# against the pinned TUF root; the download is refused unless it matches, and the installed
# binary then re-verifies the whole repository with its own pinned root.
set -eu
BASE="{base}/releases"
DEST="${{B3IQ_INSTALL_DIR:-$HOME/.local/bin}}"
NAME="b3iqd-$(uname -s | tr 'A-Z' 'a-z')-$(uname -m)"
case "$NAME" in
{cases}  *) echo "b3iq install: no signed release for $NAME" >&2; exit 1 ;;
esac
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
curl -fsS --proto '=https,http' --max-filesize "$LEN" -o "$TMP/b3iqd" "$BASE/targets/$SHA.$NAME"
GOT_LEN="$(wc -c < "$TMP/b3iqd" | tr -d ' ')"
GOT_SHA="$(sha256sum "$TMP/b3iqd" | cut -d' ' -f1)"
if [ "$GOT_LEN" != "$LEN" ] || [ "$GOT_SHA" != "$SHA" ]; then
  echo "b3iq install: refused: the download does not match the signed release ($GOT_LEN bytes, sha256 $GOT_SHA; signed: $LEN bytes, sha256 $SHA)" >&2
  exit 1
fi
chmod 755 "$TMP/b3iqd"
mkdir -p "$DEST"
mv "$TMP/b3iqd" "$DEST/b3iqd"
CHECK="$("$DEST/b3iqd" update check --repo "$BASE")"
case "$CHECK" in
  *"\"sha256\": \"$SHA\""*) ;;
  *) echo "b3iq install: refused: the installed binary's own TUF check disagrees: $CHECK" >&2; rm -f "$DEST/b3iqd"; exit 1 ;;
esac
echo "b3iq install: installed $DEST/b3iqd ($NAME, sha256 $SHA)"
"#
    )
}

async fn install_sh(State(dir): State<std::sync::Arc<PathBuf>>, headers: HeaderMap) -> Response {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
        return (StatusCode::BAD_REQUEST, "install.sh: send a plain Host header\n").into_response();
    }
    match verified_targets(&dir, b3iq_host::update::PINNED_ROOT).await {
        Ok(t) => ([(header::CONTENT_TYPE, "text/x-shellscript")], script(&format!("https://{host}"), &t)).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("install.sh: {e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_file_names_are_served() {
        assert!(safe_name("1700000000.snapshot.json"));
        assert!(safe_name("ab12.b3iqd-linux-x86_64"));
        for bad in ["", ".hidden", "..", "a/b", "a\\b", "%2e%2e", "a b", "é"] {
            assert!(!safe_name(bad), "{bad:?} must be refused");
        }
        assert!(!safe_name(&"a".repeat(256)));
    }

    #[test]
    fn the_script_lists_only_signed_b3iqd_targets() {
        let s = script("https://cp.example", &[("b3iqd-linux-x86_64".into(), 10, "ab".repeat(32)), ("b3iqd-bad;rm -rf".into(), 1, "00".into())]);
        assert!(s.contains(&format!("b3iqd-linux-x86_64) LEN=10; SHA={} ;;", "ab".repeat(32))));
        assert!(!s.contains("bad;"), "an unsafe target name reached the script");
        assert!(s.contains("BASE=\"https://cp.example/releases\""));
    }
}
