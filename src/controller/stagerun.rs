//! StageRun reconcile: observe from the caches → decide (plan.rs) → apply →
//! record what applying did (plan.rs again) → write the status → delete.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, PropagationPolicy,
};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::context::{Context, key, requeue, resync};
use super::plan::{
    self, CancelOrder, Decision, Fresh, JobCreation, Need, Observation, ObservedJob, ObservedPod,
};
use super::views::{JobView, PodView};
use super::{cache, isolate};
use crate::crd::{
    CancelMode, CancelRecord, CancelRequest, JobTemplate, RequestPhase, StagePhase, StageRun,
    TargetOutcome,
};
use crate::{Error, Result, Step, labels};

pub(super) async fn reconcile(obj: Arc<StageRun>, ctx: Arc<Context>) -> Result<Action> {
    let start = std::time::Instant::now();
    let result = isolate::isolated(reconcile_timed(&obj, &ctx)).await;
    if let Err(e) = &result {
        isolate::report(&ctx, obj.as_ref(), e).await;
    }
    ctx.metrics
        .reconciled("stagerun", result.is_ok(), start.elapsed());
    result
}

async fn reconcile_timed(run: &StageRun, ctx: &Context) -> Result<Action> {
    if run.is_finished() {
        // Finished runs cost nothing: no timer, no backoff state kept.
        ctx.forget(run);
        return Ok(Action::await_change());
    }
    if run.metadata.deletion_timestamp.is_some() {
        // Owner references hand the Jobs (and their pods) to the garbage collector.
        return Ok(Action::await_change());
    }
    if ctx.behind_own_write(run) {
        // Our last status write has not reached the cache yet: its watch
        // event triggers the next pass; the timer is a safety net.
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let action = reconcile_cached(run, ctx).await?;
    ctx.succeeded(&key(run));
    Ok(action)
}

/// The Jobs the run controls, from the cache (by ownerReference).
fn observe_jobs(ctx: &Context, run: &StageRun, uid: &str) -> Vec<ObservedJob> {
    ctx.caches
        .jobs
        .lookup(&cache::children_of(uid))
        .iter()
        .filter(|j| owned_by(j.as_ref(), uid))
        .filter_map(|j| ObservedJob::from_job(j, run))
        .collect()
}

/// The run's Jobs as their pods know them: each Job it observes or
/// recorded, by uid (pods name their Job's uid as their controller), or by
/// name where only the name was recorded.
struct JobsOfRun {
    run_uid: String,
    by_uid: HashMap<String, String>,
    by_name: HashMap<String, String>,
}

impl JobsOfRun {
    fn new<'a>(run: &StageRun, jobs: impl IntoIterator<Item = &'a ObservedJob>) -> Self {
        let mut by_uid = HashMap::new();
        let mut by_name = HashMap::new();
        for js in run.status.iter().flat_map(|s| s.jobs.iter()) {
            match (&js.job_uid, &js.job_name) {
                (Some(uid), _) => by_uid.insert(uid.clone(), js.name.clone()),
                (None, Some(name)) => by_name.insert(name.clone(), js.name.clone()),
                (None, None) => None,
            };
        }
        for j in jobs {
            if let Some(uid) = &j.uid {
                by_name.remove(&j.resource_name);
                by_uid.insert(uid.clone(), j.job.clone());
            }
        }
        JobsOfRun {
            run_uid: run.uid().unwrap_or_default(),
            by_uid,
            by_name,
        }
    }

    /// Those of these Jobs known by a uid that `other` does not know.
    fn unknown_to(&self, other: &JobsOfRun) -> JobsOfRun {
        JobsOfRun {
            run_uid: self.run_uid.clone(),
            by_uid: (self.by_uid.iter())
                .filter(|(uid, _)| !other.by_uid.contains_key(*uid))
                .map(|(uid, job)| (uid.clone(), job.clone()))
                .collect(),
            by_name: HashMap::new(),
        }
    }

    /// The stage's job a pod runs, if one of these Jobs is its controller.
    fn job_of(&self, pod: &PodView) -> Option<String> {
        match cache::controller_of(pod) {
            Some(("Job", name, uid)) => (self.by_uid.get(uid))
                .or_else(|| self.by_name.get(name))
                .cloned(),
            _ => None,
        }
    }

    fn observe<'a>(&self, pods: impl IntoIterator<Item = &'a PodView>) -> Vec<ObservedPod> {
        let mut seen = HashSet::new();
        pods.into_iter()
            .filter(|p| seen.insert(p.metadata.name.clone()))
            .filter_map(|p| Some(ObservedPod::from_pod(p, Some(self.job_of(p)?))))
            .collect()
    }
}

