//! `b3iq-release`: the maintainers' release tool (docs/release.md): make signing keys, the root
//! metadata (first root and rotations) and signed releases with tough's repository editor.
//! Keys are read from files given by path; key material never appears on the command line.
//! `cargo xtask release` drives it.

use std::path::PathBuf;
use std::process::ExitCode;

use b3iq_host::update::publish::{self, Release, ReleaseFile, RootSpec};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "b3iq-release",
    about = "Sign B3IQ releases (TUF, docs/release.md)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate the role keys missing from DIR: root-1.key, root-2.key, root-3.key (threshold 2),
    /// targets.key, snapshot.key, timestamp.key (Ed25519, PKCS#8 DER, mode 0600).
    Keys {
        /// Key directory (created 0700).
        #[arg(long)]
        dir: PathBuf,
    },
    /// Write signed root metadata. For a rotation pass --previous (the current root) and --sign
    /// the old root's threshold of keys as well as the new root's.
    Root {
        /// Root role key files (private; their public halves go into the root).
        #[arg(long = "root-key", required = true)]
        root_keys: Vec<PathBuf>,
        /// Root signatures required.
        #[arg(long, default_value_t = 2)]
        root_threshold: u64,
        #[arg(long = "targets-key", required = true)]
        targets_keys: Vec<PathBuf>,
        #[arg(long = "snapshot-key", required = true)]
        snapshot_keys: Vec<PathBuf>,
        #[arg(long = "timestamp-key", required = true)]
        timestamp_keys: Vec<PathBuf>,
        /// Key files that sign this root.
        #[arg(long = "sign", required = true)]
        sign: Vec<PathBuf>,
        /// The current root (for a rotation): the new version is its version + 1.
        #[arg(long)]
        previous: Option<PathBuf>,
        /// Days until the root expires.
        #[arg(long, default_value_t = 365)]
        expires_days: i64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a release: targets (with version and notes), snapshot, timestamp.
    Publish {
        /// The current root metadata file.
        #[arg(long)]
        root: PathBuf,
        /// Version (dotted numbers).
        #[arg(long)]
        version: String,
        /// Release notes' summary.
        #[arg(long, default_value = "")]
        notes: String,
        /// NAME=PATH, e.g. b3iqd-linux-x86_64=target/release/b3iqd (repeatable).
        #[arg(long = "file", required = true)]
        files: Vec<String>,
        /// Key files for targets, snapshot and timestamp.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Days until targets and snapshot expire.
        #[arg(long, default_value_t = 90)]
        expires_days: i64,
        /// Days until the timestamp expires.
        #[arg(long, default_value_t = 7)]
        timestamp_expires_days: i64,
        /// Repository directory (metadata/ and targets/ are written under it).
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-sign only the timestamp of the repository in --out (same snapshot, a higher version,
    /// a new expiry), before the current one expires and without a new release. Run it from
    /// cron on the machine that holds the timestamp key, e.g. daily:
    /// `17 3 * * * b3iq-release timestamp --root /srv/b3iq/root.json --key /srv/b3iq/keys/timestamp.key --out /srv/b3iq/repo`
    #[command(
        after_help = "Example (crontab, daily at 03:17):\n  17 3 * * * b3iq-release timestamp --root /srv/b3iq/root.json --key /srv/b3iq/keys/timestamp.key --out /srv/b3iq/repo"
    )]
    Timestamp {
        /// The current root metadata file.
        #[arg(long)]
        root: PathBuf,
        /// Timestamp key file(s).
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// Days until the new timestamp expires.
        #[arg(long, default_value_t = 7)]
        expires_days: i64,
        /// Repository directory (its metadata/timestamp.json is replaced).
        #[arg(long)]
        out: PathBuf,
    },
}

fn days(n: i64) -> jiff_ts::Timestamp {
    jiff_ts::Timestamp::now() + jiff_ts::SignedDuration::from_hours(24 * n)
}

use b3iq_host::update::publish::jiff as jiff_ts;

/// Now in Unix seconds: the metadata versions this tool writes (so they only grow).
fn unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("b3iq-release: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> publish::Result<()> {
    match cli.cmd {
        Cmd::Keys { dir } => {
            std::fs::create_dir_all(&dir)
                .map_err(|e| publish::PublishError(format!("create {}: {e}", dir.display())))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
            for name in [
                "root-1",
                "root-2",
                "root-3",
                "targets",
                "snapshot",
                "timestamp",
            ] {
                let p = dir.join(format!("{name}.key"));
                if !p.exists() {
                    publish::generate_key(&p)?;
                    eprintln!("b3iq-release: wrote {}", p.display());
                }
            }
            Ok(())
        }
        Cmd::Root {
            root_keys,
            root_threshold,
            targets_keys,
            snapshot_keys,
            timestamp_keys,
            sign,
            previous,
            expires_days,
            out,
        } => {
            let prev = previous.as_deref().map(publish::read_root).transpose()?;
            let version = prev
                .as_ref()
                .map(|p| p.signed.version.get() + 1)
                .unwrap_or(1);
            let spec = RootSpec {
                root: root_keys,
                root_threshold,
                targets: targets_keys,
                snapshot: snapshot_keys,
                timestamp: timestamp_keys,
                version,
                expires: days(expires_days),
            };
            let bytes = publish::make_root(&spec, &sign, prev.as_ref()).await?;
            std::fs::write(&out, bytes)
                .map_err(|e| publish::PublishError(format!("write {}: {e}", out.display())))?;
            eprintln!(
                "b3iq-release: wrote root version {version} to {}",
                out.display()
            );
            Ok(())
        }
        Cmd::Publish {
            root,
            version,
            notes,
            files,
            keys,
            expires_days,
            timestamp_expires_days,
            out,
        } => {
            let files = files
                .iter()
                .map(|f| match f.split_once('=') {
                    Some((n, p)) => Ok(ReleaseFile {
                        name: n.to_string(),
                        path: PathBuf::from(p),
                    }),
                    None => Err(publish::PublishError(format!(
                        "--file {f:?}: expected NAME=PATH"
                    ))),
                })
                .collect::<publish::Result<Vec<_>>>()?;
            let meta_version = unix_s();
            let r = Release {
                root,
                version,
                notes,
                files,
                meta_version,
                expires: days(expires_days),
                timestamp_expires: days(timestamp_expires_days),
                keys,
            };
            publish::publish(&r, &out).await?;
            eprintln!(
                "b3iq-release: signed release {} (metadata version {meta_version}) into {}",
                r.version,
                out.display()
            );
            Ok(())
        }
        Cmd::Timestamp {
            root,
            keys,
            expires_days,
            out,
        } => {
            let expires = days(expires_days);
            let v = publish::refresh_timestamp(&root, &out, &keys, expires, unix_s()).await?;
            eprintln!(
                "b3iq-release: re-signed the timestamp of {} (version {v}, expires {expires})",
                out.display()
            );
            Ok(())
        }
    }
}
