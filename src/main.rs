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
    #[command(flatten)]
    config: controller::Config,

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
            sidecar::run(client, args.config).await
        }
    }
}
