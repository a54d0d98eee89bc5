#![forbid(unsafe_code)]

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,

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
    #[arg(long, env = "METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    metrics_address: String,

    /// Reconciles run at once, per controller.
    #[arg(long, env = "CONCURRENCY", default_value_t = controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,

    /// This instance's name in the Lease (default: $POD_NAME, or host and pid).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    #[command(flatten)]
    logging: Logging,
}

#[derive(Args)]
struct SidecarArgs {
    #[command(flatten)]
    config: sidecar::Config,

    #[command(flatten)]
    logging: Logging,
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
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
            controller::run(
                client,
                controller::Config {
                    namespace: args.namespace,
                    state_namespace: args.state_namespace,
                    id_configmap: args.id_configmap,
                    force_margin: Duration::from_secs(args.force_delete_margin_seconds),
                    concurrency: args.concurrency,
                    metrics_address: if args.metrics_address.is_empty() {
                        None
                    } else {
                        Some(args.metrics_address.parse()?)
                    },
                    leader_election: args.leader_elect.then(|| controller::LeaderElection {
                        lease_name: args.lease_name,
                        identity: args.identity.unwrap_or_else(default_identity),
                        lease_duration: Duration::from_secs(args.lease_duration_seconds),
                    }),
                },
            )
            .await
        }
        Command::Sidecar(args) => {
            telemetry::init(args.logging.log_format);
            let client = kube::Client::try_default().await?;
            sidecar::run(client, args.config).await
        }
    }
}
