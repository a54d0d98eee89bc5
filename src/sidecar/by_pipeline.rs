//! What CodeArts (a build task) and Studio (a site) read of a pipeline in
//! two places, the cluster (the watch cache) and the archive: where its
//! runs are, and which of those places the caller may read.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::auth::Identity;
use super::service::{Failure, Service, namespaces};
use crate::crd::StageRun;

/// A failed read of the archive, as the APIs report it.
pub fn archive_failure(e: crate::Error) -> Failure {
    Failure::ArchiveUnavailable(e.to_string())
}

/// The served namespaces where `pipeline` has runs: those of `cluster`
/// (its runs in the cluster) and the archive's.
pub async fn pipeline_namespaces(
    state: &Service,
    pipeline: &str,
    cluster: &[Arc<StageRun>],
) -> Result<Vec<String>, Failure> {
    let mut all: BTreeSet<String> = namespaces(cluster).into_iter().collect();
    if let Some(archive) = &state.archive {
        let archived =
            (archive.namespaces_with_pipeline(pipeline).await).map_err(archive_failure)?;
        all.extend(
            archived
                .into_iter()
                .filter(|ns| state.cache.serves_namespace(ns)),
        );
    }
    Ok(all.into_iter().collect())
}

/// Those of `namespaces` where `who` may read runs.
pub async fn readable(
    state: &Service,
    who: &Identity,
    namespaces: Vec<String>,
) -> Result<Vec<String>, Failure> {
    let rights = state.rights_in(who, namespaces).await?;
    Ok(rights
        .into_iter()
        .filter(|(_, r)| r.read)
        .map(|(ns, _)| ns)
        .collect())
}

/// True when `run` is in one of `namespaces`.
pub fn in_namespaces(run: &StageRun, namespaces: &[String]) -> bool {
    run.metadata
        .namespace
        .as_ref()
        .is_some_and(|ns| namespaces.contains(ns))
}

/// The uids of `runs`.
pub fn uids(runs: &[Arc<StageRun>]) -> Vec<String> {
    runs.iter().filter_map(|r| r.metadata.uid.clone()).collect()
}
