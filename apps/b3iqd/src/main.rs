//! `b3iqd`: the B3IQ reference host daemon and CLI. It only parses the command line and calls
//! `b3iq-host`; see `docs/cli.md`.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use b3iq_host::ops::{self, Offline};

mod dispute;
mod wallet;
use b3iq_host::{HostError, LocalNode};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "b3iqd",
    version,
    about = "B3IQ local inference host: a private, authenticated OpenAI-compatible endpoint with signed usage receipts.",
    after_help = "Example:\n  b3iqd serve                      # first start prints the setup URL\n  b3iqd keys create --name laptop  # prints a b3iq_local_ key once\n\nThe home directory is $B3IQ_HOME (default ~/.b3iq)."
)]
struct Cli {
    /// Home directory (default: $B3IQ_HOME, else ~/.b3iq).
    #[arg(long, global = true, env = "B3IQ_HOME")]
    home: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the node: create the home on first start, print the setup URL, serve the API.
    #[command(
        after_help = "Examples:\n  b3iqd serve --listen 127.0.0.1:7420 --model smollm2-135m-instruct-q4_1\n  b3iqd serve --model ./my-model.gguf\n  b3iqd serve --listen 192.168.1.20:7420 --tls self-signed   # LAN, encrypted; clients pin the printed fingerprint\n  b3iqd serve --listen 0.0.0.0:7420 --tls provided --tls-cert node.crt --tls-key node.key\n\nOn a LAN bind, add the name or address clients use to allowed_hosts in config.json."
    )]
    Serve {
        /// Address to listen on (loopback by default; a LAN address needs a claimed owner).
        #[arg(long)]
        listen: Option<String>,
        /// TLS: off, self-signed (kept under $B3IQ_HOME/tls/; remade, with a new fingerprint,
        /// when the node's names change) or provided (--tls-cert, --tls-key; given alone they
        /// imply provided). Default: config.json `tls`, else off.
        #[arg(long, value_parser = ["off", "self-signed", "provided"])]
        tls: Option<String>,
        /// PEM certificate chain for --tls provided.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<String>,
        /// PEM private key for --tls provided.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<String>,
        /// Model profile id or path of a GGUF file (default: the default profile, installed if missing).
        #[arg(long)]
        model: Option<String>,
        /// Serve the API without loading a model (inference answers 503 model_not_loaded).
        #[arg(long, conflicts_with = "model")]
        no_model: bool,
        /// Inference backend: auto, llama_cpp, or wgpu (WGSL kernels on any Vulkan/Metal/DX12
        /// GPU, for LLaMA GGUF models). auto picks wgpu for an AMD, Intel or Apple GPU when
        /// llama.cpp is built for the CPU only, else llama_cpp; the log says which and why.
        /// Default: config.json `backend` (auto).
        #[arg(long, value_parser = ["auto", "llama_cpp", "wgpu"])]
        backend: Option<String>,
        /// Log as JSON lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Show node id, claim state, keys and receipts counts.
    #[command(after_help = "Example:\n  b3iqd status")]
    Status,
    /// Show the hardware summary, SKU band and which model profiles fit.
    #[command(after_help = "Example:\n  b3iqd hardware")]
    Hardware,
    /// Run a quick benchmark of a model in process (tokens/s, time to first token).
    #[command(after_help = "Example:\n  b3iqd bench --model smollm2-135m-instruct-q4_1")]
    Bench {
        /// Model profile id or GGUF path.
        #[arg(long)]
        model: Option<String>,
    },
    /// Manage the model store.
    #[command(
        subcommand,
        after_help = "Example:\n  b3iqd model pull smollm2-135m-instruct-q4_1\n  b3iqd model list\n  b3iqd model import ./model.gguf --quantize q8_0\n  # with `b3iqd serve` running:\n  b3iqd model ps\n  b3iqd model load smollm2-135m-instruct.q8_0\n  b3iqd model unload smollm2-135m-instruct.q8_0"
    )]
    Model(ModelCmd),
    /// Manage local API keys (`b3iq_local_...`).
    #[command(
        subcommand,
        after_help = "Example:\n  b3iqd keys create --name laptop --scope inference\n  b3iqd keys list\n  b3iqd keys revoke key_0123abcd"
    )]
    Keys(KeysCmd),
    /// Export and verify signed usage receipts.
    #[command(
        subcommand,
        after_help = "Example:\n  b3iqd receipts export --out receipts.json\n  b3iqd receipts verify receipts.json"
    )]
    Receipts(ReceiptsCmd),
    /// Write a redacted diagnostics archive (no keys, tokens, hashes, prompts or paths).
    #[command(after_help = "Example:\n  b3iqd support-bundle --out b3iq-support.tar.gz")]
    SupportBundle {
        /// Output file.
        #[arg(long, default_value = "b3iq-support.tar.gz")]
        out: PathBuf,
    },
    /// Owner account recovery, on the machine itself.
    #[command(
        subcommand,
        after_help = "Example:\n  printf '%s\\n' 'a new long password' | b3iqd owner reset-password"
    )]
    Owner(OwnerCmd),
    /// Enroll this node in a control plane (managed mode: remote support with no inbound port).
    /// The token is single use; read from a file or stdin, never from the command line.
    #[command(
        after_help = "Examples:\n  b3iqd enroll --control https://cp.example:7430 --token-file token.txt\n  b3iqd enroll --control https://127.0.0.1:7430 --token-file - --ca-file control.crt.pem < token.txt\n\nThe node proves it holds its key by signing the control plane's one-time challenge; the key never\nleaves the node. The control plane's job-signing key is pinned as a trust root. A running daemon\nstarts sending signed heartbeats within seconds. `b3iqd status` shows the control plane and the\nlast heartbeat."
    )]
    Enroll {
        /// The control plane's base URL (https only).
        #[arg(long)]
        control: String,
        /// File holding the b3iq_enroll_ token (first line), or `-` for stdin.
        #[arg(long)]
        token_file: PathBuf,
        /// PEM certificate(s) to trust for the control plane's TLS instead of the web roots (its
        /// self-signed certificate, or a private CA).
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Network mode: serve paid requests from the control plane's gateway through a tunnel this
    /// node dials (no inbound port), within your policy. Needs an enrollment (`b3iqd enroll`).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// The payout wallet: where this node's share of each settlement epoch is paid, earnings,
    /// and claims on chain; and the operator wallet: on-chain registration and stake.
    #[command(subcommand, after_help = "Examples:\n  b3iqd wallet create                       # key made here: ~/.b3iq/wallet.key, mode 0600\n  b3iqd wallet set-address 0x52908400098527886E0F7030069857D2E4169EE7   # address only\n  b3iqd wallet earnings --rpc http://127.0.0.1:8545\n  b3iqd wallet claim --rpc http://127.0.0.1:8545\n  b3iqd wallet register --rpc http://127.0.0.1:8545   # on chain, attested by the control plane\n  b3iqd wallet stake 100000000000000000000 --rpc http://127.0.0.1:8545\n  b3iqd wallet stake-status --rpc http://127.0.0.1:8545\n\nThe address goes to the control plane (signed by the node key) when enrolled; epochs closed from then\non pay it. A claim pays the payout address whoever sends it.")]
    Wallet(WalletCmd),
    /// Disputes opened on chain against this node, and the operator's appeal.
    #[command(subcommand, after_help = "Examples:\n  b3iqd dispute list --rpc http://127.0.0.1:8545 --disputes 0x5FbDB2315678afecb367f032d93F642f64180aa3\n  b3iqd dispute appeal 3 --rpc http://127.0.0.1:8545 --disputes 0x5FbDB2315678afecb367f032d93F642f64180aa3\n\nOnly objective evidence opens a dispute (conflicting receipts, or two verifiers' failed verdicts);\nan upheld dispute can be appealed until its appeal deadline, from the wallet that registered the node.")]
    Dispute(dispute::DisputeCmd),
    /// Leave managed mode: forget the control plane and its trust root; back to local mode.
    #[command(after_help = "Example:\n  b3iqd unenroll")]
    Unenroll,
    /// Verify another node's generation: its signed receipt and inference attestation against
    /// the opened token ids, with one prefill of the model the receipt names. Prints the
    /// verdict signed by this node's key (dispute evidence; docs/verification.md).
    #[command(
        after_help = "Example:\n  b3iqd verify --receipt receipt.json --attestation attestation.json --tokens tokens.json \\\n      --model ~/.b3iq/models/smollm2.gguf --seed-key 5a5a...5a\n\ntokens.json is {\"prompt\": [ids], \"completion\": [ids]}; receipt.json and attestation.json are the signed JSON forms.\nExit status 0 on pass, 1 on fail or inconclusive."
    )]
    Verify {
        /// The signed receipt (JSON).
        #[arg(long)]
        receipt: PathBuf,
        /// The signed inference attestation (JSON).
        #[arg(long)]
        attestation: PathBuf,
        /// The opened token ids: {"prompt": [..], "completion": [..]}.
        #[arg(long)]
        tokens: PathBuf,
        /// The GGUF file of the receipt's artifact (its sha256 must be the receipt's artifact_digest).
        #[arg(long)]
        model: PathBuf,
        /// The job's seed key, 64 hex characters (sampled requests only).
        #[arg(long)]
        seed_key: Option<String>,
        /// CPU threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
    },
    /// Signed updates (docs/release.md): check the release repository, install a newer signed
    /// release (the old binary is kept as `<binary>.previous`), or roll back to it. Owner-only:
    /// run as the user that owns the home and the binary.
    #[command(subcommand)]
    Update(UpdateCmd),
    /// Setup recovery.
    #[command(
        after_help = "Example:\n  b3iqd setup --reset            # new one-time setup token for an unclaimed node"
    )]
    Setup {
        /// Issue a new setup token (the old one stops working).
        #[arg(long)]
        reset: bool,
        /// Lifetime of the new token in seconds (default: config.json setup_token_ttl_s).
        #[arg(long)]
        ttl_s: Option<u64>,
        /// Port to print in the setup URL.
        #[arg(long)]
        port: Option<u16>,
    },
}