/// The pods of the run's Jobs, from the cache.
fn observe_pods(ctx: &Context, ns: &str, jobs: &JobsOfRun) -> Vec<ObservedPod> {
    let by_uid = jobs.by_uid.keys().map(|uid| cache::children_of(uid));
    let by_name = (jobs.by_name.keys()).map(|name| cache::pods_of_job_named(ns, name));
    let pods: Vec<Arc<PodView>> = by_uid
        .chain(by_name)
        .flat_map(|key| ctx.caches.pods.lookup(&key))
        .collect();
    jobs.observe(pods.iter().map(AsRef::as_ref))
}

/// One pass: observe from the caches, decide, apply, record.
async fn reconcile_cached(run: &StageRun, ctx: &Context) -> Result<Action> {
    let ns = run.namespace().ok_or(Error::MissingField("namespace"))?;
    let uid = run.uid().ok_or(Error::MissingField("uid"))?;
    let mut plan = decide(ctx, run, &ns, &uid).await?;
    // Jobs are created before the status names them: a crash in between
    // leaves a Job that the next pass finds by label, never a name without
    // a Job.
    let held = create_jobs(ctx, run, &ns, &uid, &mut plan).await;
    if run.status.as_ref() != Some(&plan.status) {
        ctx.write_status(run, &plan.status).await?;
    }
    // The status is written: its Events go out whatever the deletions meet
    // (an error there must not lose the record of the cancel).
    let events = join_all(plan.events.iter().map(|ev| ctx.event(run, ev)));
    let (deleted, _) = tokio::join!(delete_children(ctx, run, &ns, &plan.actions), events);
    deleted?;
    let finished = plan.status.phase.is_some_and(StagePhase::is_finished);
    if finished && let Some(cancel) = plan.status.cancel.as_ref() {
        record_cancel_completed(ctx, run, &ns, cancel);
    }
    if held {
        // Recorded (the condition says which job and why): retried with
        // the backoff of a failed pass.
        return Err(Error::CreationHeld);
    }
    Ok(match plan.requeue_after {
        Some(d) => requeue(d),
        None if finished => Action::await_change(),
        None => resync(),
    })
}

/// Observes the run from the caches and asks the pure core; performs the
/// reads (or id allocation) the core asks for, and asks again with them.
async fn decide(ctx: &Context, run: &StageRun, ns: &str, uid: &str) -> Result<plan::Plan> {
    let now = Timestamp::now();
    // Also once a cancel is accepted: a request of a stronger mode takes over.
    let cancel = match run.status.as_ref().and_then(|s| s.cancel.as_ref()) {
        Some(c) if c.mode == CancelMode::Terminate => None,
        _ => find_cancel(ctx, ns, uid),
    };
    let jobs = observe_jobs(ctx, run, uid);
    let pods = observe_pods(ctx, ns, &JobsOfRun::new(run, &jobs));
    let mut obs = Observation {
        now,
        run,
        ids: None,
        jobs,
        pods,
        cancel,
        force_margin: ctx.config.force_margin,
        issued: ctx.issued(run, now),
    };
    let mut fresh = Fresh::default();
    loop {
        match plan::decide(&obs, fresh) {
            Decision::Apply(plan) => return Ok(plan),
            Decision::Need(need) => {
                match need {
                    Need::Ids { jobs } => obs.ids = Some(ctx.ids.allocate(jobs).await?),
                    Need::Jobs { names } => {
                        obs.jobs.extend(read_jobs(ctx, run, ns, uid, &names).await?);
                        fresh.jobs = true;
                    }
                }
                // The decision is taken as of after the reads.
                obs.now = Timestamp::now();
                obs.issued = ctx.issued(run, obs.now);
            }
            Decision::Confirm(plan) => {
                let (jobs, pods) = confirm_children(ctx, run, ns, uid, &obs.jobs).await?;
                if jobs.is_empty() && pods.is_empty() {
                    return Ok(plan);
                }
                (obs.jobs, obs.pods) = (jobs, pods);
                fresh.children = true;
            }
        }
    }
}

