//! The controller: runs StageRuns' jobs and carries out CancelRequests.
//!
//! Each reconcile observes from the watch caches (`cache.rs`), decides
//! without I/O (`plan.rs`, `request_plan.rs`), applies the decision and
//! records it (`stagerun.rs`, `cancelrequest.rs`). `context.rs` holds what
//! the reconciles share, `wiring.rs` how changes reach them, and
//! `leader.rs` the Lease that lets one replica of several act,
//! `events.rs` the bounded queue that retries refused Events,
//! `isolate.rs` how a reconcile that panics fails its object alone, and
//! `config.rs` the settings (the `controller` command's flags),
//! `namespaces.rs` how the watches of several namespaces feed one cache,
//! and `retention.rs` how finished runs move to the archive.

mod cache;
mod cancelrequest;
mod config;
mod context;
mod events;
mod ids;
mod isolate;
mod leader;
mod metrics;
mod namespaces;
mod plan;
#[cfg(test)]
mod plan_props;
mod request_plan;
mod retention;
mod stagerun;
#[cfg(test)]
mod test_clock;
mod views;
mod wiring;

use std::sync::Arc;

pub use config::{ArchiveSettings, Config, DEFAULT_CONCURRENCY, LeaderElection};

use crate::archive::Archive;

/// Runs the controllers until a termination signal; with leader election,
/// only while this instance holds the Lease (see `leader.rs`).
pub async fn run(client: kube::Client, config: Config) -> anyhow::Result<()> {
    let archive = open_archive(&config).await?;
    let metrics = Arc::new(metrics::Metrics::with_archive(archive.as_deref()));
    if let Some(addr) = config.metrics_address {
        // Served from the start, so that a standby answers health checks too.
        let listening = metrics::serve(metrics.clone(), addr, crate::shutdown::signal());
        tokio::spawn(async move {
            if let Err(e) = listening.await {
                tracing::error!(error = %e, "cannot serve metrics");
            }
        });
    }
    match config.leader_election.clone() {
        Some(election) => leader::lead(client, config, election, metrics, archive).await,
        None => {
            let stop = crate::shutdown::signal();
            wiring::run_controllers(client, config, metrics, archive, stop).await;
            Ok(())
        }
    }
}

/// The archive, when one is configured, its schema brought up to date now
/// if it answers (otherwise before its first use: a database that is away
/// must not keep the controller from cancelling).
async fn open_archive(config: &Config) -> anyhow::Result<Option<Arc<Archive>>> {
    let Some(settings) = &config.archive else {
        return Ok(None);
    };
    let archive = Archive::connect(&settings.url, settings.pool_size)?;
    match archive.migrate().await {
        Ok(()) => tracing::info!(keep_finished = ?settings.keep_finished, "archive ready"),
        Err(e) => tracing::warn!(error = %e, "archive unavailable; retried before each use"),
    }
    Ok(Some(Arc::new(archive)))
}
