//! `b3iq-control`: the B3IQ control plane daemon and its admin CLI. It only parses the command
//! line and calls `b3iq-control`; see `docs/control.md`.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use b3iq_control::store::NodeStatus;
use b3iq_control::{ControlError, ControlHome};
use b3iq_core::job::JobKind;
use b3iq_core::NodeId;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "b3iq-control", version, about = "B3IQ control plane: enrolls nodes by proof of possession and receives their signed heartbeats, over HTTPS. Nodes dial it; it never dials them.",
    after_help = "Quick start:\n  b3iq-control admin create-org acme\n  printf '%s\\n' 'a long operator password' | b3iq-control admin create-operator --org acme --username alice\n  b3iq-control admin enrollment-token --org acme --out token.txt\n  b3iq-control serve                        # prints the job key and the TLS fingerprint\n  # on the node: b3iqd enroll --control https://127.0.0.1:7430 --token-file token.txt --ca-file ~/.b3iq-control/tls/self-signed.crt.pem\n\nThe home directory is $B3IQ_CONTROL_HOME (default ~/.b3iq-control). A Postgres store reads its URL from $B3IQ_CONTROL_DATABASE_URL.\n\nGateway keys and credits:\n  b3iq-control admin add-credits --org acme --amount 25000000 --reference invoice-2041\n  b3iq-control admin gateway-key create --org acme --name app --out gateway-key.txt\n  b3iq-control admin ledger-check")]