/// These Jobs of the run, read from the API server now (those that exist
/// and are the run's).
async fn read_jobs(
    ctx: &Context,
    run: &StageRun,
    ns: &str,
    uid: &str,
    names: &[String],
) -> Result<Vec<ObservedJob>> {
    let api = ctx.api::<JobView>(ns);
    let reads = names
        .iter()
        .map(|name| async { api.get_opt(name).await.step("read a Job the cache lacks") });
    let mut found = Vec::new();
    for job in futures::future::try_join_all(reads)
        .await?
        .into_iter()
        .flatten()
    {
        if owned_by(&job, uid)
            && let Some(observed) = ObservedJob::from_job(&job, run)
        {
            found.push(observed);
        }
    }
    Ok(found)
}

/// This run's Jobs and pods, read from the API server now, once per
/// cancelled run: each Job the run may have made, by its name (whatever
/// its labels say), and the pods of every Job of the run known by then, by
/// the label the job controller keeps on them.
async fn confirm_children(
    ctx: &Context,
    run: &StageRun,
    ns: &str,
    uid: &str,
    observed: &[ObservedJob],
) -> Result<(Vec<ObservedJob>, Vec<ObservedPod>)> {
    let run_name = run.name_any();
    let mut names: Vec<String> = (run.spec.job_names())
        .map(|j| labels::job_resource_name(&run_name, uid, j))
        .collect();
    names.extend(observed.iter().map(|j| j.resource_name.clone()));
    names.sort();
    names.dedup();
    let known = JobsOfRun::new(run, observed);
    let (jobs, mut pods) = futures::try_join!(
        read_jobs(ctx, run, ns, uid, &names),
        list_job_pods(ctx, ns, &known),
    )?;
    // Jobs the list of pods did not ask about (made by a pass whose status
    // write was lost, and not yet cached).
    let all = JobsOfRun::new(run, observed.iter().chain(&jobs));
    let missed = all.unknown_to(&known);
    if !missed.by_uid.is_empty() {
        pods.extend(list_job_pods(ctx, ns, &missed).await?);
    }
    Ok((jobs, all.observe(pods.iter())))
}

/// The pods of these Jobs, listed now: by the job controller's label for
/// the Jobs known by uid, by this controller's label for those known only
/// by name (recorded before Job uids were); owners are checked after.
async fn list_job_pods(ctx: &Context, ns: &str, jobs: &JobsOfRun) -> Result<Vec<PodView>> {
    let api = ctx.api::<PodView>(ns);
    let mut selectors = Vec::new();
    if !jobs.by_uid.is_empty() {
        let uids: Vec<&str> = jobs.by_uid.keys().map(String::as_str).collect();
        selectors.push(format!("{} in ({})", cache::JOB_POD_LABEL, uids.join(",")));
    }
    if !jobs.by_name.is_empty() {
        selectors.push(format!("{}={}", labels::STAGERUN_UID, jobs.run_uid));
    }
    let lists = selectors.iter().map(|s| {
        let api = &api;
        async move {
            let lp = ListParams::default().labels(s);
            api.list(&lp).await.step("list the run's pods")
        }
    });
    let lists = futures::future::try_join_all(lists).await?;
    Ok(lists.into_iter().flat_map(|l| l.items).collect())
}

/// Applies the plan's `CreateJob` actions and records what came of every
/// one of them in the plan (the core's second pure step); true when a
/// creation was held, for the pass to be retried with backoff.
async fn create_jobs(
    ctx: &Context,
    run: &StageRun,
    ns: &str,
    uid: &str,
    plan: &mut plan::Plan,
) -> bool {
    let creations: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| match a {
            plan::Action::CreateJob { job } => Some(job.clone()),
            _ => None,
        })
        .collect();
    if creations.is_empty() {
        return false;
    }
    let outcomes = join_all(
        creations
            .iter()
            .map(|job| create_job(ctx, run, ns, uid, job, plan)),
    )
    .await;
    let outcomes: Vec<(String, JobCreation)> = creations.into_iter().zip(outcomes).collect();
    plan::record_creations(plan, &outcomes, Timestamp::now());
    outcomes
        .iter()
        .any(|(_, o)| matches!(o, JobCreation::Held { .. }))
}

