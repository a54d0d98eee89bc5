//! StageRun reconcile: observe → decide (plan.rs) → apply → update status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::plan::{self, CancelOrder, Observation, ObservedJob, ObservedPod};
use super::{Context, key, resync};
use crate::crd::{CancelRequest, JobTemplate, RequestPhase, StageRun, TargetOutcome};
use crate::{Error, Result, labels};

pub async fn reconcile(obj: Arc<StageRun>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = reconcile_timed(obj, &ctx).await;
    ctx.metrics
        .reconciled("stagerun", result.is_ok(), start.elapsed());
    result
}

async fn reconcile_timed(obj: Arc<StageRun>, ctx: &Arc<Context>) -> Result<Action> {
    if obj
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p.is_finished())
    {
        return Ok(Action::await_change());
    }
    let ns = obj.namespace().ok_or(Error::MissingField("namespace"))?;
    let api: Api<StageRun> = ctx.api(&ns);
    // The cached object may lag our own last write; decide on a fresh read.
    let Some(run) = api.get_opt(&obj.name_any()).await? else {
        return Ok(Action::await_change());
    };
    if run.metadata.deletion_timestamp.is_some() {
        // Owner references hand the Jobs (and their pods) to the garbage collector.
        return Ok(Action::await_change());
    }
    let action = reconcile_fresh(&run, &ns, ctx).await?;
    ctx.succeeded(&key(&run));
    Ok(action)
}

async fn reconcile_fresh(run: &StageRun, ns: &str, ctx: &Context) -> Result<Action> {
    let uid = run.uid().ok_or(Error::MissingField("uid"))?;
    let status = run.status.clone().unwrap_or_default();
    if status.phase.is_some_and(|p| p.is_finished()) {
        return Ok(Action::await_change());
    }

    let ids = match status.id {
        Some(_) => None,
        None => Some(ctx.ids.allocate(run.spec.jobs.len()).await?),
    };
    let selector = ListParams::default().labels(&format!("{}={uid}", labels::STAGERUN_UID));
    let jobs: Vec<ObservedJob> = ctx
        .api::<Job>(ns)
        .list(&selector)
        .await?
        .items
        .iter()
        .filter(|j| owned_by(*j, &uid))
        .filter_map(ObservedJob::from_job)
        .collect();
    let pods: Vec<ObservedPod> = ctx
        .api::<Pod>(ns)
        .list(&selector)
        .await?
        .items
        .iter()
        .map(ObservedPod::from_pod)
        .collect();
    let cancel = if status.cancel.is_none() {
        find_cancel(ctx, ns, &uid).await?
    } else {
        None
    };

    let mut plan = plan::plan(&Observation {
        now: Timestamp::now(),
        run,
        ids,
        jobs,
        pods,
        cancel,
        force_margin: ctx.config.force_margin,
    });

    // Jobs are created before the status names them: a crash in between leaves
    // a Job that the next pass finds by label, never a name without a Job.
    let to_create: Vec<String> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::CreateJob { job } => Some(job.clone()),
            _ => None,
        })
        .collect();
    for job in &to_create {
        {
            let template = run
                .spec
                .jobs
                .iter()
                .find(|j| &j.name == job)
                .ok_or(Error::MissingField("job template"))?;
            let id = plan
                .status
                .jobs
                .iter()
                .find(|j| &j.name == job)
                .map(|j| j.id)
                .unwrap_or_default();
            match build_job(run, template, id) {
                Ok(k8s_job) => {
                    let name = k8s_job.metadata.name.clone().unwrap_or_default();
                    match ctx
                        .api::<Job>(ns)
                        .create(&PostParams::default(), &k8s_job)
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                            fail_job(
                                &mut plan,
                                job,
                                &format!("job {job} could not be created: {}", s.message),
                            );
                            ctx.event(run, true, "InvalidJob", s.message.clone()).await;
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                    if let Some(js) = plan.status.jobs.iter_mut().find(|j| &j.name == job) {
                        js.job_name = Some(name);
                    }
                }
                Err(e) => {
                    fail_job(&mut plan, job, &e.to_string());
                    ctx.event(run, true, "InvalidJob", e.to_string()).await;
                }
            }
        }
    }

    if run.status.as_ref() != Some(&plan.status) {
        let patch = json!({
            "apiVersion": "cancel.dev/v1alpha1",
            "kind": "StageRun",
            // A precondition: a decision made on a stale read is refused (409).
            "metadata": { "resourceVersion": run.resource_version() },
            "status": plan.status,
        });
        ctx.api::<StageRun>(ns)
            .patch_status(
                &run.name_any(),
                &PatchParams::apply(labels::MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
    }

    for action in &plan.actions {
        match action {
            plan::Action::CreateJob { .. } => {}
            plan::Action::DeleteJob { resource_name } => {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..DeleteParams::default()
                };
                ignore_not_found(ctx.api::<Job>(ns).delete(resource_name, &dp).await)?;
            }
            plan::Action::DeletePods {
                names,
                grace_seconds,
            } => {
                let dp = DeleteParams {
                    grace_period_seconds: Some(*grace_seconds as u32),
                    ..DeleteParams::default()
                };
                for name in names {
                    ignore_not_found(ctx.api::<Pod>(ns).delete(name, &dp).await)?;
                }
            }
        }
    }

    for ev in &plan.events {
        ctx.event(run, ev.warning, ev.reason, ev.note.clone()).await;
    }
    if let Some(cancel) = plan.status.cancel.as_ref()
        && plan.status.phase.is_some_and(|p| p.is_finished())
    {
        let took = plan::seconds_since(Timestamp::now(), &cancel.requested_at);
        ctx.metrics.cancelled(
            cancel.request_name.is_empty(),
            Duration::from_secs_f64(took.max(0.0)),
        );
        tracing::info!(
            stagerun = %run.name_any(), namespace = ns, request = %cancel.request_name,
            seconds = took, "cancel completed"
        );
    }

    Ok(match plan.requeue_after {
        Some(d) => Action::requeue(d.max(Duration::from_millis(100))),
        None if plan.status.phase.is_some_and(|p| p.is_finished()) => Action::await_change(),
        None => resync(),
    })
}

