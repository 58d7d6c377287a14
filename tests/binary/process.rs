//! Runs the `tollgate` binary: as a server on port 0 (its address read from its own "listening" log
//! line, its stderr kept for inspection), or as a one-shot CLI command.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");

/// Held by a test that compares latencies (idle against loaded) and by the browser test, whose Chromium
/// would otherwise take the cores in the middle of the comparison.
pub static QUIET_CORES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A config file and store in a fresh directory, pointing every provider at `upstream`.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub db: PathBuf,
}

impl Setup {
    pub fn new(upstream: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("tollgate.db");
        let config = dir.path().join("proxy.toml");
        std::fs::write(&config, crate::common::config_text(upstream, &db, extra)).unwrap();
        Setup { dir, config, db }
    }

    /// The store's files that exist (the SQLite database, its WAL and shared memory), by name: where no
    /// secret may ever be found.
    pub fn store_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        ["tollgate.db", "tollgate.db-wal", "tollgate.db-shm"]
            .into_iter()
            .filter_map(|file| std::fs::read(self.dir.path().join(file)).ok().map(|bytes| (file, bytes)))
            .collect()
    }

    /// Runs `tollgate --config <this> <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.config, args)
    }

    /// Creates a key with the CLI and returns it (the only line on stdout).
    pub fn create_key(&self, name: &str) -> String {
        let out = self.cli(&["keys", "create", "--name", name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        assert!(key.starts_with("tg_live_"), "{key}");
        key
    }
}

/// Whether `needle` occurs anywhere in `bytes`.
pub fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("--config").arg(config).args(args).output().unwrap()
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// Addresses announced by a `metrics served at` line.
    metrics_addrs: mpsc::Receiver<String>,
    /// Addresses announced by a `dashboard served at` line.
    dashboard_addrs: mpsc::Receiver<String>,
}

impl Server {
    pub fn spawn(config: &Path, env: &[(&str, &str)]) -> Server {
        let mut command = Command::new(BIN);
        command.arg("--config").arg(config);
        Server::spawn_command(command, env)
    }

    /// Like [`Server::spawn`], with the process's open-file limit set to `limit` (through the shell's
    /// `ulimit`, which then runs the binary in its place, under the same process id).
    pub fn spawn_with_open_files(config: &Path, env: &[(&str, &str)], limit: u32) -> Server {
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" --config \"$1\"")).arg(BIN).arg(config);
        Server::spawn_command(command, env)
    }

    fn spawn_command(mut command: Command, env: &[(&str, &str)]) -> Server {
        let mut child = command.envs(env.iter().copied()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let (metrics_tx, metrics_addrs) = mpsc::channel();
        let (dashboard_tx, dashboard_addrs) = mpsc::channel();
        let sink = Arc::clone(&logs);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let address = |marker: &str| {
                    line.split(marker).nth(1).map(|rest| {
                        rest.chars().take_while(|c| c.is_ascii_hexdigit() || ".:[]".contains(*c)).collect::<String>()
                    })
                };
                if let Some(addr) = address("listening on http://") {
                    let _ = tx.send(addr);
                }
                if let Some(addr) = address("metrics served at http://") {
                    let _ = metrics_tx.send(addr);
                }
                if let Some(addr) = address("dashboard served at http://") {
                    let _ = dashboard_tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("server did not start: {:?}", logs.lock().unwrap());
        };
        Server { child, addr: addr.parse().unwrap(), logs, reader: Some(reader), metrics_addrs, dashboard_addrs }
    }

    /// The address of the metrics listener, once the server has announced it.
    pub fn metrics_addr(&self) -> SocketAddr {
        let addr = self.metrics_addrs.recv_timeout(Duration::from_secs(30)).expect("no metrics listener announced");
        addr.parse().unwrap()
    }

    /// The address of the dashboard's own listener, once the server has announced it.
    pub fn dashboard_addr(&self) -> SocketAddr {
        let addr = self.dashboard_addrs.recv_timeout(Duration::from_secs(30)).expect("no dashboard listener announced");
        addr.parse().unwrap()
    }

    /// The server's process id (for reading /proc/<pid>/status).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGTERM, waits for a graceful exit, and returns the exit status and every log line.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        let killed = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        self.reader.take().unwrap().join().unwrap();
        let logs = std::mem::take(&mut *self.logs.lock().unwrap());
        (status, logs)
    }

    /// Sends SIGKILL (no flush, no graceful shutdown), waits for the process to end, and returns every log
    /// line.
    pub fn kill9(mut self) -> Vec<String> {
        use std::os::unix::process::ExitStatusExt;
        let killed = Command::new("kill").arg("-KILL").arg(self.child.id().to_string()).status().unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
        self.reader.take().unwrap().join().unwrap();
        std::mem::take(&mut *self.logs.lock().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS:`, `VmHWM:`), 0 if unreadable.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The resident set of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The files process `pid` holds open.
pub fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}