/// A cancelled (or timed out) run has ended: its latency and a log line.
fn record_cancel_completed(ctx: &Context, run: &StageRun, ns: &str, cancel: &CancelRecord) {
    let took = plan::seconds_since(Timestamp::now(), &cancel.requested_at);
    ctx.metrics
        .cancelled(cancel.is_timeout(), Duration::from_secs_f64(took.max(0.0)));
    tracing::info!(
        stagerun = %run.name_any(), namespace = ns, request = %cancel.request_name,
        seconds = took, "cancel completed"
    );
}

/// Creates the Job of one spec job and says what came of it: refusals for
/// good fail the job; whatever may pass (forbidden by a quota, a policy or
/// a webhook; the API server unreachable) holds it for a retry.
async fn create_job(
    ctx: &Context,
    run: &StageRun,
    ns: &str,
    uid: &str,
    job: &str,
    plan: &plan::Plan,
) -> JobCreation {
    let Some(template) = run.spec.template(job) else {
        return JobCreation::Refused {
            message: "the stage has no such job".into(),
        };
    };
    let id = plan
        .status
        .jobs
        .iter()
        .find(|j| j.name == job)
        .map(|j| j.id)
        .unwrap_or_default();
    let deadline = plan::creation_deadline(run, &plan.status, job, Timestamp::now());
    let k8s_job = match build_job(run, template, id, deadline) {
        Ok(j) => j,
        Err(e) => {
            return JobCreation::Refused {
                message: e.to_string(),
            };
        }
    };
    let resource_name = k8s_job.metadata.name.clone().unwrap_or_default();
    let api = ctx.api::<Job>(ns);
    let held = |e: kube::Error| JobCreation::Held {
        message: match e {
            kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
            e => e.to_string(),
        },
    };
    match api.create(&PostParams::default(), &k8s_job).await {
        Ok(created) => JobCreation::Created {
            resource_name,
            uid: created.metadata.uid,
        },
        // Ours only if this StageRun owns it.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            match (ctx.api::<JobView>(ns)).get_opt(&resource_name).await {
                Ok(Some(existing)) if owned_by(&existing, uid) => JobCreation::AlreadyOurs {
                    id: ObservedJob::from_job(&existing, run).and_then(|j| j.id),
                    uid: existing.metadata.uid.clone(),
                    resource_name,
                },
                Ok(Some(_)) => JobCreation::NameTaken { resource_name },
                // Deleted in between: the next pass creates it.
                Ok(None) => held(kube::Error::Api(s)),
                Err(e) => held(e),
            }
        }
        Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => JobCreation::Refused {
            message: s.message.clone(),
        },
        Err(e) => held(e),
    }
}

/// Suspends and deletes Jobs, then deletes pods: a pod is deleted only once
/// its Job is suspended or being deleted, so that no Job replaces it for
/// good (a replacement made before the job controller saw the suspension
/// is deleted by the job controller, and by the next pass).
async fn delete_children(
    ctx: &Context,
    run: &StageRun,
    ns: &str,
    actions: &[plan::Action],
) -> Result<()> {
    let mut issued = plan::Issued::default();
    let result = apply_deletions(ctx, ns, actions, &mut issued).await;
    ctx.record_issued(run, issued);
    result
}