fn fail_job(plan: &mut plan::Plan, job: &str, message: &str) {
    if let Some(js) = plan.status.jobs.iter_mut().find(|j| j.name == job) {
        js.state = crate::crd::JobState::Completed;
        js.result = crate::crd::RunResult::Failed;
        js.completion_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        ));
    }
    plan.status.failure_reason = Some(message.to_string());
}

fn ignore_not_found<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn owned_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// The earliest accepted CancelRequest in the namespace that targets `uid`
/// and still has it Canceling.
async fn find_cancel(ctx: &Context, ns: &str, uid: &str) -> Result<Option<CancelOrder>> {
    let requests = ctx
        .api::<CancelRequest>(ns)
        .list(&ListParams::default())
        .await?;
    let mut candidates: Vec<&CancelRequest> = requests
        .items
        .iter()
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(RequestPhase::InProgress)
                    && s.targets
                        .iter()
                        .any(|t| t.uid == uid && t.outcome == TargetOutcome::Canceling)
            })
        })
        .collect();
    candidates.sort_by(|a, b| {
        (
            a.metadata.creation_timestamp.as_ref(),
            a.metadata.name.as_ref(),
        )
            .cmp(&(
                b.metadata.creation_timestamp.as_ref(),
                b.metadata.name.as_ref(),
            ))
    });
    Ok(candidates.first().map(|r| CancelOrder {
        request_name: r.name_any(),
        requested_by: r.spec.requested_by.clone(),
        reason: r.spec.reason.clone(),
        requested_at: r.metadata.creation_timestamp.clone().unwrap_or(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        ),
        grace_period_seconds: r.spec.grace_period_seconds,
    }))
}

/// The batch/v1 Job for one job of a StageRun.
pub fn build_job(run: &StageRun, job: &JobTemplate, id: i64) -> Result<Job> {
    let invalid = |message: String| Error::InvalidTemplate {
        job: job.name.clone(),
        message,
    };
    let uid = run.uid().ok_or(Error::MissingField("uid"))?;
    let name = labels::job_resource_name(&run.name_any(), &uid, &job.name);
    let mut template: PodTemplateSpec =
        serde_json::from_value(job.template.clone()).map_err(|e| invalid(e.to_string()))?;
    let labels_map = BTreeMap::from([
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::STAGERUN_UID.to_string(), uid.clone()),
        (labels::JOB_ID.to_string(), id.to_string()),
    ]);
    let annotations = BTreeMap::from([
        (labels::STAGERUN_NAME.to_string(), run.name_any()),
        (labels::JOB_NAME.to_string(), job.name.clone()),
    ]);
    let meta = template.metadata.get_or_insert_with(ObjectMeta::default);
    meta.labels
        .get_or_insert_with(BTreeMap::new)
        .extend(labels_map.clone());
    meta.annotations
        .get_or_insert_with(BTreeMap::new)
        .extend(annotations.clone());
    let spec = template
        .spec
        .as_mut()
        .ok_or_else(|| invalid("template has no spec".into()))?;
    if spec.restart_policy.is_none() {
        spec.restart_policy = Some("Never".into());
    }
    // Every deletion of these pods (Job deletion, garbage collection) then
    // honours the stage's cancel grace period.
    spec.termination_grace_period_seconds = Some(run.spec.cancel_grace_period_seconds);
    let owner = run
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("owner reference"))?;
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: run.namespace(),
            labels: Some(labels_map),
            annotations: Some(annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(job.backoff_limit),
            template,
            ..JobSpec::default()
        }),
        status: None,
    })
}

pub fn error_policy(obj: Arc<StageRun>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(obj.as_ref()), err);
    if !err.is_conflict() {
        tracing::warn!(stagerun = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}