struct Cli {
    /// Home directory (default: $B3IQ_CONTROL_HOME, else ~/.b3iq-control).
    #[arg(long, global = true, env = "B3IQ_CONTROL_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the control plane over HTTPS (creates the home, job key and certificate on first start).
    #[command(after_help = "Examples:\n  b3iq-control serve\n  b3iq-control serve --listen 0.0.0.0:7430   # add the public name to tls_names in control.json\n  B3IQ_CONTROL_DATABASE_URL=postgres://b3iq@127.0.0.1:5432/b3iq b3iq-control serve   # with store = \"postgres\" in control.json")]
    Serve {
        /// Listen address (default: control.json `listen`, else 127.0.0.1:7430).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Print the audience id, the job-signing public key and the TLS fingerprint.
    Info,
    /// Print the NodeRegistry attester's address (the key is made on first use, mode 0600, at
    /// control.json settlement.attester_key_file). The registry's owner names it with
    /// `NodeRegistry.setAttester`; from then on this control plane signs node registrations
    /// (`b3iqd wallet register`).
    #[command(after_help = "Example:\n  b3iq-control attester-address\n  # then, as the registry owner: NodeRegistry.setAttester(<printed address>)\n\nNeeds a `settlement` section in control.json (rpc_url, deployment, ...).")]
    AttesterAddress,
    /// Organisations, operators, enrollment tokens, node status, gateway keys and credits, on
    /// this machine.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Disputes on chain from objective evidence (control.json `disputes`): open one from an
    /// evidence file, list them.
    #[command(subcommand, after_help = "Examples:\n  b3iq-control dispute open --evidence conflict.evidence\n  b3iq-control dispute list\n\nThe evidence file holds the binary encoding of docs/formats.md \"Dispute evidence\". Evidence\nthat does not check (signatures, one accused node, the fault itself) is refused before anything is sent.")]
    Dispute(DisputeCmd),
}

#[derive(Subcommand)]
enum DisputeCmd {
    /// Check evidence and open its dispute on chain (when its epoch is posted; a running
    /// `serve` takes it from there: vote, appeal window, slash).
    Open {
        /// The evidence file (its binary encoding).
        #[arg(long)]
        evidence: PathBuf,
    },
    /// Every dispute recorded here, oldest first (JSON).
    List {
        /// Most rows (default 100).
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create an organisation.
    #[command(after_help = "Example:\n  b3iq-control admin create-org acme")]
    CreateOrg {
        /// Name (1 to 64 of letters, digits, space, `. _ -`).
        name: String,
    },
    /// Create an operator; the password is the first line of stdin (10 to 1024 characters).
    #[command(after_help = "Example:\n  printf '%s\\n' 'a long operator password' | b3iq-control admin create-operator --org acme --username alice")]
    CreateOperator {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Sign-in name (letters, digits, `_ . -`, at most 64).
        #[arg(long)]
        username: String,
    },
    /// Make a single-use enrollment token (shown once; only its hash is kept).
    #[command(after_help = "Examples:\n  b3iq-control admin enrollment-token --org acme --out token.txt\n  b3iq-control admin enrollment-token --org acme --ttl-s 3600   # prints the token on stdout")]
    EnrollmentToken {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Lifetime in seconds (default 86400, at most 30 days).
        #[arg(long, default_value_t = 86_400)]
        ttl_s: u64,
        /// Write the token to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List an organisation's nodes with presence (online, offline, never_seen, ...).
    #[command(after_help = "Example:\n  b3iq-control admin nodes --org acme")]
    Nodes {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
    },
    /// Queue a signed job for a node (the node long-polls for it; medium and high risk jobs wait
    /// for the owner's approval on the node).
    #[command(after_help = "Examples:\n  b3iq-control admin queue-job --org acme --by alice b3n_... run_benchmark\n  b3iq-control admin queue-job --org acme --by alice b3n_... build_support_bundle\n  b3iq-control admin queue-job --org acme --by alice b3n_... install_model_profile --profile-id smollm2-135m-instruct-q4_1\n  b3iq-control admin queue-job --org acme --by alice b3n_... change_mode --mode local\n  b3iq-control admin queue-job --org acme --by alice b3n_... update --version 0.2.0")]
    QueueJob {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// The operator queuing it (recorded with the job).
        #[arg(long)]
        by: String,
        /// Node id (`b3n_...`).
        node_id: String,
        /// Job kind (the closed core set).
        #[arg(value_parser = ["run_benchmark", "build_support_bundle", "install_model_profile", "remove_model_profile", "restart_runtime", "change_mode", "update", "load_model"])]
        kind: String,
        /// Model profile for install_model_profile / remove_model_profile.
        #[arg(long)]
        profile_id: Option<String>,
        /// Target mode for change_mode (local, managed, network).
        #[arg(long)]
        mode: Option<String>,
        /// For update: the lowest release version the node may install (MAJOR.MINOR.PATCH); the
        /// node installs its repository's signed current release, and refuses if it is older.
        #[arg(long)]
        version: Option<String>,
        /// For load_model: the installed model's id (as the node's `/v1/models` lists it).
        #[arg(long)]
        model: Option<String>,
        /// Lifetime in seconds (default 3600, at most 86400).
        #[arg(long)]
        ttl_s: Option<u64>,
    },
    /// List a node's jobs with their outcomes and results.
    #[command(after_help = "Example:\n  b3iq-control admin jobs --org acme b3n_...")]
    Jobs {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Node id (`b3n_...`).
        node_id: String,
    },
    /// A node's uploaded receipts: count and usage per model and day.
    #[command(after_help = "Example:\n  b3iq-control admin usage --org acme b3n_...")]
    Usage {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Node id (`b3n_...`).
        node_id: String,
    },
    /// Rotate the job-signing key: make a new one (in job-keys/ under the home), make it
    /// current, and queue to every active node a rotate_issuer_key job signed by the key it pins.
    #[command(after_help = "Examples:\n  b3iq-control admin rotate-job-key            # new key; nodes move to it as they poll\n  b3iq-control admin rotate-job-key --resend   # no new key: queue the move again for nodes still on an old key\n  b3iq-control admin job-keys                  # which nodes still pin which key\n\nA running control plane picks the new key up by itself. Other replicas need a copy of the new file in job-keys/. Keep old key files until `job-keys` shows no node pinning them.")]
    RotateJobKey {
        /// Do not make a new key; queue the rotation again for nodes that still pin an old key
        /// (a node that was offline past the 24-hour job lifetime).
        #[arg(long)]
        resend: bool,
    },
    /// List the job-signing keys: which is current, how many active nodes still pin each.
    #[command(after_help = "Example:\n  b3iq-control admin job-keys")]
    JobKeys,
    /// Suspend, resume or revoke a node (revocation is permanent for that node key).
    #[command(after_help = "Examples:\n  b3iq-control admin set-status --org acme b3n_... suspended --reason 'billing hold'\n  b3iq-control admin set-status --org acme b3n_... active")]
    SetStatus {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Node id (`b3n_...`).
        node_id: String,
        /// New status.
        #[arg(value_parser = ["active", "suspended", "revoked"])]
        status: String,
        /// Short reason shown to the node (at most 200 characters).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Add credits to an organisation, in micro-credits (1 credit = 1,000,000). Money moves only
    /// here, on the control plane's machine: there is no HTTP route for it.
    #[command(after_help = "Examples:\n  b3iq-control admin add-credits --org acme --amount 25000000 --reference invoice-2041   # 25 credits\n  b3iq-control admin credits --org acme\n\nEach reference tops up once: running the same command again is refused, so a retry cannot pay twice.")]
    AddCredits {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Micro-credits to add (1 to 10^15).
        #[arg(long)]
        amount: u64,
        /// The payment or invoice this top-up records (unique, at most 200 characters).
        #[arg(long)]
        reference: String,
    },
    /// An organisation's credits (available, held, spent, topped up) and its latest ledger
    /// transactions.
    #[command(after_help = "Example:\n  b3iq-control admin credits --org acme --limit 50")]
    Credits {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Ledger transactions to list (newest first, at most 500).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Gateway keys (`b3iq_gateway_`): developers call the hosted gateway with them, spending
    /// their organisation's credits.
    #[command(subcommand)]
    GatewayKey(GatewayKeyCmd),
    /// Check the credit ledger: every row sums to zero, every transaction balances, every
    /// balance matches its rows and the open holds. Exits non-zero when it does not.
    #[command(after_help = "Example:\n  b3iq-control admin ledger-check && echo consistent")]
    LedgerCheck,
}

#[derive(Subcommand)]
enum GatewayKeyCmd {
    /// Make a gateway key (shown once; only its hash is kept).
    #[command(after_help = "Examples:\n  b3iq-control admin gateway-key create --org acme --name ci --out gateway-key.txt\n  b3iq-control admin gateway-key create --org acme --name app --rate-per-min 600 --spend-limit-per-day 50000000\n\nThe spend limit counts settled charges and open holds of each UTC day, in micro-credits.")]
    Create {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Display name (1 to 64 of letters, digits, space, `. _ -`).
        #[arg(long)]
        name: String,
        /// Requests per minute (one bucket per key in the store, shared by every gateway replica).
        #[arg(long, default_value_t = b3iq_control::gateway::credits::DEFAULT_RATE_PER_MIN)]
        rate_per_min: u32,
        /// Most micro-credits per UTC day (default: no limit beyond the balance).
        #[arg(long)]
        spend_limit_per_day: Option<u64>,
        /// Write the token to this file (mode 0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Revoke a gateway key (refused from its next request on).
    #[command(after_help = "Example:\n  b3iq-control admin gateway-key revoke --org acme gk_0123456789abcdef")]
    Revoke {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
        /// Key id (`gk_...`).
        id: String,
    },
    /// List an organisation's gateway keys (never the tokens).
    #[command(after_help = "Example:\n  b3iq-control admin gateway-key list --org acme")]
    List {
        /// Organisation id or name.
        #[arg(long)]
        org: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("b3iq-control: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("b3iq-control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn now_ms() -> u64 {
    b3iq_host::context::unix_now_ms()
}

/// Prints `v` on stdout; a closed pipe (`... | head`) ends the output quietly instead of
/// panicking.
fn print_json(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn run(cli: Cli) -> Result<ExitCode, ControlError> {
    let home = ControlHome::locate(cli.home)?;
    match cli.cmd {
        Cmd::Serve { listen } => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_writer(std::io::stderr)
                .init();
            let (settings, cp) = home.open().await?;
            let tls = home.tls(&settings)?;
            let addr = listen.unwrap_or(settings.listen.clone());
            let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| ControlError::Config(format!("cannot listen on {addr}: {e}")))?;
            let bound = listener.local_addr().map_err(|e| ControlError::Config(e.to_string()))?;
            eprintln!("b3iq-control: serving https://{bound} (audience {}, store {})", settings.audience, cp.store().backend());
            eprintln!("b3iq-control: job-signing key {}", cp.job_public_key().await?.to_hex());
            eprintln!("b3iq-control: TLS {} certificate {} (SHA-256 {})", tls.info.mode, tls.info.cert_path.display(), tls.info.fingerprint_sha256);
            // Releases holds a crashed gateway left open (gateway::credits).
            let sweeper = cp.spawn_hold_sweeper(b3iq_control::gateway::credits::HOLD_MAX_AGE_MS, b3iq_control::gateway::credits::HOLD_SWEEP_INTERVAL);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(());
            });
            let gw = home.gateway(&settings, cp.clone())?;
            // Settlement epochs (control.json `settlement`): closed, built, posted on a schedule.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let settler = match home.settler(&settings, &cp).await? {
                Some(st) => {
                    eprintln!("b3iq-control: settlement every {} s, settler {}", settings.settlement.as_ref().map_or(0, |c| c.epoch_interval_s), st.address());
                    Some(tokio::spawn(st.run(stop_rx.clone())))
                }
                None => None,
            };
            // Disputes on chain (control.json `disputes`): opened, voted, slashed on a schedule.
            let disputer = match home.dispute_tool(&settings, &cp).await? {
                Some(t) => {
                    eprintln!("b3iq-control: disputes on chain on");
                    Some(tokio::spawn(t.run(stop_rx.clone())))
                }
                None => None,
            };
            if let Some(r) = home.registrar(&settings, &cp).await? {
                eprintln!("b3iq-control: NodeRegistry attester {} (nodes register with `b3iqd wallet register`)", r.address());
            }
            eprintln!("b3iq-control: gateway at https://{bound}/v1 (ticket key {}); nodes in network mode open their tunnels here", gw.ticket_public_key().to_hex());
            // The signed release repository (docs/release.md): files are read per request, so a
            // release published into releases/ while the control plane runs is served at once.
            let releases = Some(home.root().join("releases"));
            b3iq_control::home::serve_full(listener, cp, Some(gw), releases, &tls, rx).await;
            sweeper.abort();
            let _ = stop_tx.send(true);
            if let Some(t) = settler {
                let _ = t.await;
            }
            if let Some(t) = disputer {
                let _ = t.await;
            }
            eprintln!("b3iq-control: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Info => {
            let (s, cp) = home.open().await?;
            let tls = home.tls(&s)?;
            print_json(&serde_json::json!({
                "audience": s.audience,
                "job_key": cp.job_public_key().await?.to_hex(),
                "listen": s.listen,
                "store": s.store,
                "tls": {"mode": tls.info.mode, "fingerprint_sha256": tls.info.fingerprint_sha256, "cert_path": tls.info.cert_path},
            }));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dispute(DisputeCmd::Open { evidence }) => {
            let (s, cp) = home.open().await?;
            let bytes = std::fs::read(&evidence).map_err(|e| ControlError::Config(format!("read {}: {e}", evidence.display())))?;
            let e = b3iq_core::evidence::Evidence::decode(&bytes).map_err(|e| ControlError::Invalid { field: "evidence", reason: e.to_string() })?;
            let now = b3iq_host::context::unix_now_ms();
            let row = match home.dispute_tool(&s, &cp).await? {
                Some(t) => t.open(&e, now).await?,
                None => {
                    let rules = b3iq_core::evidence::EvidenceRules::default();
                    let row = b3iq_control::disputes::record_evidence(cp.store().as_ref(), &e, &rules, now).await?;
                    eprintln!("b3iq-control: control.json has no `disputes`: recorded, not opened on chain");
                    row
                }
            };
            print_json(&dispute_json(&row));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dispute(DisputeCmd::List { limit }) => {
            let (_, cp) = home.open().await?;
            let rows = cp.store().list_disputes(false, limit).await?;
            print_json(&serde_json::Value::Array(rows.iter().map(dispute_json).collect()));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::AttesterAddress => {
            let s = home.settings()?;
            match home.attester_key(&s)? {
                Some(k) => println!("{}", b3iq_core::payout::EthAddress(k.address().0 .0)),
                None => {
                    eprintln!("b3iq-control: no `settlement` section in control.json: there is no chain to register nodes on");
                    return Ok(ExitCode::FAILURE);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Admin(a) => {
            let (_, cp) = home.open().await?;
            match a {
                AdminCmd::CreateOrg { name } => {
                    let org = cp.create_org(&name, now_ms()).await?;
                    print_json(&serde_json::json!(org));
                }
                AdminCmd::CreateOperator { org, username } => {
                    let mut line = String::new();
                    std::io::stdin().lock().read_line(&mut line).map_err(|e| ControlError::Config(format!("read the password from stdin: {e}")))?;
                    let password = line.trim_end_matches(['\n', '\r']);
                    let op = cp.create_operator(&org, &username, password, now_ms()).await?;
                    print_json(&serde_json::json!({"id": op.id, "org_id": op.org_id, "username": op.username}));
                }
                AdminCmd::EnrollmentToken { org, ttl_s, out } => {
                    let ttl_ms = ttl_s.checked_mul(1000).ok_or(ControlError::Invalid { field: "ttl_s", reason: "too large".into() })?;
                    let (row, token) = cp.create_enrollment_token(&org, ttl_ms, now_ms()).await?;
                    match out {
                        Some(p) => {
                            b3iq_host::context::home::write_atomic(&p, format!("{token}\n").as_bytes(), 0o600).map_err(|e| ControlError::Config(e.to_string()))?;
                            eprintln!("b3iq-control: enrollment token {} for {} written to {} (single use, expires at {} ms)", row.id, row.org_id, p.display(), row.expires_at_ms);
                        }
                        None => {
                            eprintln!("b3iq-control: enrollment token {} for {} (single use, expires at {} ms); shown once:", row.id, row.org_id, row.expires_at_ms);
                            println!("{token}");
                        }
                    }
                }
                AdminCmd::Nodes { org } => {
                    let org = cp.org(&org).await?;
                    print_json(&serde_json::json!({"nodes": cp.nodes(&org.id, now_ms()).await?}));
                }
                AdminCmd::QueueJob { org, by, node_id, kind, profile_id, mode, version, model, ttl_s } => {
                    let org = cp.org(&org).await?;
                    let op = cp
                        .store()
                        .operator_by_username(&by)
                        .await?
                        .filter(|o| o.org_id == org.id)
                        .ok_or_else(|| ControlError::Invalid { field: "by", reason: format!("no operator {by:?} in {}", org.name) })?;
                    let id = NodeId::parse(&node_id).map_err(|e| ControlError::Invalid { field: "node_id", reason: e.to_string() })?;
                    let need = |v: Option<String>, what: &'static str| v.ok_or(ControlError::Invalid { field: what, reason: format!("{kind} needs --{}", what.replace('_', "-")) });
                    let k = match kind.as_str() {
                        "run_benchmark" => JobKind::RunBenchmark { suite: "quick".into() },
                        "build_support_bundle" => JobKind::BuildSupportBundle {},
                        "install_model_profile" => JobKind::InstallModelProfile { profile_id: need(profile_id, "profile_id")? },
                        "remove_model_profile" => JobKind::RemoveModelProfile { profile_id: need(profile_id, "profile_id")? },
                        "restart_runtime" => JobKind::RestartRuntime {},
                        "update" => JobKind::Update { version },
                        "load_model" => JobKind::LoadModel { model: need(model, "model")? },
                        _ => JobKind::ChangeMode {
                            mode: need(mode, "mode")?.parse().map_err(|e: b3iq_core::CoreError| ControlError::Invalid { field: "mode", reason: e.to_string() })?,
                        },
                    };
                    let ttl_ms = ttl_s.map(|s| s.saturating_mul(1000));
                    let v = cp.queue_job(&op, &id, k, ttl_ms, now_ms()).await?;
                    print_json(&serde_json::json!(v));
                }
                AdminCmd::Jobs { org, node_id } => {
                    let org = cp.org(&org).await?;
                    let id = NodeId::parse(&node_id).map_err(|e| ControlError::Invalid { field: "node_id", reason: e.to_string() })?;
                    print_json(&serde_json::json!({"jobs": cp.jobs(&org.id, &id).await?}));
                }
                AdminCmd::Usage { org, node_id } => {
                    let org = cp.org(&org).await?;
                    let id = NodeId::parse(&node_id).map_err(|e| ControlError::Invalid { field: "node_id", reason: e.to_string() })?;
                    print_json(&cp.usage(&org.id, &id).await?);
                }
                AdminCmd::RotateJobKey { resend } => {
                    let r = if resend { cp.resend_rotations(now_ms()).await? } else { cp.rotate_job_key(now_ms()).await? };
                    eprintln!("b3iq-control: job key {} is current; {} rotate_issuer_key job(s) queued", r.job_key.to_hex(), r.queued);
                    print_json(&serde_json::json!(r));
                }
                AdminCmd::JobKeys => {
                    print_json(&serde_json::json!({"job_keys": cp.job_keys(now_ms()).await?}));
                }
                AdminCmd::SetStatus { org, node_id, status, reason } => {
                    let org = cp.org(&org).await?;
                    let id = NodeId::parse(&node_id).map_err(|e| ControlError::Invalid { field: "node_id", reason: e.to_string() })?;
                    let st = match status.as_str() {
                        "active" => NodeStatus::Active,
                        "suspended" => NodeStatus::Suspended,
                        _ => NodeStatus::Revoked,
                    };
                    cp.set_node_status(&org.id, &id, st, &reason).await?;
                    eprintln!("b3iq-control: {node_id} is now {status}");
                }
                AdminCmd::AddCredits { org, amount, reference } => {
                    let org = cp.org(&org).await?;
                    let available = cp.add_credits(&org.id, amount, &reference, now_ms()).await?;
                    eprintln!("b3iq-control: added {amount} micro-credits to {} ({reference})", org.name);
                    print_json(&serde_json::json!({"org_id": org.id, "added": amount, "available": available}));
                }
                AdminCmd::Credits { org, limit } => {
                    let org = cp.org(&org).await?;
                    print_json(&serde_json::json!({
                        "org_id": org.id,
                        "balance": cp.credit_balance(&org.id).await?,
                        "ledger": cp.credit_ledger(&org.id, limit).await?,
                    }));
                }
                AdminCmd::GatewayKey(GatewayKeyCmd::Create { org, name, rate_per_min, spend_limit_per_day, out }) => {
                    let (key, token) = cp.create_gateway_key(&org, &name, rate_per_min, spend_limit_per_day, now_ms()).await?;
                    match out {
                        Some(p) => {
                            b3iq_host::context::home::write_atomic(&p, format!("{token}\n").as_bytes(), 0o600).map_err(|e| ControlError::Config(e.to_string()))?;
                            eprintln!("b3iq-control: gateway key {} for {} written to {} (shown once)", key.id, key.org_id, p.display());
                            print_json(&serde_json::json!(key));
                        }
                        None => {
                            eprintln!("b3iq-control: gateway key {} for {}; shown once:", key.id, key.org_id);
                            println!("{token}");
                        }
                    }
                }
                AdminCmd::GatewayKey(GatewayKeyCmd::Revoke { org, id }) => {
                    let org = cp.org(&org).await?;
                    cp.revoke_gateway_key(&org.id, &id, now_ms()).await?;
                    eprintln!("b3iq-control: gateway key {id} is revoked");
                }
                AdminCmd::GatewayKey(GatewayKeyCmd::List { org }) => {
                    let org = cp.org(&org).await?;
                    print_json(&serde_json::json!({"gateway_keys": cp.gateway_keys(&org.id).await?}));
                }
                AdminCmd::LedgerCheck => {
                    let check = cp.ledger_check().await?;
                    let ok = check.ok();
                    print_json(&serde_json::json!({"ok": ok, "check": check}));
                    if !ok {
                        eprintln!("b3iq-control: the credit ledger is NOT consistent (see above)");
                        return Ok(ExitCode::FAILURE);
                    }
                    eprintln!("b3iq-control: the credit ledger is consistent ({} transactions, sum 0)", check.transactions);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// A dispute row as JSON (the evidence itself is left out; its hash names it).
fn dispute_json(d: &b3iq_control::store::DisputeRow) -> serde_json::Value {
    serde_json::json!({
        "evidence_hash": format!("0x{}", b3iq_core::Hash32(d.evidence_hash).to_hex()),
        "kind": d.kind,
        "node_id": d.subject.to_text(),
        "request_id": b3iq_core::receipt::RequestId(d.request_id).to_hex(),
        "status": d.status,
        "epoch_id": d.epoch_id,
        "chain_dispute_id": d.chain_dispute_id,
        "open_tx": d.chain_tx,
        "vote_tx": d.vote_tx,
        "slash_tx": d.slash_tx,
        "opened_at_ms": d.opened_at_ms,
        "updated_at_ms": d.updated_at_ms,
    })
}
