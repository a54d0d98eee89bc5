//! Jobs and pods as the controller reads them: their metadata and the few
//! fields of spec and status that its decisions look at, deserialized
//! straight from the API server's JSON (the rest is skipped while it is
//! read, never stored).
//!
//! Every running StageRun has Jobs and pods, and a `batch/v1` Job or a
//! `core/v1` Pod is a struct of 2.4 to 2.7 KiB before anything is in it
//! (every optional field of its spec and status, inline). Kept whole, they
//! were most of the controller's memory per running run; these views are a
//! few hundred bytes. Writes (create, suspend, delete) still use the whole
//! types.

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// A Job: identity, owner, deletion, suspension and outcome.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<JobViewSpec>,
    pub status: Option<JobViewStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct JobViewSpec {
    pub suspend: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobViewStatus {
    pub conditions: Option<Vec<JobCondition>>,
    pub completion_time: Option<Time>,
}

/// A pod: identity, owner, deletion, node, phase, and whether its
/// containers have begun to be set up.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodViewSpec>,
    pub status: Option<PodViewStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodViewSpec {
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodViewStatus {
    pub phase: Option<String>,
    /// One (empty) entry per container status: only how many there are is
    /// read.
    pub container_statuses: Option<Vec<IgnoredAny>>,
}

/// A view is the resource it views: same kind, group, version and plural,
/// so that watches, gets and lists of it are those of the whole type.
macro_rules! view_of {
    ($view:ty, $whole:ty) => {
        impl Resource for $view {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$whole as Resource>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$whole as Resource>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$whole as Resource>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$whole as Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

view_of!(JobView, Job);
view_of!(PodView, Pod);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn views_are_the_resources_they_view_and_far_smaller() {
        assert_eq!(
            JobView::url_path(&(), Some("ns")),
            Job::url_path(&(), Some("ns"))
        );
        assert_eq!(
            PodView::url_path(&(), Some("ns")),
            Pod::url_path(&(), Some("ns"))
        );
        assert_eq!(JobView::api_version(&()), "batch/v1");
        assert_eq!(PodView::kind(&()), "Pod");
        assert!(size_of::<JobView>() * 4 < size_of::<Job>());
        assert!(size_of::<PodView>() * 4 < size_of::<Pod>());
    }

    #[test]
    fn a_view_reads_its_fields_and_skips_the_rest() {
        let pod: PodView = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "containerStatuses": [{"name": "c"}, {"name": "d"}]}
        }))
        .expect("pod");
        assert_eq!(pod.spec.and_then(|s| s.node_name).as_deref(), Some("n"));
        let status = pod.status.expect("status");
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.container_statuses.map(|c| c.len()), Some(2));

        let job: JobView = serde_json::from_value(json!({
            "metadata": {"name": "j"},
            "spec": {"suspend": true, "template": {"spec": {"containers": []}}},
            "status": {"completionTime": "2026-01-02T03:04:05Z",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .expect("job");
        assert_eq!(job.spec.and_then(|s| s.suspend), Some(true));
        let status = job.status.expect("status");
        assert!(status.completion_time.is_some());
        assert_eq!(
            status.conditions.map(|c| c[0].type_.clone()).as_deref(),
            Some("Complete")
        );
    }
}