#[derive(Subcommand)]
enum WalletCmd {
    /// Make a new key on this machine (wallet.key in the home, mode 0600) and use its address.
    Create,
    /// Use an address whose key is elsewhere.
    SetAddress {
        /// `0x` + 40 hex characters.
        address: String,
    },
    /// Show the payout address and key file.
    Show,
    /// Earnings per posted epoch (JSON); with --rpc, which are claimed.
    Earnings {
        /// JSON-RPC URL of the chain the control plane settles on.
        #[arg(long)]
        rpc: Option<String>,
    },
    /// Claim every posted epoch not claimed yet (claimed ones are skipped).
    Claim {
        /// JSON-RPC URL of the chain the control plane settles on.
        #[arg(long)]
        rpc: String,
        /// Send from this key file instead of the wallet's own (an address-only wallet).
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Register this node on chain (NodeRegistry): the control plane attests it (signed by this
    /// node's key; it must be enrolled and in network mode), the operator wallet sends it.
    #[command(after_help = "Example:\n  b3iqd wallet register --rpc http://127.0.0.1:8545\n\nThe operator wallet is wallet.key (`b3iqd wallet create`) or --key-file; it needs gas. The control plane\nderives what it attests (device class, hardware hash, software version) from its own records. Running it\nagain once registered says so and exits 0. Then stake: `b3iqd wallet stake`.")]
    Register {
        /// JSON-RPC URL of the network's chain.
        #[arg(long)]
        rpc: String,
        /// Operator key file (`0x` + 64 hex, mode 0600) instead of wallet.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Stake tokens for this node (approve + StakeVault.stake) from the operator wallet. The
    /// gateway routes network requests only to nodes whose bonded stake covers their device
    /// class's minimum (`b3iqd wallet stake-status` shows it).
    #[command(after_help = "Example:\n  b3iqd wallet stake 100000000000000000000 --rpc http://127.0.0.1:8545   # 100 tokens of 18 decimals\n\nAMOUNT is a whole number of token base units. Stake moves between nodes only by unbonding one and staking\nanother; reputation never moves: it belongs to the node id.")]
    Stake {
        /// Token base units (a whole number; 1 token of 18 decimals is 1000000000000000000).
        amount: String,
        /// JSON-RPC URL of the network's chain.
        #[arg(long)]
        rpc: String,
        /// Operator key file instead of wallet.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Start unbonding stake (StakeVault.requestUnbond): it stops counting at once, so a node
    /// left below its class minimum leaves network routing; withdrawable after the vault's delay.
    #[command(after_help = "Example:\n  b3iqd wallet unbond 100000000000000000000 --rpc http://127.0.0.1:8545")]
    Unbond {
        /// Token base units (a whole number).
        amount: String,
        /// JSON-RPC URL of the network's chain.
        #[arg(long)]
        rpc: String,
        /// Operator key file instead of wallet.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// Withdraw stake whose unbonding delay has passed to the operator wallet (StakeVault.withdraw).
    #[command(after_help = "Example:\n  b3iqd wallet withdraw --rpc http://127.0.0.1:8545\n\n`b3iqd wallet stake-status` shows withdrawable_at (unix s); an open dispute against the node freezes it.")]
    Withdraw {
        /// JSON-RPC URL of the network's chain.
        #[arg(long)]
        rpc: String,
        /// Operator key file instead of wallet.key.
        #[arg(long)]
        key_file: Option<PathBuf>,
    },
    /// This node's registration and stake on chain (JSON): registered, operator, device class,
    /// bonded, unbonding, withdrawable_at (unix s), min_stake of the class, is_staked.
    #[command(after_help = "Example:\n  b3iqd wallet stake-status --rpc http://127.0.0.1:8545")]
    StakeStatus {
        /// JSON-RPC URL of the network's chain.
        #[arg(long)]
        rpc: String,
    },
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Switch to network mode (a running daemon opens its tunnel within seconds).
    #[command(
        after_help = "Examples:\n  b3iqd network on\n  b3iqd network on --max-concurrent 2 --max-tokens-per-day 200000 --price-floor-per-1k 50,100\n\nOne slot of the runtime always stays for local keys. The policy can also be edited in the wizard's\nMode step (schedule, models). `b3iqd status` shows the tunnel."
    )]
    On {
        /// Most network requests at once (default: the saved policy's, else 1).
        #[arg(long)]
        max_concurrent: Option<u32>,
        /// Most tokens served to the network per UTC day (0 serves none).
        #[arg(long, conflicts_with = "no_token_limit")]
        max_tokens_per_day: Option<u64>,
        /// Remove the daily token limit.
        #[arg(long)]
        no_token_limit: bool,
        /// Least price accepted, micro-credits per 1,000 prompt and completion tokens: `P,C`.
        #[arg(long)]
        price_floor_per_1k: Option<String>,
        /// Only offer these served models (repeatable; default: keep the saved list, which is
        /// empty, meaning every served model, until set).
        #[arg(long = "model", conflicts_with = "all_models")]
        models: Vec<String>,
        /// Offer every served model again (clears the saved list).
        #[arg(long)]
        all_models: bool,
    },
    /// Leave network mode (back to managed; the tunnel closes after requests in flight finish).
    #[command(after_help = "Example:\n  b3iqd network off")]
    Off,
}

#[derive(Subcommand)]
enum UpdateCmd {
    /// Fetch and verify the repository's metadata; print the current and latest version (JSON).
    /// Exit 0 whether or not an update is available; 1 on any refusal.
    #[command(
        after_help = "Examples:\n  b3iqd update check --repo https://cp.example:7430/releases\n  b3iqd update check --repo https://127.0.0.1:7430/releases --ca-file control.crt.pem\n  b3iqd update check"
    )]
    Check {
        /// Release repository base URL (saved under $B3IQ_HOME/update/repository).
        #[arg(long)]
        repo: Option<String>,
        /// PEM certificate(s) to trust for the repository's TLS instead of the web roots (a
        /// control plane's self-signed certificate); saved as $B3IQ_HOME/update/ca.pem.
        /// config.json `update_ca_file` is the equivalent setting.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// Install the newer signed release if there is one (length and hash checked, atomic swap).
    /// A running `b3iqd serve` notices the new binary and restarts on it.
    #[command(after_help = "Example:\n  b3iqd update apply")]
    Apply {
        /// Release repository base URL (saved under $B3IQ_HOME/update/repository).
        #[arg(long)]
        repo: Option<String>,
        /// PEM certificate(s) to trust for the repository's TLS (see `update check --ca-file`).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Refuse unless the signed current release is at least this version (MAJOR.MINOR.PATCH).
        #[arg(long)]
        at_least: Option<String>,
    },
    /// Put `<binary>.previous` back (the replaced binary becomes `.previous`).
    #[command(after_help = "Example:\n  b3iqd update rollback")]
    Rollback,
}

#[derive(Subcommand)]
enum OwnerCmd {
    /// Set a new owner password read from stdin (first line; 10 to 1024 characters), end every
    /// session and clear every sign-in lock. For a lost password or an owner locked out by
    /// someone else's wrong guesses; works whether or not the daemon runs.
    #[command(
        after_help = "Example:\n  b3iqd owner reset-password < new-password.txt\n  printf '%s\\n' 'a new long password' | b3iqd owner reset-password"
    )]
    ResetPassword,
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Install a catalog profile (checks size and sha256).
    #[command(after_help = "Example:\n  b3iqd model pull smollm2-135m-instruct-q4_1")]
    Pull {
        /// Profile id.
        profile: String,
    },
    /// Install a local GGUF file into the model store (its header is checked, the file copied
    /// and hashed). It is served under its file name's stem, lower-cased: a request naming that
    /// id loads it next to the models already loaded (config.json `max_loaded_models`,
    /// `model_memory_mb`).
    #[command(
        after_help = "Example:\n  b3iqd model import ./Qwen2.5-0.5B-Instruct-Q8_0.gguf\n  # then: model \"qwen2.5-0.5b-instruct-q8_0\" in a request, or POST /api/models/load\n  b3iqd model import ./SmolLM2-135M-Instruct.Q4_1.gguf --quantize q8_0\n  # installs SmolLM2-135M-Instruct.Q8_0.gguf, served as \"smollm2-135m-instruct.q8_0\""
    )]
    Import {
        /// Path of the GGUF file.
        file: std::path::PathBuf,
        /// Requantize it first with llama.cpp (`q8_0`, `q4_0` or `f16`) and install the copy,
        /// named after the source with its quantization tag replaced (`NAME.Q8_0.gguf`).
        #[arg(long, value_parser = ["q8_0", "q4_0", "f16"])]
        quantize: Option<String>,
    },
    /// List the catalog and installed models.
    #[command(after_help = "Example:\n  b3iqd model list")]
    List,
    /// Remove an installed model: profile id, served id or sha256.
    #[command(after_help = "Example:\n  b3iqd model rm smollm2-135m-instruct-q4_1")]
    Rm {
        /// Profile id, served id (`b3iqd model list`) or sha256.
        which: String,
    },
    /// Inspect a GGUF file's header (architecture, parameters, quantization, context).
    #[command(after_help = "Example:\n  b3iqd model inspect ./model.gguf")]
    Inspect {
        /// GGUF path, profile id or sha256.
        which: String,
    },
    /// Show the models the running daemon has loaded: id, estimated resident bytes, requests
    /// in flight, last use; and its limits (`max_loaded_models`, the memory budget).
    #[command(after_help = "Talks to the daemon serving this home (`b3iqd serve`); run it on the same machine.\n\nExample:\n  b3iqd model ps")]
    Ps,
    /// Load an installed model in the running daemon now, so the first request to it does not
    /// wait; the least recently used idle models give way when the limits are reached.
    #[command(after_help = "Talks to the daemon serving this home (`b3iqd serve`); run it on the same machine.\n\nExample:\n  b3iqd model load smollm2-135m-instruct.q8_0\n  b3iqd model ps")]
    Load {
        /// Served id (`b3iqd model list`, `GET /v1/models`) or profile id.
        model: String,
    },
    /// Unload a model from the running daemon (it stays installed; a request naming it loads
    /// it again). Refused while it serves requests.
    #[command(after_help = "Talks to the daemon serving this home (`b3iqd serve`); run it on the same machine.\n\nExample:\n  b3iqd model unload smollm2-135m-instruct.q8_0")]
    Unload {
        /// Served id (`b3iqd model ps`).
        model: String,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Create a key; the secret is printed once (or written to --out, mode 0600).
    #[command(
        after_help = "Example:\n  b3iqd keys create --name laptop\n  b3iqd keys create --name grafana --scope metrics --out grafana.key"
    )]
    Create {
        /// Name to recognise it by.
        #[arg(long)]
        name: String,
        /// Scopes: inference, metrics (repeatable; default inference).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Expire after this many seconds.
        #[arg(long)]
        expires_in_s: Option<u64>,
        /// Write the secret to this file (0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List keys (never the secrets).
    #[command(after_help = "Example:\n  b3iqd keys list")]
    List,
    /// Revoke a key by id.
    #[command(after_help = "Example:\n  b3iqd keys revoke key_0123abcd")]
    Revoke {
        /// Key id.
        id: String,
    },
    /// Rotate the owner's job-signing key (owner.key): the new key replaces the old one as trust
    /// root, so anything signed with the old key is refused from now on. Audited.
    #[command(after_help = "Example:\n  b3iqd keys rotate-owner")]
    RotateOwner,
}

