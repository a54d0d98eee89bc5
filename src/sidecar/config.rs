//! The sidecar's settings, each a flag of `cancel-operator sidecar` with its
//! default written once, in its clap attribute; `Default` reads the same
//! attributes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::auth::{AuthMode, SigningConfig};
use super::flags::{count, defaults, seconds_from, seconds_in};

/// Settings of the sidecar.
#[derive(Clone, Debug, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8153")]
    pub listen: SocketAddr,

    /// Namespace to serve (repeat for several; default: all namespaces).
    #[arg(long = "namespace", env = "SERVE_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// How callers are authenticated; `none` trusts everyone (local use only).
    #[arg(long, value_enum, default_value = "kubernetes")]
    pub auth: AuthMode,

    /// Users for HTTP Basic and Huawei AK/SK signing: YAML `users: [{name,
    /// passwordHash (bcrypt), username, groups}]`, `accessKeys: [{accessKey,
    /// secretKey, username, groups}]`. Re-read when its content changes.
    #[arg(long, env = "USERS_FILE")]
    pub users_file: Option<PathBuf>,

    /// Seconds between checks of the users file for a new content.
    #[arg(long = "users-file-poll-seconds", value_name = "USERS_FILE_POLL_SECONDS", default_value = "5", value_parser = seconds_from(1))]
    pub users_file_poll: Duration,

    // Huawei AK/SK signature checks.
    #[command(flatten)]
    pub signing: SigningConfig,

    /// Public base URL for absolute links (default: from the Host header).
    #[arg(long, env = "EXTERNAL_URL")]
    pub external_url: Option<String>,

    /// Seconds authentication and authorisation results are cached.
    #[arg(long = "auth-cache-seconds", value_name = "AUTH_CACHE_SECONDS", default_value = "10", value_parser = seconds_from(0))]
    pub auth_cache_ttl: Duration,

    /// PostgreSQL URL of the archive the controller moves finished runs to
    /// (the controller's --archive-url); best given through the environment,
    /// from a Secret. The history reads then answer from the cluster and the
    /// archive together; without it, from the cluster alone.
    #[arg(long, env = "CANCEL_OPERATOR_ARCHIVE_URL", hide_env_values = true)]
    pub archive_url: Option<ArchiveUrl>,

    /// Connections to the archive at most.
    #[arg(long, env = "CANCEL_OPERATOR_ARCHIVE_POOL_SIZE", default_value_t = crate::archive::DEFAULT_POOL_SIZE,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub archive_pool_size: u32,

    #[command(flatten)]
    pub limits: Limits,
}

impl Config {
    /// The archive's URL, if one is configured (an empty value, a chart's
    /// unset variable, is none).
    pub fn archive_url(&self) -> Option<&str> {
        (self.archive_url.as_ref())
            .map(|u| u.0.as_str())
            .filter(|u| !u.is_empty())
    }
}

/// A database URL, which may carry a password: never shown in logs.
#[derive(Clone)]
pub struct ArchiveUrl(pub String);

impl std::fmt::Debug for ArchiveUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for ArchiveUrl {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(ArchiveUrl(s.to_string()))
    }
}

/// Limits and timeouts of the HTTP server.
#[derive(Clone, Debug, Args)]
pub struct Limits {
    /// Seconds a connection may take to send a request's headers (also the
    /// idle time allowed between requests on a kept-alive connection);
    /// then it is closed.
    #[arg(long = "header-read-timeout-seconds", value_name = "HEADER_READ_TIMEOUT_SECONDS", env = "HEADER_READ_TIMEOUT_SECONDS", default_value = "10", value_parser = seconds_from(1))]
    pub header_read_timeout: Duration,

    /// Seconds a request's body may take to arrive; then 408.
    #[arg(long = "body-read-timeout-seconds", value_name = "BODY_READ_TIMEOUT_SECONDS", env = "BODY_READ_TIMEOUT_SECONDS", default_value = "30", value_parser = seconds_from(1))]
    pub body_read_timeout: Duration,

    /// Largest request line and headers, in bytes; larger ones get 431.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value = "16384", value_parser = count(1024, 1024 * 1024))]
    pub max_header_bytes: usize,

    /// Most header fields in a request; more get 431.
    #[arg(long, env = "MAX_HEADERS", default_value = "100", value_parser = count(8, 1000))]
    pub max_headers: usize,

    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long = "max-body-bytes", value_name = "MAX_BODY_BYTES", env = "MAX_BODY_BYTES", default_value = "65536", value_parser = count(1024, 16 * 1024 * 1024))]
    pub body_limit: usize,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value = "1024", value_parser = count(1, 1_000_000))]
    pub max_connections: usize,

    /// API requests handled at once; more get the API's "unavailable"
    /// error with Retry-After.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value = "256", value_parser = count(1, 100_000))]
    pub max_in_flight: usize,

    /// Kubernetes API calls in flight at once on behalf of requests; more
    /// fail at once with the API's "unavailable" error.
    #[arg(long, env = "KUBE_IN_FLIGHT", default_value = "128", value_parser = count(1, 10_000))]
    pub kube_in_flight: usize,

    /// Seconds a Kubernetes API call on behalf of a request may take.
    #[arg(long = "kube-timeout-seconds", value_name = "KUBE_TIMEOUT_SECONDS", env = "KUBE_TIMEOUT_SECONDS", default_value = "10", value_parser = seconds_in(1, 300))]
    pub kube_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_come_from_the_flags() {
        let l = Limits::default();
        assert_eq!(l.body_limit, 64 * 1024);
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
        assert_eq!(l.kube_timeout, Duration::from_secs(10));
        let s = SigningConfig::default();
        assert_eq!(s.max_skew, Duration::from_secs(900));
        assert_eq!(s.replay_capacity, 50_000);
    }

    #[test]
    fn the_archive_url_is_optional_and_never_shown() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            config: Config,
        }
        let cli = Cli::try_parse_from(["sidecar"]).expect("no flags");
        assert_eq!(cli.config.archive_url(), None);
        let url = "postgres://u:secret@db/archive";
        let cli = Cli::try_parse_from(["sidecar", "--archive-url", url]).expect("a URL");
        assert_eq!(cli.config.archive_url(), Some(url));
        assert!(!format!("{:?}", cli.config).contains("secret"));
        let cli = Cli::try_parse_from(["sidecar", "--archive-url", ""]).expect("empty");
        assert_eq!(cli.config.archive_url(), None);
    }
}
