//! Labels and annotations the operator puts on what it creates.

use sha2::{Digest, Sha256};

/// Field manager (server-side apply) and event reporter of the controller.
pub const MANAGER: &str = "cancel-operator";

/// `app.kubernetes.io/managed-by` value on everything the controller creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Label on Jobs and pods: uid of the owning StageRun. An index for people
/// and tools: the controller knows a run's children by their ownerReferences.
pub const STAGERUN_UID: &str = "cancel.dev/stagerun-uid";

/// Label on Jobs and pods: numeric id of the job run.
pub const JOB_ID: &str = "cancel.dev/job-id";

/// Annotation on Jobs and pods: name of the owning StageRun.
pub const STAGERUN_NAME: &str = "cancel.dev/stagerun";

/// Annotation on Jobs and pods: name of the job within the stage.
pub const JOB_NAME: &str = "cancel.dev/job";

/// Annotation that approves a StageRun whose approvalType is `manual`.
pub const APPROVED: &str = "cancel.dev/approved";

/// Label on CancelRequests: which API (or tool) asked; one of [`via`].
pub const API: &str = "cancel.dev/api";

/// The values of the [`API`] label, one per way a cancel comes in.
pub mod via {
    pub const GOCD: &str = "gocd";
    pub const CODEARTS: &str = "codearts";
    pub const CRAFTER: &str = "crafter";
    pub const CLOUD_FOUNDRY: &str = "cf";
    pub const KUBECTL: &str = "kubectl";
}

/// Lowercase hex SHA-256 of `parts`, separated so that ("ab","c") != ("a","bc").
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Name of the batch/v1 Job for one job of a StageRun: a readable
/// `<stagerun>-<job>` head (lowercased, invalid characters replaced, cut to
/// fit a DNS label) and a hash of the StageRun's uid and the job name. The
/// hash keeps names apart where heads meet: `app-1-deploy` + `smoke-test`
/// and `app-1-deploy-smoke` + `test` share a head, never a name.
pub fn job_resource_name(stagerun: &str, stagerun_uid: &str, job: &str) -> String {
    let clean: String = format!("{stagerun}-{job}")
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let hash = &digest(&[stagerun_uid, job])[..10];
    let head: String = clean.trim_matches('-').chars().take(52).collect();
    let head = head.trim_end_matches('-');
    if head.is_empty() {
        return format!("job-{hash}");
    }
    format!("{head}-{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_the_run_and_job() {
        let name = job_resource_name("foo-2-dev-1", "u", "unittest");
        assert!(name.starts_with("foo-2-dev-1-unittest-"), "{name}");
        assert_eq!(name.len(), "foo-2-dev-1-unittest-".len() + 10);
    }

    #[test]
    fn runs_whose_names_meet_get_different_jobs() {
        let a = job_resource_name("app-1-deploy", "uid-a", "smoke-test");
        let b = job_resource_name("app-1-deploy-smoke", "uid-b", "test");
        assert_ne!(a, b);
        // Even with one uid (one run, two jobs that meet).
        assert_ne!(
            job_resource_name("app", "u", "a-b"),
            job_resource_name("app-a", "u", "b")
        );
        assert!(job_resource_name("---", "u", "___").starts_with("job-"));
    }

    #[test]
    fn invalid_or_long_names_get_a_stable_hash() {
        let a = job_resource_name("foo", "uid-1", "UnitTest");
        assert!(a.starts_with("foo-unittest-"), "{a}");
        assert_eq!(a, job_resource_name("foo", "uid-1", "UnitTest"));
        assert_ne!(a, job_resource_name("foo", "uid-2", "UnitTest"));
        let long = job_resource_name(&"x".repeat(200), "u", "j_1");
        assert!(long.len() <= 63, "{long}");
        assert!(
            long.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a"]).len(), 64);
    }
}
