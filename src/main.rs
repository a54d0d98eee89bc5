#![forbid(unsafe_code)]

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use cancel_operator::sidecar::auth::AuthMode;
use cancel_operator::telemetry::{self, LogFormat};
use cancel_operator::{controller, crd, sidecar};

/// Runs stages as Kubernetes Jobs and cancels them safely.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller for StageRuns and CancelRequests.
    Controller(ControllerArgs),
    /// Serve the GoCD, CodeArts, CrafterCMS and Cloud Foundry cancel APIs.
    Sidecar(SidecarArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print a bcrypt hash of a password read from standard input, for the users file.
    HashPassword {
        /// bcrypt cost (4-31).
        #[arg(long, default_value_t = 12)]
        cost: u32,
    },
    /// Check that every ready pod behind a Service answers an HTTP GET
    /// (found through its EndpointSlices; used by the chart's `helm test`).
    Probe {
        /// The Service.
        #[arg(long)]
        service: String,
        /// Its namespace (default: this pod's).
        #[arg(long, env = "POD_NAMESPACE")]
        namespace: String,
        /// Port name (default: the first port).
        #[arg(long)]
        port_name: Option<String>,
        /// Path to GET; a 2xx status passes.
        #[arg(long, default_value = "/readyz")]
        path: String,
        /// Seconds to keep trying.
        #[arg(long, default_value_t = 60)]
        timeout_seconds: u64,
    },
}

#[derive(Args)]
struct Logging {
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[derive(Args)]
struct ControllerArgs {
    #[command(flatten)]
    config: controller::Config,

    #[command(flatten)]
    logging: Logging,
}

#[derive(Args)]
struct SidecarArgs {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:8153")]
    listen: std::net::SocketAddr,

    /// Namespace to serve (repeat for several; default: all namespaces).
    #[arg(long = "namespace", env = "SERVE_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,

    /// How callers are authenticated; `none` trusts everyone (local use only).
    #[arg(long, value_enum, default_value = "kubernetes")]
    auth: AuthMode,

    /// Users for HTTP Basic and Huawei AK/SK signing: YAML `users: [{name,
    /// passwordHash (bcrypt), username, groups}]`, `accessKeys: [{accessKey,
    /// secretKey, username, groups}]`. Re-read when its content changes.
    #[arg(long, env = "USERS_FILE")]
    users_file: Option<std::path::PathBuf>,

    /// Seconds between checks of the users file for a new content.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    users_file_poll_seconds: u64,

    /// Largest difference, in seconds, allowed between a signed request's
    /// X-Sdk-Date and the server's clock (AK/SK signing).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86400))]
    aksk_max_skew_seconds: u64,

    /// Signatures remembered (within the skew window) to refuse replayed
    /// signed writes (reads are exempt); when that many are live, further
    /// signed writes are refused until some expire. About 100 bytes each.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    aksk_replay_capacity: u64,

    /// Public base URL for absolute links (default: from the Host header).
    #[arg(long, env = "EXTERNAL_URL")]
    external_url: Option<String>,

    /// Seconds authentication and authorisation results are cached.
    #[arg(long, default_value_t = 10)]
    auth_cache_seconds: u64,

    /// Seconds a connection may take to send a request's headers (also the
    /// idle time allowed between requests on a kept-alive connection);
    /// then it is closed.
    #[arg(long, env = "HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_read_timeout_seconds: u64,

    /// Seconds a request's body may take to arrive; then 408.
    #[arg(long, env = "BODY_READ_TIMEOUT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_read_timeout_seconds: u64,

    /// Largest request line and headers, in bytes; larger ones get 431.
    #[arg(long, env = "MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(u64).range(1024..=1024 * 1024))]
    max_header_bytes: u64,

    /// Most header fields in a request; more get 431.
    #[arg(long, env = "MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(8..=1000))]
    max_headers: u64,

    /// Largest request body, in bytes; larger ones get 413.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = sidecar::BODY_LIMIT as u64, value_parser = clap::value_parser!(u64).range(1024..=16 * 1024 * 1024))]
    max_body_bytes: u64,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,

    /// API requests handled at once; more get the API's "unavailable"
    /// error with Retry-After.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_in_flight: u64,

    /// Kubernetes API calls in flight at once on behalf of requests; more
    /// fail at once with the API's "unavailable" error.
    #[arg(long, env = "KUBE_IN_FLIGHT", default_value_t = 128, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    kube_in_flight: u64,

    /// Seconds a Kubernetes API call on behalf of a request may take.
    #[arg(long, env = "KUBE_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    kube_timeout_seconds: u64,

    #[command(flatten)]
    logging: Logging,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::HashPassword { cost } => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on standard input");
            println!("{}", bcrypt::hash(password, cost)?);
            Ok(())
        }
        Command::Probe {
            service,
            namespace,
            port_name,
            path,
            timeout_seconds,
        } => {
            let client = kube::Client::try_default().await?;
            let probe = cancel_operator::probe::Probe {
                namespace,
                service,
                port_name,
                path,
                timeout: Duration::from_secs(timeout_seconds),
            };
            cancel_operator::probe::run(client, probe).await
        }
        Command::Crd => {
            print!("{}", crd::crds_yaml()?);
            Ok(())
        }
        Command::Controller(args) => {
            telemetry::init(args.logging.log_format);
            let client = kube::Client::try_default().await?;
            controller::run(client, args.config).await
        }
        Command::Sidecar(args) => {
            telemetry::init(args.logging.log_format);
            let client = kube::Client::try_default().await?;
            sidecar::run(
                client,
                sidecar::Config {
                    listen: args.listen,
                    namespaces: args.namespaces,
                    auth: args.auth,
                    users_file: args.users_file,
                    external_url: args.external_url,
                    auth_cache_ttl: Duration::from_secs(args.auth_cache_seconds),
                    users_file_poll: Duration::from_secs(args.users_file_poll_seconds),
                    signing: sidecar::auth::SigningConfig {
                        max_skew: Duration::from_secs(args.aksk_max_skew_seconds),
                        replay_capacity: args.aksk_replay_capacity as usize,
                    },
                    limits: sidecar::Limits {
                        header_read_timeout: Duration::from_secs(args.header_read_timeout_seconds),
                        body_read_timeout: Duration::from_secs(args.body_read_timeout_seconds),
                        max_header_bytes: args.max_header_bytes as usize,
                        max_headers: args.max_headers as usize,
                        body_limit: args.max_body_bytes as usize,
                        max_connections: args.max_connections as usize,
                        max_in_flight: args.max_in_flight as usize,
                        kube_in_flight: args.kube_in_flight as usize,
                        kube_timeout: Duration::from_secs(args.kube_timeout_seconds),
                    },
                },
            )
            .await
        }
    }
}
