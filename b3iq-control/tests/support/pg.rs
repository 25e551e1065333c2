//! A throwaway Postgres server for tests: `initdb` into a temp dir, `pg_ctl start` on a free
//! loopback port (fsync off: the data is thrown away; [`Pg::start_durable`] keeps it on), `pg_ctl stop -m immediate` on drop.
//! Finds the binaries through `$B3IQ_PG_BIN`, `pg_config --bindir`, or
//! `/usr/lib/postgresql/<newest>/bin` (Debian's `postgresql` package; `cargo xtask deps`
//! installs it). As root it runs the server as the `postgres` user (initdb refuses root).
//! A missing server fails the test with what to install: the suite never skips a backend.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pg {
    _dir: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_user: Option<String>,
    pub port: u16,
}

fn bin_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("B3IQ_PG_BIN") {
        return PathBuf::from(p);
    }
    if let Ok(o) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    versions.sort();
    match versions.last() {
        Some(v) => PathBuf::from(format!("/usr/lib/postgresql/{v}/bin")),
        None => panic!("no Postgres server found: install Debian's `postgresql` package (`cargo xtask deps` does) or set B3IQ_PG_BIN to the directory holding initdb and pg_ctl"),
    }
}

fn run(bin: &Path, as_user: &Option<String>, args: &[&str]) -> std::process::Output {
    let mut c = match as_user {
        Some(u) => {
            let mut c = Command::new("runuser");
            c.args(["-u", u, "--"]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    c.args(args).output().unwrap_or_else(|e| panic!("run {}: {e}", bin.display()))
}

impl Pg {
    pub fn start() -> Pg {
        Self::start_with("-c fsync=off -c full_page_writes=off")
    }

    /// A durable server (Postgres' defaults: `fsync`, `synchronous_commit` and full page writes
    /// on), for benchmarks whose numbers must include the cost of a commit reaching the disk.
    pub fn start_durable() -> Pg {
        Self::start_with("")
    }

    fn start_with(settings: &str) -> Pg {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("b3iq-pg-").tempdir().expect("tempdir");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let as_user = root.then(|| "postgres".to_string());
        if root {
            // The server runs as `postgres`: it must own its directory.
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(st.success(), "chown the Postgres temp dir to postgres");
        }
        let data = dir.path().join("data");
        let out = run(&bin.join("initdb"), &as_user, &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "b3iq", "-E", "UTF8", "--no-sync"]);
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = format!("-p {port} -k {} -c listen_addresses=127.0.0.1 {settings} -c max_connections=200", dir.path().display());
        let log = dir.path().join("server.log");
        let out = run(&bin.join("pg_ctl"), &as_user, &["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-o", &opts, "-w", "-t", "60", "start"]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {} {}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Pg { _dir: dir, data, bin, as_user, port }
    }

    /// The postmaster's process id (its backends are its children), for CPU accounting.
    pub fn postmaster_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.data.join("postmaster.pid")).ok()?.lines().next()?.trim().parse().ok()
    }

    /// URL of database `db` (create it with [`Pg::create_db`]).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://b3iq@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh database and returns its URL.
    pub async fn create_db(&self, name: &str) -> String {
        let (client, conn) = tokio_postgres::connect(&self.url("postgres"), tokio_postgres::NoTls).await.expect("connect to the test server");
        let h = tokio::spawn(conn);
        // Two statements, two implicit transactions (DROP/CREATE DATABASE refuse a block).
        client.batch_execute(&format!("DROP DATABASE IF EXISTS {name}")).await.expect("drop database");
        client.batch_execute(&format!("CREATE DATABASE {name}")).await.expect("create database");
        drop(client);
        let _ = h.await;
        self.url(name)
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let _ = run(&self.bin.join("pg_ctl"), &self.as_user, &["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]);
    }
}
