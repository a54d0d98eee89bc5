//! Settings of a controller instance, and the flags of the `controller`
//! command that give them (every default written here, once).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgMatches, Args, Command, FromArgMatches};

/// Settings of a controller instance.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespaces to watch; all namespaces when empty.
    pub namespaces: Vec<String>,
    /// Namespace of the ConfigMap that holds the id counters.
    pub state_namespace: String,
    /// Name of that ConfigMap.
    pub id_configmap: String,
    /// Wait past a grace period before force-deleting pods.
    pub force_margin: Duration,
    /// Act only while holding this Lease (in `state_namespace`); `None` when
    /// a single instance runs.
    pub leader_election: Option<LeaderElection>,
    /// Where to serve /metrics and /healthz; not served when `None`.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// Reconciles run at once, per controller.
    pub concurrency: u16,
    /// The archive of finished runs; `None`: none, and nothing is ever
    /// deleted for being old.
    pub archive: Option<ArchiveSettings>,
}

/// Where finished runs are archived, and when they leave the cluster.
#[derive(Clone)]
pub struct ArchiveSettings {
    /// PostgreSQL URL (it may carry a password: never logged).
    pub url: String,
    /// Connections to the database at most.
    pub pool_size: u32,
    /// How long a finished StageRun stays in the cluster before it moves to
    /// the archive; `None`: runs stay (the archive then only floors ids).
    pub keep_finished: Option<Duration>,
}

impl std::fmt::Debug for ArchiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSettings")
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("keep_finished", &self.keep_finished)
            .finish()
    }
}

/// Reconciles run at once per controller unless configured: enough to keep
/// the API server busy during a bulk cancel, few enough to bound memory.
pub const DEFAULT_CONCURRENCY: u16 = 32;

/// Leader election settings: with replicas > 1, one instance acts at a time.
#[derive(Clone, Debug)]
pub struct LeaderElection {
    pub lease_name: String,
    /// This instance's name in the Lease (the pod name in a cluster).
    pub identity: String,
    /// How long the Lease holds without renewal.
    pub lease_duration: Duration,
}

/// The `controller` command's flags: parsed into a [`Config`], which
/// implements [`clap::Args`] through them (`#[command(flatten)]` it).
#[derive(Args)]
struct Flags {
    /// Watch only this namespace (repeat, or a comma list, for several;
    /// default: all namespaces).
    #[arg(long = "namespace", env = "WATCH_NAMESPACE", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// Namespace holding the controller's state (the id counters).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    state_namespace: String,

    /// Name of the ConfigMap holding the id counters.
    #[arg(long, default_value = "cancel-operator-ids")]
    id_configmap: String,

    /// Seconds to wait past a pod's grace period before force-deleting it.
    #[arg(long, default_value_t = 10)]
    force_delete_margin_seconds: u64,

    /// Act only while holding a Lease, so that several replicas can run.
    #[arg(long, env = "LEADER_ELECT")]
    leader_elect: bool,

    /// Name of the Lease (in the state namespace).
    #[arg(long, default_value = "cancel-operator-controller")]
    lease_name: String,

    /// Seconds the Lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,

    /// Where to serve /metrics (Prometheus) and /healthz; off when empty.
    // A path type: clap then hands the parser's `Option` through whole.
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080", value_parser = metrics_address)]
    metrics_address: std::option::Option<SocketAddr>,

    /// Reconciles run at once, per controller.
    #[arg(long, env = "CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// This instance's name in the Lease (default: $POD_NAME, or host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// PostgreSQL URL of the archive of finished StageRuns and CancelRequests
    /// (postgres://user:password@host:port/database); best given through the
    /// environment, from a Secret. Ids are floored above the archive's, and
    /// with --keep-finished finished runs move there.
    #[arg(long, env = "CANCEL_OPERATOR_ARCHIVE_URL", hide_env_values = true)]
    archive_url: Option<String>,

    /// Connections to the archive at most.
    #[arg(long, env = "CANCEL_OPERATOR_ARCHIVE_POOL_SIZE", default_value_t = crate::archive::DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    archive_pool_size: u32,

    /// How long a finished StageRun stays in the cluster (e.g. 1h, 30m, 90s)
    /// before it is archived and deleted; only with --archive-url. Without
    /// it, finished runs stay in the cluster for ever.
    #[arg(long, env = "CANCEL_OPERATOR_KEEP_FINISHED", value_parser = duration)]
    keep_finished: Option<Duration>,
}

/// A duration in jiff's friendly form (`1h`, `1h 30m`, `90s`) or ISO 8601
/// (`PT1H`); not negative.
fn duration(value: &str) -> Result<Duration, String> {
    let d: k8s_openapi::jiff::SignedDuration = value
        .parse()
        .map_err(|e| format!("not a duration (like 1h or 30m): {e}"))?;
    Duration::try_from(d).map_err(|_| "a duration cannot be negative".to_string())
}

/// An address, or none (empty: not served).
fn metrics_address(value: &str) -> Result<Option<SocketAddr>, std::net::AddrParseError> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse().map(Some)
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}

impl From<Flags> for Config {
    fn from(flags: Flags) -> Self {
        Config {
            namespaces: flags.namespaces,
            state_namespace: flags.state_namespace,
            id_configmap: flags.id_configmap,
            force_margin: Duration::from_secs(flags.force_delete_margin_seconds),
            leader_election: flags.leader_elect.then(|| LeaderElection {
                lease_name: flags.lease_name,
                identity: flags.identity.unwrap_or_else(default_identity),
                lease_duration: Duration::from_secs(flags.lease_duration_seconds),
            }),
            metrics_address: flags.metrics_address,
            concurrency: flags.concurrency,
            // An empty value (a chart's unset variable) is none.
            archive: flags
                .archive_url
                .filter(|url| !url.is_empty())
                .map(|url| ArchiveSettings {
                    url,
                    pool_size: flags.archive_pool_size,
                    keep_finished: flags.keep_finished,
                }),
        }
    }
}

impl FromArgMatches for Config {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Flags::from_arg_matches(matches).map(Config::from)
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for Config {
    fn group_id() -> Option<clap::Id> {
        Flags::group_id()
    }

    fn augment_args(cmd: Command) -> Command {
        Flags::augment_args(cmd)
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Flags::augment_args_for_update(cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_reads_as_people_write_it() {
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("PT2M"), Ok(Duration::from_secs(120)));
        assert!(duration("-1h").is_err());
        assert!(duration("soon").is_err());
    }

    fn parse(args: &[&str]) -> Config {
        let cmd = Config::augment_args(Command::new("controller").no_binary_name(true));
        Config::from_arg_matches(&cmd.get_matches_from(args)).expect("flags")
    }

    #[test]
    fn an_archive_needs_a_url_and_retention_an_archive() {
        assert!(parse(&["--keep-finished", "1h"]).archive.is_none());
        assert!(parse(&["--archive-url", ""]).archive.is_none());
        let a = parse(&[
            "--archive-url",
            "postgres://u:secret@h/db",
            "--keep-finished",
            "1h",
        ])
        .archive
        .expect("archive");
        assert_eq!(a.keep_finished, Some(Duration::from_secs(3600)));
        assert_eq!(a.pool_size, crate::archive::DEFAULT_POOL_SIZE);
        assert!(!format!("{a:?}").contains("secret"));
    }
}
