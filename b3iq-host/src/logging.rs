//! Logging setup for the daemon: `tracing` to stderr, level from `B3IQ_LOG` (default `info`).
//! Nothing secret is ever passed to a log macro: secrets are only returned to callers.

/// Install the global subscriber (idempotent; later calls are ignored).
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("B3IQ_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,llama_cpp_2=warn,llama-cpp-2=warn"));
    // Colour only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}
