//! What CodeArts (a build task) and Studio (a site) read of a pipeline in
//! two places, the cluster (the watch cache) and the archive: which of the
//! namespaces of its runs (`Service::pipeline_namespaces`) the caller may
//! read.

use super::auth::Identity;
use super::service::{Failure, Service};
use crate::crd::StageRun;

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
