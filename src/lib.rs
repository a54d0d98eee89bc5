//! cancel-operator: runs stages as Kubernetes Jobs and cancels them safely.
#![forbid(unsafe_code)]

pub mod controller;
pub mod crd;
pub mod labels;
pub mod probe;
pub mod request;
pub mod shutdown;
pub mod sidecar;
pub mod telemetry;
pub mod watch;

/// Errors of the controller and the sidecar.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("invalid job template for {job}: {message}")]
    InvalidTemplate { job: String, message: String },

    #[error("id space exhausted")]
    IdsExhausted,

    #[error("object has no {0}")]
    MissingField(&'static str),
}

impl Error {
    /// A short, bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::InvalidTemplate { .. } => "invalid_template",
            Error::IdsExhausted => "ids_exhausted",
            Error::MissingField(_) => "missing_field",
        }
    }

    /// True for a write refused because the object changed since it was read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