async fn apply_deletions<'a>(
    ctx: &Context,
    ns: &str,
    actions: &'a [plan::Action],
    issued: &mut plan::Issued,
) -> Result<()> {
    let jobs = ctx.api::<Job>(ns);
    let suspend = Patch::Merge(json!({"spec": {"suspend": true}}));
    // A Job action, applied: the name, the record it goes to, the result.
    let apply = |action: &'a plan::Action| {
        let (jobs, suspend) = (&jobs, &suspend);
        async move {
            match action {
                plan::Action::SuspendJob { resource_name } => Some((
                    resource_name,
                    false,
                    jobs.patch(resource_name, &PatchParams::default(), suspend)
                        .await
                        .map(drop)
                        .step("suspend a Job"),
                )),
                plan::Action::DeleteJob { resource_name } => {
                    let dp = DeleteParams {
                        propagation_policy: Some(PropagationPolicy::Background),
                        ..DeleteParams::default()
                    };
                    Some((
                        resource_name,
                        true,
                        jobs.delete(resource_name, &dp)
                            .await
                            .map(drop)
                            .step("delete a Job"),
                    ))
                }
                _ => None,
            }
        }
    };
    for (name, deleted, r) in join_all(actions.iter().map(apply))
        .await
        .into_iter()
        .flatten()
    {
        ignore_not_found(r)?;
        let record = if deleted {
            &mut issued.jobs
        } else {
            &mut issued.suspensions
        };
        record.insert(name.clone(), Timestamp::now());
    }
    let pods = ctx.api::<Pod>(ns);
    for action in actions {
        if let plan::Action::DeletePods {
            names,
            grace_seconds,
        } = action
        {
            let grace = (*grace_seconds).max(0);
            let dp = DeleteParams {
                grace_period_seconds: Some(u32::try_from(grace).unwrap_or(u32::MAX)),
                ..DeleteParams::default()
            };
            let results = join_all(
                names
                    .iter()
                    .map(|n| async { pods.delete(n, &dp).await.step("delete a pod") }),
            )
            .await;
            for (name, r) in names.iter().zip(results) {
                ignore_not_found(r)?;
                issued.pods.insert(name.clone(), (Timestamp::now(), grace));
            }
        }
    }
    Ok(())
}

/// A deletion of something already gone did what it was for.
pub(super) fn ignore_not_found<T>(r: Result<T>) -> Result<()> {
    match r {
        Err(Error::Kube {
            source: kube::Error::Api(s),
            ..
        }) if s.code == 404 => Ok(()),
        r => r.map(drop),
    }
}

fn owned_by<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Of the accepted CancelRequests that target `uid` and still have it
/// Canceling, the earliest of the strongest mode, from the cache's index of
/// requests by target.
fn find_cancel(ctx: &Context, ns: &str, uid: &str) -> Option<CancelOrder> {
    let requests = ctx.caches.requests.lookup(&cache::requests_by_target(uid));
    earliest_cancel(requests.iter().map(AsRef::as_ref), ns, uid)
}

/// Of the in-progress requests in `ns` that still have `uid` Canceling,
/// the earliest (by creation, then name) of the strongest mode.
fn earliest_cancel<'a>(
    requests: impl Iterator<Item = &'a CancelRequest>,
    ns: &str,
    uid: &str,
) -> Option<CancelOrder> {
    let chosen = requests
        .filter(|r| r.metadata.namespace.as_deref() == Some(ns))
        .filter(|r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(RequestPhase::InProgress)
                    && s.targets
                        .iter()
                        .any(|t| t.uid == uid && t.outcome == TargetOutcome::Canceling)
            })
        })
        .min_by(|a, b| {
            (
                std::cmp::Reverse(a.spec.mode),
                a.metadata.creation_timestamp.as_ref(),
                a.metadata.name.as_ref(),
            )
                .cmp(&(
                    std::cmp::Reverse(b.spec.mode),
                    b.metadata.creation_timestamp.as_ref(),
                    b.metadata.name.as_ref(),
                ))
        })?;
    Some(CancelOrder {
        request_name: chosen.name_any(),
        requested_by: chosen.spec.requested_by.clone(),
        reason: chosen.spec.reason.clone(),
        requested_at: chosen
            .metadata
            .creation_timestamp
            .clone()
            .unwrap_or(Time(Timestamp::now())),
        grace_period_seconds: chosen.spec.grace_period_seconds,
        mode: chosen.spec.mode,
    })
}

/// The batch/v1 Job for one job of a StageRun, ended by the job controller
/// after `deadline` seconds (what is left of the run's).
fn build_job(run: &StageRun, job: &JobTemplate, id: i64, deadline: Option<i64>) -> Result<Job> {
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
    // Every deletion of these pods (ours, or the garbage collector's)
    // then honours the stage's cancel grace period.
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
            active_deadline_seconds: deadline,
            template,
            ..JobSpec::default()
        }),
        status: None,
    })
}

pub(super) fn error_policy(obj: Arc<StageRun>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(&key(obj.as_ref()), err);
    if !err.is_conflict() {
        tracing::warn!(stagerun = %obj.name_any(), error = %err, retry_in = ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}
