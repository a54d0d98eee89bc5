//! The product's processes, started from its binary (BENCH_BIN) as a user would
//! start them, and their memory as the kernel reports it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use std::process::{Child, Command};
use tokio::time::Instant;

/// Resident set size and its high-water mark, in KiB (`/proc/PID/status`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn read(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Some(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// A child process of the product, killed when dropped (also on failure),
/// whose peak memory is sampled while it runs.
pub struct Process {
    pub name: String,
    child: Child,
    pid: u32,
    pub started: Instant,
    pub log: PathBuf,
    peak_kib: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

impl Process {
    pub fn spawn(
        name: &str,
        bin: &Path,
        args: &[String],
        kubeconfig: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        Process::spawn_with_env(name, bin, args, &[], kubeconfig, log)
    }

    /// [`Process::spawn`] with environment variables set for the child
    /// (settings a chart passes through the environment, from a Secret).
    pub fn spawn_with_env(
        name: &str,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
        kubeconfig: &Path,
        log: PathBuf,
    ) -> anyhow::Result<Process> {
        let out =
            std::fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let started = Instant::now();
        let child = Command::new(bin)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {} {}", bin.display(), args.join(" ")))?;
        let pid = child.id();
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = peak_kib.clone();
        // VmHWM is the kernel's own high-water mark; sampling it keeps the
        // last value known even after the process has gone.
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                match Memory::read(pid) {
                    Some(m) => {
                        peak.fetch_max(m.hwm_kib.max(m.rss_kib), Ordering::Relaxed);
                    }
                    None => break,
                }
            }
        });
        Ok(Process {
            name: name.to_string(),
            child,
            pid,
            started,
            log,
            peak_kib,
            sampler,
        })
    }

    pub fn memory(&self) -> Option<Memory> {
        let m = Memory::read(self.pid)?;
        self.peak_kib
            .fetch_max(m.hwm_kib.max(m.rss_kib), Ordering::Relaxed);
        Some(m)
    }

    /// Highest resident size seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        let _ = self.memory();
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// Fails when the process has exited (with the end of its log).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}); the end of its log:\n{}",
                self.name,
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 15 s; returns the peak memory in KiB.
    pub async fn stop(mut self) -> u64 {
        let peak = self.peak_kib();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.pid.to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Drop kills it if it is still there.
        peak
    }
}

impl Drop for Process {
    /// Never leaves the process behind, also when the benchmark fails.
    fn drop(&mut self) {
        self.sampler.abort();
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free port on 127.0.0.1 (bound and released; the child binds it next).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Waits until `url` answers 200, or the deadline passes, or `process` exits.
pub async fn wait_http_ok(
    http: &reqwest::Client,
    url: &str,
    process: &mut Process,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(Instant::now());
        }
        process.check_alive()?;
        if Instant::now() >= deadline {
            bail!("{url} did not answer 200 within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
