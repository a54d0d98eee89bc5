//! `kubectl cancel`: cancel StageRuns from kubectl by writing a
//! CancelRequest in the caller's name, and optionally wait for the outcome.
#![forbid(unsafe_code)]

use std::time::Duration;

use anyhow::{Context as _, bail};
use cancel_operator::crd::{
    BuildTarget, CancelMode, CancelRequest, CancelTarget, RequestPhase, StageTarget,
};
use cancel_operator::request::{Naming, NewCancelRequest};
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::TryStreamExt;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Config, ResourceExt};

/// Cancel StageRuns: one by name, every active run of a stage, a pipeline
/// run, runs by uid, or all matching a label selector.
#[derive(Parser)]
#[command(name = "kubectl cancel", version)]
struct Cli {
    #[command(subcommand)]
    target: Target,

    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand)]
enum Target {
    /// One StageRun, by name.
    Stagerun { name: String },
    /// Every active run of a pipeline's stage.
    Stage { pipeline: String, stage: String },
    /// Every stage of one pipeline run.
    Build { pipeline: String, counter: i64 },
    /// StageRuns by uid.
    Uid {
        #[arg(required = true)]
        uids: Vec<String>,
    },
    /// Every active StageRun whose labels match, e.g. `team=web,tier!=db`.
    Selector { selector: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Cancel,
    Stop,
    Terminate,
}

impl From<Mode> for CancelMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Cancel => CancelMode::Cancel,
            Mode::Stop => CancelMode::Stop,
            Mode::Terminate => CancelMode::Terminate,
        }
    }
}

#[derive(Args)]
struct Opts {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    namespace: Option<String>,

    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    context: Option<String>,

    /// Why (recorded on every cancelled StageRun).
    #[arg(long, global = true, default_value = "")]
    reason: String,

    /// Seconds the pods get to stop (overrides each StageRun's); 0 kills at once.
    #[arg(long, global = true)]
    grace_period: Option<i64>,

    /// How the StageRuns are stopped: `cancel` (graceful, then forced; then
    /// the cleanup jobs run), `stop` (running jobs finish on their own,
    /// nothing new starts; then cleanup), `terminate` (cancel and skip
    /// cleanup; also ends a run already stopping or cleaning up).
    #[arg(long, global = true, value_enum, default_value_t = Mode::Cancel)]
    mode: Mode,

    /// Wait until the cancel has completed and print each target's outcome.
    #[arg(long, global = true)]
    wait: bool,

    /// How long --wait waits, in seconds.
    #[arg(long, global = true, default_value_t = 300)]
    timeout: u64,
}

/// `a=b,c!=d,e in (f,g)` is beyond a plain parse; accept the equality forms
/// kubectl users type most and leave the rest to matchExpressions.
fn parse_selector(s: &str) -> anyhow::Result<LabelSelector> {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    let mut labels = std::collections::BTreeMap::new();
    let mut exprs = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once("!=") {
            exprs.push(LabelSelectorRequirement {
                key: k.trim().into(),
                operator: "NotIn".into(),
                values: Some(vec![v.trim().into()]),
            });
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            labels.insert(k.trim().to_string(), v.trim().to_string());
        } else if let Some(k) = part.strip_prefix('!') {
            exprs.push(LabelSelectorRequirement {
                key: k.trim().into(),
                operator: "DoesNotExist".into(),
                values: None,
            });
        } else if part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            exprs.push(LabelSelectorRequirement {
                key: part.into(),
                operator: "Exists".into(),
                values: None,
            });
        } else {
            bail!("unsupported selector term {part:?}: use key=value, key!=value, key or !key");
        }
    }
    if labels.is_empty() && exprs.is_empty() {
        bail!("the selector selects nothing");
    }
    Ok(LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        match_expressions: (!exprs.is_empty()).then_some(exprs),
    })
}

fn target(t: &Target) -> anyhow::Result<CancelTarget> {
    let mut out = CancelTarget::default();
    match t {
        Target::Stagerun { name } => out.stage_run = Some(name.clone()),
        Target::Stage { pipeline, stage } => {
            out.stage = Some(StageTarget {
                pipeline: pipeline.clone(),
                stage: stage.clone(),
            })
        }
        Target::Build { pipeline, counter } => {
            out.build = Some(BuildTarget {
                pipeline: pipeline.clone(),
                pipeline_counter: *counter,
            })
        }
        Target::Uid { uids } => out.uids = Some(uids.clone()),
        Target::Selector { selector } => out.selector = Some(parse_selector(selector)?),
    }
    Ok(out)
}

async fn client(context: Option<String>) -> anyhow::Result<(Client, String)> {
    let options = KubeConfigOptions {
        context,
        ..KubeConfigOptions::default()
    };
    let config = match Kubeconfig::read() {
        Ok(kc) => Config::from_custom_kubeconfig(kc, &options).await?,
        Err(_) => Config::infer().await?,
    };
    let namespace = config.default_namespace.clone();
    Ok((Client::try_from(config)?, namespace))
}

/// Who the API server says we are (SelfSubjectReview).
async fn whoami(client: &Client) -> anyhow::Result<String> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("asking the API server who we are (SelfSubjectReview)")?;
    review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .context("the API server did not say who we are")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (client, default_ns) = client(cli.opts.context.clone()).await?;
    let ns = cli.opts.namespace.clone().unwrap_or(default_ns);
    let requested_by = whoami(&client).await?;
    let api: Api<CancelRequest> = Api::namespaced(client, &ns);
    let request = NewCancelRequest {
        api: cancel_operator::request::via::KUBECTL.into(),
        target: target(&cli.target)?,
        reason: cli.opts.reason.clone(),
        requested_by,
        grace_period_seconds: cli.opts.grace_period,
        mode: cli.opts.mode.into(),
    }
    .build(Naming::Generated("kubectl-cancel-".into()));
    let created = api
        .create(&PostParams::default(), &request)
        .await
        .context("creating the CancelRequest")?;
    let name = created.name_any();
    println!("cancelrequest.cancel.dev/{name} created");
    if !cli.opts.wait {
        return Ok(());
    }

    let done = watcher(
        api,
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .try_filter(|r| {
        let phase = r.status.as_ref().and_then(|s| s.phase);
        futures::future::ready(matches!(
            phase,
            Some(RequestPhase::Completed | RequestPhase::Rejected)
        ))
    });
    let mut done = Box::pin(done);
    let finished = tokio::time::timeout(Duration::from_secs(cli.opts.timeout), done.try_next())
        .await
        .with_context(|| format!("timed out after {}s waiting for {name}", cli.opts.timeout))??
        .context("the watch ended early")?;
    let status = finished.status.unwrap_or_default();
    for t in &status.targets {
        println!("stagerun.cancel.dev/{} {:?}", t.name, t.outcome);
    }
    if status.phase == Some(RequestPhase::Rejected) {
        let why = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Complete")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        bail!("rejected: {why}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        let s = parse_selector("team=web, tier!=db,canary,!legacy").unwrap();
        assert_eq!(
            s.match_labels.unwrap().get("team").map(String::as_str),
            Some("web")
        );
        let exprs = s.match_expressions.unwrap();
        let ops: Vec<&str> = exprs.iter().map(|e| e.operator.as_str()).collect();
        assert_eq!(ops, ["NotIn", "Exists", "DoesNotExist"]);
        assert!(parse_selector("").is_err());
        assert!(parse_selector("a in (b)").is_err());
    }
}
