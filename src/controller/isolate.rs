//! A reconcile that panics fails its object alone: the panic becomes that
//! object's error (backoff, as for any other), a `ReconcileFailed`
//! condition and a Warning Event say why, and every other object goes on.
//! Without this a single resource the planner cannot handle would end the
//! process, and every restart and standby would end on it again.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::controller::Action;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::plan::{COND_RECONCILE_FAILED, PlannedEvent, set_condition};
use crate::crd::{CancelRequest, CancelRequestStatus, StageRun, StageRunStatus};
use crate::{Error, Result};

/// Runs one pass; a panic in it is returned as [`Error::Panicked`].
pub(super) async fn isolated(pass: impl Future<Output = Result<Action>>) -> Result<Action> {
    match AssertUnwindSafe(pass).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Error::Panicked(panic_message(payload.as_ref()))),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked without a message".into())
}

/// A resource whose status carries conditions.
pub(super) trait Conditioned:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + std::fmt::Debug
{
    type Status: Serialize + Default + Clone;
    fn current_status(&self) -> Option<&Self::Status>;
    fn conditions(status: &mut Self::Status) -> &mut Vec<Condition>;
}

impl Conditioned for StageRun {
    type Status = StageRunStatus;
    fn current_status(&self) -> Option<&StageRunStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut StageRunStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

impl Conditioned for CancelRequest {
    type Status = CancelRequestStatus;
    fn current_status(&self) -> Option<&CancelRequestStatus> {
        self.status.as_ref()
    }
    fn conditions(status: &mut CancelRequestStatus) -> &mut Vec<Condition> {
        &mut status.conditions
    }
}

/// Says on the object why its reconcile failed: the condition (written only
/// when it changes, so that a pass that fails again writes nothing and the
/// backoff holds) and a Warning Event. Failures to say so are logged.
pub(super) async fn report<K: Conditioned>(ctx: &Context, obj: &K, err: &Error) {
    let Error::Panicked(message) = err else {
        return;
    };
    let note = format!("the controller failed on this object and retries with backoff: {message}");
    let mut status = obj.current_status().cloned().unwrap_or_default();
    let conditions = K::conditions(&mut status);
    let before = conditions.clone();
    set_condition(
        conditions,
        COND_RECONCILE_FAILED,
        "True",
        "Panicked",
        note.clone(),
        obj.meta().generation,
        Timestamp::now(),
    );
    if *conditions != before
        && let Err(e) = ctx.write_status(obj, &status).await
    {
        tracing::warn!(error = %e, "could not record the failed reconcile on the object");
    }
    ctx.event(obj, &PlannedEvent::warning(COND_RECONCILE_FAILED, note))
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_pass_is_an_error_with_its_message() {
        let fine = isolated(async { Ok(Action::await_change()) }).await;
        assert!(fine.is_ok());
        let failed = isolated(async { Err(Error::MissingField("uid")) }).await;
        assert!(matches!(failed, Err(Error::MissingField("uid"))));
        let value = i64::MAX;
        let panicked = isolated(async move {
            let _ = value.checked_add(1).expect("overflow in the plan");
            Ok(Action::await_change())
        })
        .await;
        match panicked {
            Err(Error::Panicked(m)) => assert_eq!(m, "overflow in the plan"),
            other => panic!("expected Panicked, got {other:?}"),
        }
        let formatted = isolated(async move {
            panic!("bad value {value}");
        })
        .await;
        match formatted {
            Err(Error::Panicked(m)) => assert_eq!(m, format!("bad value {}", i64::MAX)),
            other => panic!("expected Panicked, got {other:?}"),
        }
    }
}
