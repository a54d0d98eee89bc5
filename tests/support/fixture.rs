//! The StageRuns tests create: one builder, with the defaults most tests
//! share (pipeline `foo`, counter 1, stage `DEV`, container `main` from
//! busybox) and a setter for each thing a test varies.

use cancel_operator::crd::StageRun;
use serde_json::{Map, Value, json};

/// A StageRun named `name` of foo/1/DEV with no jobs yet; see [`StageRunFixture`].
pub fn stage_run(name: &str) -> StageRunFixture {
    StageRunFixture {
        name: name.to_string(),
        labels: None,
        spec: [
            ("pipeline".to_string(), json!("foo")),
            ("pipelineCounter".to_string(), json!(1)),
            ("stage".to_string(), json!("DEV")),
        ]
        .into_iter()
        .collect(),
        jobs: Vec::new(),
        cleanup: Vec::new(),
        container: json!({"name": "main", "image": "busybox"}),
    }
}

/// A StageRun under construction. Fields left unset are left out of the
/// object, so that the CRD's defaults apply (grace 30 s, approved by
/// `changes`, approval `success`, no deadline).
#[derive(Clone, Debug)]
pub struct StageRunFixture {
    name: String,
    labels: Option<Value>,
    spec: Map<String, Value>,
    /// (job name, its pod annotations; None: a template without metadata).
    jobs: Vec<(String, Option<Value>)>,
    /// (cleanup job name, when, its deadline, its pod annotations).
    cleanup: Vec<(String, String, Option<i64>, Value)>,
    /// The one container of every job's pod.
    container: Value,
}

impl StageRunFixture {
    pub fn pipeline(mut self, pipeline: &str) -> Self {
        self.spec.insert("pipeline".into(), json!(pipeline));
        self
    }

    pub fn counter(mut self, counter: i64) -> Self {
        self.spec.insert("pipelineCounter".into(), json!(counter));
        self
    }

    pub fn stage(mut self, stage: &str) -> Self {
        self.spec.insert("stage".into(), json!(stage));
        self
    }

    /// `stageCounter` (1 unless set).
    pub fn stage_counter(mut self, counter: i64) -> Self {
        self.spec.insert("stageCounter".into(), json!(counter));
        self
    }

    /// Pipeline, pipeline counter and stage at once.
    pub fn of(self, (pipeline, counter, stage): (&str, i64, &str)) -> Self {
        self.pipeline(pipeline).counter(counter).stage(stage)
    }

    /// A job whose pod carries the simulation annotations `sim` (the
    /// `sim.cancel.dev/*` annotations the test image acts on).
    pub fn job(mut self, name: &str, sim: Value) -> Self {
        self.jobs.push((name.to_string(), Some(sim)));
        self
    }

    /// A cleanup job that runs `when` (`Always`, `Cancelled`, `Failed`,
    /// `Succeeded`) with the simulation annotations `sim`, within its
    /// default deadline.
    pub fn cleanup(mut self, name: &str, when: &str, sim: Value) -> Self {
        self.cleanup
            .push((name.to_string(), when.to_string(), None, sim));
        self
    }

    /// A cleanup job as [`Self::cleanup`], with its own deadline in seconds.
    pub fn cleanup_within(mut self, name: &str, when: &str, deadline: i64, sim: Value) -> Self {
        self.cleanup
            .push((name.to_string(), when.to_string(), Some(deadline), sim));
        self
    }

    /// A job whose pod template has no metadata at all.
    pub fn bare_job(mut self, name: &str) -> Self {
        self.jobs.push((name.to_string(), None));
        self
    }

    /// The image of every job's container (busybox unless set).
    pub fn image(mut self, image: &str) -> Self {
        self.container["image"] = json!(image);
        self
    }

    /// The command of every job's container.
    pub fn command(mut self, command: &[&str]) -> Self {
        self.container["command"] = json!(command);
        self
    }

    /// Every job's container, replaced as a whole.
    pub fn container(mut self, container: Value) -> Self {
        self.container = container;
        self
    }

    /// `cancelGracePeriodSeconds`.
    pub fn grace(mut self, seconds: i64) -> Self {
        self.spec
            .insert("cancelGracePeriodSeconds".into(), json!(seconds));
        self
    }

    /// `activeDeadlineSeconds`.
    pub fn deadline(mut self, seconds: i64) -> Self {
        self.spec
            .insert("activeDeadlineSeconds".into(), json!(seconds));
        self
    }

    /// `approvedBy`.
    pub fn approved_by(mut self, by: &str) -> Self {
        self.spec.insert("approvedBy".into(), json!(by));
        self
    }

    /// `approvalType: manual`: the stage waits for approval.
    pub fn manual(mut self) -> Self {
        self.spec.insert("approvalType".into(), json!("manual"));
        self
    }

    /// The object's labels, a JSON object (`{}` stays an empty map).
    pub fn labels(mut self, labels: Value) -> Self {
        self.labels = Some(labels);
        self
    }

    pub fn build(self) -> StageRun {
        let container = self.container;
        let jobs: Vec<Value> = self
            .jobs
            .into_iter()
            .map(|(name, sim)| {
                let mut template = json!({"spec": {"containers": [container.clone()]}});
                if let Some(annotations) = sim {
                    template["metadata"] = json!({"annotations": annotations});
                }
                json!({"name": name, "template": template})
            })
            .collect();
        let cleanup: Vec<Value> = self
            .cleanup
            .into_iter()
            .map(|(name, when, deadline, sim)| {
                let template = json!({
                    "metadata": {"annotations": sim},
                    "spec": {"containers": [container.clone()]},
                });
                let mut job = json!({"name": name, "when": when, "template": template});
                if let Some(d) = deadline {
                    job["activeDeadlineSeconds"] = json!(d);
                }
                job
            })
            .collect();
        let mut spec = self.spec;
        spec.insert("jobs".into(), Value::Array(jobs));
        if !cleanup.is_empty() {
            spec.insert("cleanup".into(), Value::Array(cleanup));
        }
        let mut metadata = json!({"name": self.name});
        if let Some(labels) = self.labels {
            metadata["labels"] = labels;
        }
        serde_json::from_value(json!({
            "apiVersion": "cancel.dev/v1alpha1", "kind": "StageRun",
            "metadata": metadata, "spec": spec
        }))
        .expect("stagerun")
    }
}
