//! How CancelRequests are written: one constructor shared by the REST
//! sidecar and `kubectl cancel`, so that labels, TTL and naming agree.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;

use crate::crd::{CancelMode, CancelRequest, CancelRequestSpec, CancelTarget, DEFAULT_TTL_SECONDS};
use crate::labels::{self, API as API_LABEL, digest};

/// The values of the `cancel.dev/api` label a request carries.
pub use crate::labels::via;

/// How the new request is named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Naming {
    /// This exact name: a second create of the same name is refused with 409,
    /// which makes a repeated call idempotent.
    Fixed(String),
    /// A name the API server generates from this prefix.
    Generated(String),
}

/// A name derived from the namespace and the set of uids, so that
/// cancelling the same StageRuns again names the same request.
pub fn name_for_uids(api: &str, namespace: &str, uids: &[String]) -> String {
    let mut sorted: Vec<&str> = uids.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let hash = digest(&[namespace, &sorted.join(",")]);
    format!("{api}-{}", &hash[..20])
}

/// What a new CancelRequest says.
#[derive(Clone, Debug)]
pub struct NewCancelRequest {
    /// Value of the [`labels::API`] label: which API or tool asked.
    pub api: String,
    pub target: CancelTarget,
    pub reason: String,
    /// The authenticated user the request is made for.
    pub requested_by: String,
    pub grace_period_seconds: Option<i64>,
    /// How the StageRuns are stopped; the REST APIs' cancels are `Cancel`.
    pub mode: CancelMode,
}

impl NewCancelRequest {
    /// The resource to create.
    pub fn build(self, naming: Naming) -> CancelRequest {
        let (name, generate_name) = match naming {
            Naming::Fixed(n) => (Some(n), None),
            Naming::Generated(prefix) => (None, Some(prefix)),
        };
        CancelRequest {
            metadata: ObjectMeta {
                name,
                generate_name,
                labels: Some(BTreeMap::from([
                    (API_LABEL.to_string(), self.api),
                    (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
                ])),
                ..ObjectMeta::default()
            },
            spec: CancelRequestSpec {
                target: self.target,
                reason: self.reason,
                requested_by: self.requested_by,
                grace_period_seconds: self.grace_period_seconds,
                mode: self.mode,
                ttl_seconds_after_finished: DEFAULT_TTL_SECONDS,
            },
            status: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_names_ignore_order_and_repeats() {
        let a = name_for_uids("gocd", "ns", &["b".into(), "a".into()]);
        let b = name_for_uids("gocd", "ns", &["a".into(), "b".into(), "a".into()]);
        assert_eq!(a, b);
        assert_ne!(a, name_for_uids("gocd", "other", &["a".into(), "b".into()]));
        assert!(a.starts_with("gocd-") && a.len() == 25, "{a}");
    }

    #[test]
    fn requests_carry_the_api_label_and_ttl() {
        let r = NewCancelRequest {
            api: via::KUBECTL.into(),
            target: CancelTarget {
                stage_run: Some("x".into()),
                ..CancelTarget::default()
            },
            reason: "why".into(),
            requested_by: "jez".into(),
            grace_period_seconds: Some(0),
            mode: CancelMode::Terminate,
        }
        .build(Naming::Generated("kubectl-cancel-".into()));
        assert_eq!(r.metadata.generate_name.as_deref(), Some("kubectl-cancel-"));
        assert!(r.metadata.name.is_none());
        assert_eq!(r.metadata.labels.unwrap()[API_LABEL], via::KUBECTL);
        assert_eq!(r.spec.ttl_seconds_after_finished, DEFAULT_TTL_SECONDS);
        assert_eq!(r.spec.requested_by, "jez");
        assert_eq!(r.spec.mode, CancelMode::Terminate);
    }
}
