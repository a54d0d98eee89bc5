//! cancel-operator: runs stages as Kubernetes Jobs and cancels them safely.
#![forbid(unsafe_code)]

// `pub` only what the binaries (src/main.rs, src/bin/) and tests/ use.
pub mod archive;
pub mod controller;
pub mod crd;
pub(crate) mod labels;
pub mod probe;
pub mod request;
pub(crate) mod shutdown;
pub mod sidecar;
pub mod telemetry;
pub(crate) mod watch;

/// Errors of the controller and the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed; `step` says which.
    #[error("Kubernetes API, {step}: {source}")]
    Kube {
        step: &'static str,
        source: kube::Error,
    },

    /// A query to the archive failed; `step` says which.
    #[error("archive, {step}: {source}")]
    Archive {
        step: &'static str,
        source: sqlx::Error,
    },

    /// The archive's schema could not be brought up to date.
    #[error("archive schema: {0}")]
    ArchiveSchema(Box<sqlx::migrate::MigrateError>),

    /// A reader found the archive's schema older than it knows (the
    /// controller applies it).
    #[error(
        "archive schema at version {applied}, this binary reads version {known}: waiting for the controller to apply it"
    )]
    ArchiveSchemaBehind { applied: i64, known: i64 },

    #[error("invalid job template for {job}: {message}")]
    InvalidTemplate { job: String, message: String },

    #[error("id space exhausted")]
    IdsExhausted,

    /// The id counters are missing or unreadable and the archive, past
    /// whose ids they must continue, does not answer; retried.
    #[error(
        "the id counters must continue past the archive's ids, and the archive does not answer"
    )]
    IdsUnfloored,

    #[error("object has no {0}")]
    MissingField(&'static str),

    /// A Job could not be created yet (the StageRun's `JobCreationHeld`
    /// condition says which and why); retried with backoff.
    #[error("a Job could not be created yet")]
    CreationHeld,

    /// The reconcile panicked; the object fails alone, with backoff.
    #[error("the controller failed on this object: {0}")]
    Panicked(String),
}

impl Error {
    /// True for a write refused because the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

/// Names the step of a failed API call: `api.get(..).await.step("read Job")?`.
pub(crate) trait Step<T> {
    fn step(self, step: &'static str) -> Result<T>;
}

impl<T> Step<T> for kube::Result<T> {
    fn step(self, step: &'static str) -> Result<T> {
        self.map_err(|source| Error::Kube { step, source })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