#[derive(Subcommand)]
enum ReceiptsCmd {
    /// Export all receipts with the node public key as JSON.
    #[command(after_help = "Example:\n  b3iqd receipts export --out receipts.json")]
    Export {
        /// Output file (default stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify an export offline (signatures, ids, duplicates). Exit 1 if any is bad.
    #[command(after_help = "Example:\n  b3iqd receipts verify receipts.json --node b3n_...")]
    Verify {
        /// The export file.
        file: PathBuf,
        /// Expected node id.
        #[arg(long)]
        node: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // 16 blocking threads (SQLite, file I/O) are plenty for a local node, and bound the threads
    // (and allocator arenas) a burst of requests can make the daemon hold.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("b3iqd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("b3iqd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `v` on stdout; a closed pipe (`... | head`) ends the output quietly instead of
/// panicking.
fn print_json(v: &serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_default()
    );
}

async fn run(cli: Cli) -> Result<ExitCode, HostError> {
    let home = cli.home.clone();
    match cli.cmd {
        Cmd::Serve {
            listen,
            tls,
            tls_cert,
            tls_key,
            model,
            no_model,
            backend,
            log_json,
        } => {
            b3iq_host::logging::init(log_json);
            let mut b = LocalNode::builder().progress_bar(true);
            if let Some(be) = backend {
                b = b.backend(be);
            }
            if let Some(h) = home {
                b = b.home(h);
            }
            if let Some(l) = listen {
                b = b.listen(l);
            }
            if let Some(m) = model {
                b = b.model(m);
            }
            if no_model {
                b = b.no_model();
            }
            if let Some(t) = tls {
                b = b.tls(t);
            }
            if let (Some(c), Some(k)) = (tls_cert, tls_key) {
                // Relative to where the command runs (config.json's are relative to the home).
                let abs = |p: String| {
                    std::path::absolute(&p)
                        .map(|a| a.display().to_string())
                        .unwrap_or(p)
                };
                b = b.tls_files(abs(c), abs(k));
            }
            let node = b.start().await?;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "b3iqd: node {} ({}) listening on {}",
                node.node_id(),
                node.node_code(),
                node.base_url()
            );
            if let Some(t) = node.tls() {
                let _ = writeln!(
                    out,
                    "b3iqd: TLS ({}) certificate {}\nb3iqd: SHA-256 fingerprint {}",
                    t.mode,
                    t.cert_path.display(),
                    t.fingerprint_sha256
                );
                if let Some(old) = &t.replaced {
                    let _ = writeln!(
                        out,
                        "b3iqd: the node's names changed, so this is a NEW self-signed certificate: clients that pinned the previous fingerprint {} must pin {} now (the previous certificate is kept as {})",
                        old.fingerprint_sha256,
                        t.fingerprint_sha256,
                        old.cert_path.display()
                    );
                }
            } else if !node.local_addr().ip().is_loopback() {
                let _ = writeln!(out, "b3iqd: warning: {} is reachable from the network without TLS; passwords, cookies and API keys travel in clear text (use --tls self-signed)", node.local_addr());
            }
            if let Some(url) = node.setup_url() {
                // The setup token is a secret: print it only to a person at a terminal, never to a
                // log (systemd, a redirect or a pipe); then say where the token file is instead.
                let token_file = node.setup_token_path();
                if node.setup_token_is_new() && out.is_terminal() {
                    let _ = writeln!(out, "b3iqd: open this URL to claim the node (shown once; the token is also in {}):\n{url}", token_file.display());
                } else {
                    let _ = writeln!(
                        out,
                        "b3iqd: node not claimed yet; the one-time setup token is in {} (mode 0600): open {}/setup/ and append #token= and the token, or run `b3iqd setup --reset` for a new one",
                        token_file.display(),
                        node.base_url()
                    );
                }
            }
            let _ = out.flush();
            drop(out);
            // `b3iqd update apply` swaps the binary in place: notice it, stop, and exec the new one.
            let exe = std::env::current_exe().ok();
            let replaced = async {
                match &exe {
                    Some(p) => b3iq_host::update::binary_replaced(p.clone(), std::time::Duration::from_secs(1)).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let restart = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = restart.clone();
            node.serve_until(async move {
                tokio::select! {
                    _ = shutdown_signal() => {}
                    _ = replaced => flag.store(true, std::sync::atomic::Ordering::SeqCst),
                }
            })
            .await;
            if let (true, Some(p)) = (restart.load(std::sync::atomic::Ordering::SeqCst), exe) {
                use std::os::unix::process::CommandExt;
                eprintln!("b3iqd: {} was replaced (update); restarting on the new binary", p.display());
                let err = std::process::Command::new(&p).args(std::env::args_os().skip(1)).exec();
                eprintln!("b3iqd: cannot restart on {}: {err}", p.display());
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status => {
            print_json(&Offline::open_existing(home)?.status()?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Hardware => {
            let o = Offline::open(home)?;
            let hw = b3iq_host::context::runtime::scan_hardware(&o.home);
            let installed = b3iq_host::context::runtime::model_store(&o.home)?.list()?;
            print_json(&b3iq_host::models::hardware_view(&hw, &installed));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Bench { model } => {
            let dir = tempdir_for_bench()?;
            let mut b = LocalNode::builder()
                .home(&dir)
                .listen("127.0.0.1:0")
                .progress_bar(true);
            if let Some(m) = model {
                b = b.model(m);
            }
            let node = b.start().await?;
            let m = node
                .state()
                .served_models()
                .into_iter()
                .next()
                .ok_or(HostError::ModelNotLoaded)?;
            let r = b3iq_host::inference::quick_benchmark(node.state(), &m).await;
            node.shutdown().await;
            let _ = std::fs::remove_dir_all(&dir);
            print_json(&r?);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Model(m) => model_cmd(home, m).await,
        Cmd::Keys(k) => {
            let o = Offline::open_existing(home)?;
            match k {
                KeysCmd::Create {
                    name,
                    scopes,
                    expires_in_s,
                    out,
                } => {
                    let (info, secret) = o.create_key(&name, &scopes, expires_in_s)?;
                    match out {
                        Some(path) => {
                            b3iq_host::context::home::write_atomic(
                                &path,
                                format!("{secret}\n").as_bytes(),
                                0o600,
                            )?;
                            eprintln!(
                                "b3iqd: key {} created; secret written to {}",
                                info.id,
                                path.display()
                            );
                        }
                        None => {
                            eprintln!(
                                "b3iqd: key {} created; the secret below is shown once:",
                                info.id
                            );
                            println!("{secret}");
                        }
                    }
                }
                KeysCmd::List => print_json(&serde_json::json!({"keys": o.list_keys()?})),
                KeysCmd::Revoke { id } => {
                    o.revoke_key(&id)?;
                    eprintln!("b3iqd: key {id} revoked");
                }
                KeysCmd::RotateOwner => {
                    let pk = o.rotate_owner_issuer()?;
                    eprintln!("b3iqd: owner job-signing key rotated; the new public key is {pk}; the old key is no longer trusted");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Receipts(ReceiptsCmd::Export { out }) => {
            let v = Offline::open_existing(home)?.export_receipts()?;
            let text = serde_json::to_string_pretty(&v).unwrap_or_default();
            match out {
                Some(p) => b3iq_host::context::home::write_atomic(&p, text.as_bytes(), 0o600)?,
                None => println!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Receipts(ReceiptsCmd::Verify { file, node }) => {
            let bytes = std::fs::read(&file)
                .map_err(|e| HostError::home(format!("read {}", file.display()), e))?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| HostError::InvalidJson(e.to_string()))?;
            let rep = ops::verify_export(&v, node.as_deref())?;
            print_json(&serde_json::to_value(&rep).unwrap_or_default());
            Ok(
                if rep.invalid.is_empty() && rep.duplicate_request_ids == 0 {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                },
            )
        }
        Cmd::SupportBundle { out } => {
            let o = Offline::open_existing(home)?;
            let bytes = b3iq_host::support::build_offline_bundle(o.0)?;
            b3iq_host::context::home::write_atomic(&out, &bytes, 0o600)?;
            eprintln!("b3iqd: wrote {} ({} bytes)", out.display(), bytes.len());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Owner(OwnerCmd::ResetPassword) => {
            let o = Offline::open_existing(home)?;
            if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                eprintln!("b3iqd: type the new password (10 to 1024 characters) and press Enter; it is echoed, so prefer a pipe or a file");
            }
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| HostError::home("read the new password from stdin", e))?;
            let password = line
                .strip_suffix('\n')
                .map(|l| l.strip_suffix('\r').unwrap_or(l))
                .unwrap_or(&line);
            if password.is_empty() {
                eprintln!("b3iqd: no password read from stdin; pipe it in, e.g. `b3iqd owner reset-password < new-password.txt`");
                return Ok(ExitCode::FAILURE);
            }
            let user = o.reset_owner_password(password)?;
            eprintln!("b3iqd: the password of owner {user:?} was reset; every session ended and every sign-in lock cleared");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Enroll {
            control,
            token_file,
            ca_file,
        } => {
            let token = if token_file.as_os_str() == "-" {
                let mut line = String::new();
                std::io::stdin()
                    .read_line(&mut line)
                    .map_err(|e| HostError::home("read the enrollment token from stdin", e))?;
                line
            } else {
                std::fs::read_to_string(&token_file).map_err(|e| {
                    HostError::home(format!("read the token file {}", token_file.display()), e)
                })?
            };
            let token = token.lines().next().unwrap_or("").trim().to_string();
            let ca = match &ca_file {
                Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                    HostError::home(format!("read the CA file {}", p.display()), e)
                })?),
                None => None,
            };
            let o = Offline::open(home)?;
            let e = o.enroll(&control, &token, ca.as_deref()).await?;
            eprintln!(
                "b3iqd: enrolled {} in control plane {} (organisation {}); managed mode until unix ms {}",
                o.node_id.to_text(),
                e.audience,
                e.org_id,
                e.expires_at_ms
            );
            eprintln!(
                "b3iqd: pinned job-signing key {}; heartbeats every {} s while the daemon runs",
                e.job_key.to_hex(),
                e.heartbeat_interval_ms / 1000
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Network(NetworkCmd::On {
            max_concurrent,
            max_tokens_per_day,
            no_token_limit,
            price_floor_per_1k,
            models,
            all_models,
        }) => {
            let o = Offline::open_existing(home)?;
            let mut p = b3iq_host::network::policy(&o)?;
            let changed = max_concurrent.is_some()
                || max_tokens_per_day.is_some()
                || no_token_limit
                || price_floor_per_1k.is_some()
                || !models.is_empty()
                || all_models;
            if no_token_limit {
                p.max_tokens_per_day = None;
            }
            if all_models {
                p.models.clear();
            }
            if let Some(n) = max_concurrent {
                p.max_concurrent = n;
            }
            if max_tokens_per_day.is_some() {
                p.max_tokens_per_day = max_tokens_per_day;
            }
            if let Some(f) = price_floor_per_1k {
                let (a, b) = f.split_once(',').ok_or_else(|| HostError::InvalidParameter("--price-floor-per-1k takes P,C (micro-credits per 1,000 prompt and completion tokens)".into()))?;
                let num = |x: &str| {
                    x.trim().parse::<u64>().map_err(|_| {
                        HostError::InvalidParameter(format!(
                            "--price-floor-per-1k: {x:?} is not a whole number"
                        ))
                    })
                };
                p.price_floor = b3iq_host::network::PriceSchedule::per_1k(num(a)?, num(b)?)
                    .map_err(HostError::from)?;
            }
            if !models.is_empty() {
                p.models = models;
            }
            let p = b3iq_host::network::enable(&o, changed.then_some(&p))?;
            let offered = b3iq_host::network::offered_concurrency(&o, &p);
            let models = if p.models.is_empty() {
                "every served model".to_string()
            } else {
                p.models.join(", ")
            };
            let tokens = p
                .max_tokens_per_day
                .map(|n| format!("at most {n} tokens a day"))
                .unwrap_or_else(|| "no daily token limit".into());
            eprintln!(
                "b3iqd: network mode on: {offered} request{} at once (one of the {} slots stays for local keys), {tokens}, offering {models}; a running daemon opens its tunnel within seconds; see `b3iqd status`",
                if offered == 1 { "" } else { "s" },
                o.config.parallel
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Network(NetworkCmd::Off) => {
            let o = Offline::open_existing(home)?;
            let m = b3iq_host::network::disable(&o)?;
            eprintln!("b3iqd: network mode off; now in {m} mode");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Wallet(w) => {
            use b3iq_host::managed::wallet;
            let o = Offline::open_existing(home)?;
            let show = |w: &wallet::Wallet| {
                print_json(&serde_json::json!({"address": w.address, "key_file": w.key_file, "sent_to_control_plane": w.sent_to_control_plane}));
            };
            match w {
                WalletCmd::Create => {
                    let w = crate::wallet::create(&o).await?;
                    eprintln!("b3iqd: new wallet {} (key {}, mode 0600; back it up)", w.address, w.key_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default());
                    show(&w);
                }
                WalletCmd::SetAddress { address } => {
                    let a = b3iq_core_address(&address)?;
                    let w = wallet::set_address(&o, a).await?;
                    show(&w);
                }
                WalletCmd::Show => match wallet::wallet(&o)? {
                    Some(w) => show(&w),
                    None => {
                        eprintln!("b3iqd: no payout wallet; `b3iqd wallet create` or `b3iqd wallet set-address 0x...`");
                        return Ok(ExitCode::FAILURE);
                    }
                },
                WalletCmd::Earnings { rpc } => print_json(&crate::wallet::earnings(&o, rpc.as_deref()).await?),
                WalletCmd::Claim { rpc, key_file } => {
                    let done = crate::wallet::claim(&o, &rpc, key_file).await?;
                    print_json(&serde_json::to_value(&done).unwrap_or_default());
                }
                WalletCmd::Register { rpc, key_file } => print_json(&serde_json::to_value(crate::wallet::register(&o, &rpc, key_file).await?).unwrap_or_default()),
                WalletCmd::Stake { amount, rpc, key_file } => print_json(&crate::wallet::stake(&o, &rpc, crate::wallet::parse_amount(&amount)?, key_file).await?),
                WalletCmd::Unbond { amount, rpc, key_file } => print_json(&crate::wallet::unbond(&o, &rpc, crate::wallet::parse_amount(&amount)?, key_file).await?),
                WalletCmd::Withdraw { rpc, key_file } => print_json(&crate::wallet::withdraw(&o, &rpc, key_file).await?),
                WalletCmd::StakeStatus { rpc } => print_json(&crate::wallet::stake_status(&o, &rpc).await?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Dispute(d) => dispute::run(&Offline::open_existing(home)?.0, d).await,
        Cmd::Unenroll => {
            let o = Offline::open_existing(home)?;
            match o.unenroll()? {
                Some(e) => eprintln!(
                    "b3iqd: left control plane {}; its trust root is forgotten; back to local mode",
                    e.audience
                ),
                None => eprintln!("b3iqd: not enrolled; nothing to do"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Verify {
            receipt,
            attestation,
            tokens,
            model,
            seed_key,
            threads,
        } => verify_cmd(home, receipt, attestation, tokens, model, seed_key, threads),
        Cmd::Update(u) => update_cmd(home, u).await,
        Cmd::Setup { reset, ttl_s, port } => {
            if !reset {
                eprintln!(
                    "b3iqd: nothing to do; use `b3iqd setup --reset` to issue a new setup token"
                );
                return Ok(ExitCode::FAILURE);
            }
            let o = Offline::open(home)?;
            let (tok, exp) = o.reset_setup(ttl_s)?;
            // Where the node is reached: the address a running daemon bound (it may differ from
            // config.json's, e.g. with `serve --listen`), else the configured one; https when
            // it serves (or is configured to serve) TLS; a wildcard address is reached on
            // loopback here.
            let running = o.running_listen()?;
            let host_port = match running.or_else(|| o.config.listen.parse().ok()) {
                Some(a) => {
                    let ip = match a.ip() {
                        ip if ip.is_unspecified() && ip.is_ipv4() => {
                            std::net::Ipv4Addr::LOCALHOST.into()
                        }
                        ip if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                        ip => ip,
                    };
                    std::net::SocketAddr::new(ip, port.unwrap_or(a.port())).to_string()
                }
                // A host name in config.json's listen: printed as configured.
                None => match (port, o.config.listen.rsplit_once(':')) {
                    (Some(p), Some((h, _))) => format!("{h}:{p}"),
                    _ => o.config.listen.clone(),
                },
            };
            let tls = match running {
                Some(_) => o.status()?["tls"].is_object(),
                None => o.config.tls != "off",
            };
            let url = format!(
                "{}://{host_port}/setup/#token={tok}",
                if tls { "https" } else { "http" },
            );
            eprintln!(
                "b3iqd: new setup token (valid until unix time {exp}); open this URL, shown once:"
            );
            println!("{url}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn verify_cmd(
    home: Option<PathBuf>,
    receipt: PathBuf,
    attestation: PathBuf,
    tokens: PathBuf,
    model: PathBuf,
    seed_key: Option<String>,
    threads: u32,
) -> Result<ExitCode, HostError> {
    use b3iq_core::attestation::{InferenceAttestation, VerdictOutcome};
    use b3iq_core::receipt::Receipt;
    use b3iq_core::Signed;
    let bad = |what: &str, e: String| HostError::Config(format!("{what}: {e}"));
    let read =
        |p: &PathBuf| std::fs::read(p).map_err(|e| bad(&p.display().to_string(), e.to_string()));
    let receipt: Signed<Receipt> =
        serde_json::from_slice(&read(&receipt)?).map_err(|e| bad("receipt", e.to_string()))?;
    let attestation: Signed<InferenceAttestation> = serde_json::from_slice(&read(&attestation)?)
        .map_err(|e| bad("attestation", e.to_string()))?;
    #[derive(serde::Deserialize)]
    struct Tokens {
        prompt: Vec<u32>,
        completion: Vec<u32>,
    }
    let t: Tokens =
        serde_json::from_slice(&read(&tokens)?).map_err(|e| bad("tokens", e.to_string()))?;
    let seed_key = match seed_key {
        None => None,
        Some(h) => Some(
            <[u8; 32]>::try_from(
                hex::decode(h.trim()).map_err(|e| bad("--seed-key", e.to_string()))?,
            )
            .map_err(|_| bad("--seed-key", "must be 32 bytes (64 hex characters)".into()))?,
        ),
    };
    let o = Offline::open(home)?;
    let (digest, _) = b3iq_runtime::digest::sha256_file(&model).map_err(HostError::Runtime)?;
    if digest
        != receipt
            .body()
            .artifact_digest
            .to_string()
            .trim_start_matches("sha256:")
    {
        return Err(bad(
            "--model",
            format!(
                "the file's sha256 is {digest}, the receipt names {}",
                receipt.body().artifact_digest
            ),
        ));
    }
    let m = b3iq_runtime::llama::load_llama_model(&model, 0).map_err(HostError::Runtime)?;
    let input = b3iq_runtime::verify::AttestationInput {
        receipt: &receipt,
        attestation: &attestation,
        prompt: &t.prompt,
        completion: &t.completion,
        seed_key,
    };
    let v = b3iq_runtime::verify::verify_attestation(&m, threads, &input)
        .map_err(HostError::Runtime)?;
    let now = b3iq_host::context::unix_now_ms();
    let verdict = Signed::sign(
        v.to_verdict(
            &input,
            o.node_id,
            b3iq_runtime::attest::llama_runtime_fingerprint(threads),
            now,
        ),
        &o.key,
    )
    .map_err(|e| bad("verdict", e.to_string()))?;
    print_json(&serde_json::to_value(&verdict).unwrap_or_default());
    Ok(if v.outcome == VerdictOutcome::Pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn b3iq_core_address(s: &str) -> Result<b3iq_host::managed::wallet::EthAddress, HostError> {
    s.parse().map_err(|e| HostError::InvalidParameter(format!("address {s:?}: {e}")))
}

fn tempdir_for_bench() -> Result<PathBuf, HostError> {
    let d = std::env::temp_dir().join(format!("b3iqd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&d).map_err(|e| HostError::home("create bench dir", e))?;
    Ok(d)
}

/// The file stem of a GGUF without its quantization tag (`SmolLM2-135M-Instruct.Q4_1.gguf` ->
/// `SmolLM2-135M-Instruct`), for naming a requantized copy.
fn requant_base(p: &std::path::Path) -> String {
    let stem = p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    let is_tag = |t: &str| {
        let t = t.to_ascii_lowercase();
        let q = t.strip_prefix('i').unwrap_or(&t);
        t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && (q.starts_with('q') && q[1..].starts_with(|c: char| c.is_ascii_digit())
                || ["f16", "f32", "bf16"].contains(&t.as_str()))
    };
    // The leftmost separator whose suffix is a whole tag (`Q4_K_M`, not `K_M`).
    stem.char_indices()
        .filter(|&(i, c)| i > 0 && matches!(c, '.' | '-' | '_') && is_tag(&stem[i + 1..]))
        .map(|(i, _)| stem[..i].to_string())
        .next()
        .unwrap_or(stem)
}

/// The sha256 of the installed model `which` names: a catalog profile id, a served id
/// (`b3iqd model list`'s `id`, e.g. an imported file's stem), or the sha256 itself (returned
/// as given; the store refuses what is not installed).
fn installed_digest(
    store: &b3iq_runtime::store::ModelStore,
    which: &str,
) -> Result<String, HostError> {
    if b3iq_runtime::catalog::Catalog::builtin().get(which).is_ok() {
        if let Some(m) = store.find_profile(which)? {
            return Ok(m.sha256);
        }
    }
    Ok(b3iq_host::context::loaded::installed_by_id(store, which)?
        .map(|m| m.sha256)
        .unwrap_or_else(|| which.to_string()))
}

/// `b3iqd model ps|load|unload`'s answer: the loaded models and the limits, from `/api/models`.
fn loaded_view(v: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "loaded": v["served"],
        "max_loaded_models": v["max_loaded_models"],
        "memory_budget_bytes": v["memory_budget_bytes"],
    })
}

async fn model_cmd(home: Option<PathBuf>, m: ModelCmd) -> Result<ExitCode, HostError> {
    let o = Offline::open(home)?;
    let store = b3iq_host::context::runtime::model_store(&o.home)?;
    match m {
        ModelCmd::Pull { profile } => {
            let im = b3iq_host::context::runtime::ensure_profile(&o.home, &profile, true).await?;
            print_json(&serde_json::to_value(&im).unwrap_or_default());
        }
        ModelCmd::Import { file, quantize } => {
            let header = b3iq_host::models::inspect_file(&file)?;
            // Requantizing to more bits keeps the precision the source already lost.
            let src_q = header["quantization"].as_str().unwrap_or("").to_ascii_uppercase();
            if let Some(q) = quantize.as_deref() {
                let bits = |t: &str| if t.starts_with("F32") { 32 } else if t.starts_with("F16") || t.starts_with("BF16") { 16 } else if t.starts_with("Q8") { 8 } else if t.starts_with("Q6") { 6 } else if t.starts_with("Q5") { 5 } else if t.starts_with("Q4") { 4 } else if t.starts_with("Q3") { 3 } else if t.starts_with("Q2") { 2 } else { 0 };
                let (from, to) = (bits(&src_q), bits(&q.to_ascii_uppercase()));
                if from > 0 && to > from {
                    eprintln!("b3iqd: warning: {} is {src_q}; requantizing it to {} makes a larger file with no more precision than the source (quantize from the F16/BF16 original when you have it)", file.display(), q.to_ascii_uppercase());
                }
            }
            let scratch = o.home.models_dir().join("tmp").join(format!("quantize-{}", std::process::id()));
            let file = match quantize.as_deref() {
                None => file,
                Some(q) => {
                    use b3iq_runtime::quantize::{quantize_model, QuantType};
                    let (ty, tag) = match q {
                        "q8_0" => (QuantType::Q8_0, "Q8_0"),
                        "q4_0" => (QuantType::Q4_0, "Q4_0"),
                        _ => (QuantType::F16, "F16"),
                    };
                    let dst = scratch.join(format!("{}.{tag}.gguf", requant_base(&file)));
                    std::fs::create_dir_all(&scratch).map_err(|e| HostError::home("create the quantize directory", e))?;
                    eprintln!("requantizing {} to {tag} ...", file.display());
                    let (src, out) = (file.clone(), dst.clone());
                    let threads = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
                    tokio::task::spawn_blocking(move || quantize_model(&src, &out, ty, threads))
                        .await
                        .map_err(|e| HostError::Internal(format!("quantize: {e}")))?
                        .map_err(|e| HostError::InvalidParameter(format!("quantize {}: {e}", file.display())))?;
                    dst
                }
            };
            eprintln!("importing {} (copying and hashing)...", file.display());
            let s2 = store.clone();
            let im = tokio::task::spawn_blocking(move || s2.install_file(&file, None, None))
                .await
                .map_err(|e| HostError::Internal(format!("import: {e}")));
            let _ = std::fs::remove_dir_all(&scratch);
            let im = im??;
            let id = b3iq_host::context::loaded::served_id(&im);
            o.db.audit(b3iq_host::context::unix_now(), "owner", "model.import", &im.sha256, "ok", "cli");
            let mut v = serde_json::to_value(&im).unwrap_or_default();
            v["id"] = serde_json::Value::from(id);
            print_json(&v);
        }
        ModelCmd::List => {
            let installed: Vec<serde_json::Value> = store
                .list()?
                .into_iter()
                .map(|m| {
                    let id = b3iq_host::context::loaded::served_id(&m);
                    let mut v = serde_json::to_value(&m).unwrap_or_default();
                    v["id"] = serde_json::Value::from(id);
                    v
                })
                .collect();
            let catalog: Vec<serde_json::Value> = b3iq_host::models::catalog_profiles();
            print_json(&serde_json::json!({"catalog": catalog, "installed": installed}));
        }
        ModelCmd::Rm { which } => {
            let digest = installed_digest(&store, &which)?;
            store.remove(&digest)?;
            o.db.audit(
                b3iq_host::context::unix_now(),
                "owner",
                "model.remove",
                &digest,
                "ok",
                "cli",
            );
            eprintln!("b3iqd: removed {digest}");
        }
        ModelCmd::Ps => {
            let v = o.daemon_call("GET", "/api/models", None).await?;
            print_json(&loaded_view(&v));
        }
        ModelCmd::Load { model } => {
            let v = o.daemon_call("POST", "/api/models/load", Some(&serde_json::json!({"model": model}))).await?;
            print_json(&loaded_view(&v));
        }
        ModelCmd::Unload { model } => {
            let v = o.daemon_call("POST", "/api/models/unload", Some(&serde_json::json!({"model": model}))).await?;
            print_json(&loaded_view(&v));
        }
        ModelCmd::Inspect { which } => {
            let path = std::path::Path::new(&which);
            let info = if path.is_file() {
                b3iq_host::models::inspect_file(path)?
            } else {
                let digest = installed_digest(&store, &which)?;
                serde_json::to_value(store.inspect(&digest)?).unwrap_or_default()
            };
            print_json(&info);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn update_cmd(home: Option<PathBuf>, cmd: UpdateCmd) -> Result<ExitCode, HostError> {
    use b3iq_host::update::Updater;
    let o = Offline::open(home)?;
    let result = async {
        let mut u = Updater::for_home(o.0.home.root(), o.0.config.update_ca_file.as_deref())?;
        let mut configure = |repo: Option<String>, ca: Option<PathBuf>| {
            if let Some(c) = ca {
                u.set_ca_file(&c)?;
            }
            if let Some(r) = repo {
                u.set_repository(&r)?;
            }
            Ok::<_, b3iq_host::update::UpdateError>(u.clone())
        };
        match cmd {
            UpdateCmd::Check { repo, ca_file } => {
                let u = configure(repo, ca_file)?;
                let (_, report) = u.check().await?;
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            }
            UpdateCmd::Apply { repo, ca_file, at_least } => {
                let u = configure(repo, ca_file)?;
                let report = u.apply_at_least(at_least.as_deref()).await?;
                if report.available {
                    eprintln!(
                        "b3iqd: installed {} {} (was {}); the old binary is {}",
                        report.target,
                        report.latest,
                        report.current,
                        b3iq_host::update::sibling(&u.binary, "previous").display()
                    );
                } else {
                    eprintln!(
                        "b3iqd: up to date ({}; the repository has {})",
                        report.current, report.latest
                    );
                }
                print_json(&serde_json::to_value(&report).unwrap_or_default());
            }
            UpdateCmd::Rollback => {
                u.rollback()?;
                eprintln!(
                    "b3iqd: rolled back {} to the previous binary",
                    u.binary.display()
                );
            }
        }
        Ok::<(), b3iq_host::update::UpdateError>(())
    }
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("b3iqd: update: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_requantized_copy_is_named_without_the_source_tag() {
        for (src, base) in [
            ("SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2-135M-Instruct"),
            ("Qwen2.5-0.5B-Instruct-Q4_K_M.gguf", "Qwen2.5-0.5B-Instruct"),
            ("llama_iq2_xs.gguf", "llama"),
            ("model-f16.gguf", "model"),
            ("plain.gguf", "plain"),
        ] {
            assert_eq!(super::requant_base(std::path::Path::new(src)), base, "{src}");
        }
    }
}
