//! Labels and annotations the operator puts on what it creates.

use sha2::{Digest, Sha256};

/// Field manager (server-side apply) and event reporter of the controller.
pub const MANAGER: &str = "cancel-operator";

/// `app.kubernetes.io/managed-by` value on everything the controller creates.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";

/// Label on Jobs and pods: uid of the owning StageRun (how children are found).
pub const STAGERUN_UID: &str = "cancel.dev/stagerun-uid";

/// Label on Jobs and pods: numeric id of the job run.
pub const JOB_ID: &str = "cancel.dev/job-id";

/// Annotation on Jobs and pods: name of the owning StageRun.
pub const STAGERUN_NAME: &str = "cancel.dev/stagerun";

/// Annotation on Jobs and pods: name of the job within the stage.
pub const JOB_NAME: &str = "cancel.dev/job";

/// Annotation that approves a StageRun whose approvalType is `manual`.
pub const APPROVED: &str = "cancel.dev/approved";

/// Lowercase hex SHA-256 of `parts`, separated so that ("ab","c") != ("a","bc").
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Name of the batch/v1 Job for one job of a StageRun: `<stagerun>-<job>`
/// when that is a valid DNS label, otherwise a truncated form with a hash
/// suffix. Stable for a given StageRun uid and job name.
pub fn job_resource_name(stagerun: &str, stagerun_uid: &str, job: &str) -> String {
    let raw = format!("{stagerun}-{job}");
    let clean: String = raw
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect();
    let trimmed = clean.trim_matches('-');
    if trimmed == raw && trimmed.len() <= 63 {
        return raw;
    }
    let hash = &digest(&[stagerun_uid, job])[..10];
    let head: String = trimmed.chars().take(52).collect();
    format!("{}-{hash}", head.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept() {
        assert_eq!(
            job_resource_name("foo-2-dev-1", "u", "unittest"),
            "foo-2-dev-1-unittest"
        );
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
