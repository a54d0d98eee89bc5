//! Stable numeric ids for stage and job runs (GoCD's `id` fields): two
//! counters kept in a ConfigMap, advanced with optimistic concurrency so that
//! concurrent allocators never hand out the same id.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::{Error, Result, labels};

/// Ids stay exact in JSON consumers that use doubles.
pub const MAX_ID: i64 = 1 << 53;

const STAGE_KEY: &str = "stage";
const JOB_KEY: &str = "job";

/// Allocates ids from the ConfigMap `name`.
#[derive(Clone)]
pub struct IdAllocator {
    api: Api<ConfigMap>,
    name: String,
}

impl IdAllocator {
    pub fn new(api: Api<ConfigMap>, name: impl Into<String>) -> Self {
        IdAllocator {
            api,
            name: name.into(),
        }
    }

    /// One stage id and `jobs` job ids.
    pub async fn allocate(&self, jobs: usize) -> Result<(i64, Vec<i64>)> {
        loop {
            let current = match self.api.get_opt(&self.name).await? {
                Some(cm) => cm,
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(self.name.clone()),
                            labels: Some(BTreeMap::from([(
                                labels::MANAGED_BY.into(),
                                labels::MANAGER.into(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([
                            (STAGE_KEY.into(), "0".into()),
                            (JOB_KEY.into(), "0".into()),
                        ])),
                        ..ConfigMap::default()
                    };
                    match self.api.create(&PostParams::default(), &cm).await {
                        Ok(_) => continue,
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            };
            let read = |key: &str| -> i64 {
                current
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0)
            };
            let (stage, job) = (read(STAGE_KEY), read(JOB_KEY));
            let next_stage = stage + 1;
            let next_job = job + jobs as i64;
            if next_stage > MAX_ID || next_job > MAX_ID {
                return Err(Error::IdsExhausted);
            }
            let mut updated = current.clone();
            let data = updated.data.get_or_insert_with(BTreeMap::new);
            data.insert(STAGE_KEY.into(), next_stage.to_string());
            data.insert(JOB_KEY.into(), next_job.to_string());
            // `replace` carries the resourceVersion read above: a concurrent
            // allocation makes it fail with 409, and we read again.
            match self
                .api
                .replace(&self.name, &PostParams::default(), &updated)
                .await
            {
                Ok(_) => return Ok((next_stage, ((job + 1)..=next_job).collect())),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
