//! Who a caller is, as Kubernetes knows them: what authentication yields
//! and authorisation asks about.

/// An authenticated caller, as Kubernetes knows them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}
