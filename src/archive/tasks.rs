//! Cloud Foundry task lists from the archive: the archived runs that a
//! list's filters select, in its order, one window of them at a time, and
//! how many there are in all. Filtering, ordering and the window happen in
//! the database, so that a list costs the page, not the archive's size.
//!
//! The query is built from static fragments and bound values only
//! (`push_bind`): no value of the caller's is ever written into its text.

use kube::core::Expression;
use serde_json::{Value, json};
use sqlx::{Postgres, QueryBuilder};

use super::{Archive, Page, Timed, decoded};
use crate::Result;

/// The time a task list is ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskTime {
    CreatedAt,
    UpdatedAt,
}

/// A task list's order: by `time`, oldest first unless `descending`; ties
/// broken by sequence id, then guid, both ascending whatever the direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskOrder {
    pub time: TaskTime,
    pub descending: bool,
}

/// Which archived runs a task list shows. `None`: no such filter; an empty
/// list selects nothing, as in the Cloud Controller.
#[derive(Debug, Clone)]
pub struct TaskFilter {
    /// The namespaces the caller may read (no row outside them, none at
    /// all when empty).
    pub namespaces: Vec<String>,
    /// An app's tasks: its pipeline.
    pub pipeline: Option<String>,
    pub guids: Option<Vec<String>>,
    pub names: Option<Vec<String>>,
    /// Phases as archived (`Succeeded`), for the task states asked for.
    pub phases: Option<Vec<String>>,
    pub sequence_ids: Option<Vec<i64>>,
    /// Label requirements, all of which must hold.
    pub labels: Vec<Expression>,
    /// Runs the list takes from the cluster (a run is briefly in both).
    pub excluding: Vec<String>,
}

impl TaskFilter {
    /// True when only the namespaces and the app select: what the archive's
    /// per-stage counts can total.
    fn counts_by_stage(&self) -> bool {
        self.guids.is_none()
            && self.names.is_none()
            && self.phases.is_none()
            && self.sequence_ids.is_none()
            && self.labels.is_empty()
    }

    /// When only the namespaces, the app and one label requirement that
    /// names values (`key=value`, `key in (…)`) select: that label's key
    /// and values, what the archive's per-label counts can total.
    fn counts_by_label(&self) -> Option<(&str, Vec<String>)> {
        if self.guids.is_some()
            || self.names.is_some()
            || self.phases.is_some()
            || self.sequence_ids.is_some()
        {
            return None;
        }
        match self.labels.as_slice() {
            [Expression::Equal(key, value)] => Some((key, vec![value.clone()])),
            [Expression::In(key, values)] => Some((key, values.iter().cloned().collect())),
            _ => None,
        }
    }
}

/// The SQL order of [`TaskOrder`], which must be the order in which the
/// REST API sorts tasks (`sidecar::cloudfoundry::list::ListQuery::compare`):
/// the time (stored to the second, as tasks show it), the sequence id, then
/// the guid byte-wise (`COLLATE "C"`). A time that is missing sorts as the
/// latest, as the REST API shows a task without one (PostgreSQL's default:
/// `NULLS LAST` ascending, `NULLS FIRST` descending).
fn order_by(order: TaskOrder) -> &'static str {
    match (order.time, order.descending) {
        (TaskTime::CreatedAt, false) => {
            " ORDER BY created_at ASC, pipeline_counter ASC, uid COLLATE \"C\" ASC"
        }
        (TaskTime::CreatedAt, true) => {
            " ORDER BY created_at DESC, pipeline_counter ASC, uid COLLATE \"C\" ASC"
        }
        (TaskTime::UpdatedAt, false) => {
            " ORDER BY updated_at ASC, pipeline_counter ASC, uid COLLATE \"C\" ASC"
        }
        (TaskTime::UpdatedAt, true) => {
            " ORDER BY updated_at DESC, pipeline_counter ASC, uid COLLATE \"C\" ASC"
        }
    }
}

/// One test on the `labels` column.
#[derive(Debug, Clone, PartialEq)]
enum LabelTest {
    /// `labels @> {"key": "value"}`: the label is there with that value
    /// (served by the column's GIN index).
    Contains(Value),
    /// `labels ? key`: the label is there.
    Has(String),
}

/// A label requirement as SQL: one of `any_of` holds (none: false), or,
/// `negated`, none does.
#[derive(Debug, Clone, PartialEq)]
struct LabelCondition {
    negated: bool,
    any_of: Vec<LabelTest>,
}

/// Label requirements as conditions on the `labels` column, with the
/// meaning Kubernetes gives them: `!=` and `notin` hold where the label is
/// missing, `in` and `=` only where it is present.
fn label_conditions(requirements: &[Expression]) -> Vec<LabelCondition> {
    let contains = |k: &str, v: &str| LabelTest::Contains(json!({ k: v }));
    requirements
        .iter()
        .map(|r| {
            let (negated, any_of) = match r {
                Expression::Equal(k, v) => (false, vec![contains(k, v)]),
                Expression::NotEqual(k, v) => (true, vec![contains(k, v)]),
                Expression::In(k, vs) => (false, vs.iter().map(|v| contains(k, v)).collect()),
                Expression::NotIn(k, vs) => (true, vs.iter().map(|v| contains(k, v)).collect()),
                Expression::Exists(k) => (false, vec![LabelTest::Has(k.clone())]),
                Expression::DoesNotExist(k) => (true, vec![LabelTest::Has(k.clone())]),
            };
            LabelCondition { negated, any_of }
        })
        .collect()
}

fn push_label_condition(qb: &mut QueryBuilder<Postgres>, condition: &LabelCondition) {
    qb.push(if condition.negated {
        " AND NOT ("
    } else {
        " AND ("
    });
    if condition.any_of.is_empty() {
        qb.push("FALSE");
    }
    for (i, test) in condition.any_of.iter().enumerate() {
        if i > 0 {
            qb.push(" OR ");
        }
        match test {
            LabelTest::Contains(pair) => qb.push("labels @> ").push_bind(pair.clone()),
            LabelTest::Has(key) => qb.push("labels ? ").push_bind(key.clone()),
        };
    }
    qb.push(")");
}

/// `FROM … WHERE …` of the runs `filter` selects.
fn push_from_where(qb: &mut QueryBuilder<Postgres>, filter: &TaskFilter) {
    qb.push(" FROM stage_runs WHERE namespace = ANY(")
        .push_bind(filter.namespaces.clone())
        .push(") AND NOT (uid = ANY(")
        .push_bind(filter.excluding.clone())
        .push("))");
    if let Some(pipeline) = &filter.pipeline {
        qb.push(" AND pipeline = ").push_bind(pipeline.clone());
    }
    if let Some(guids) = &filter.guids {
        qb.push(" AND uid = ANY(")
            .push_bind(guids.clone())
            .push(")");
    }
    if let Some(names) = &filter.names {
        qb.push(" AND name = ANY(")
            .push_bind(names.clone())
            .push(")");
    }
    if let Some(phases) = &filter.phases {
        qb.push(" AND phase = ANY(")
            .push_bind(phases.clone())
            .push(")");
    }
    if let Some(ids) = &filter.sequence_ids {
        qb.push(" AND pipeline_counter = ANY(")
            .push_bind(ids.clone())
            .push(")");
    }
    for condition in label_conditions(&filter.labels) {
        push_label_condition(qb, &condition);
    }
}

/// The query counting the runs `filter` selects.
fn count_query(filter: &TaskFilter) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("SELECT COUNT(*)");
    push_from_where(&mut qb, filter);
    qb
}

/// The query reading `limit` of the runs `filter` selects, from `offset`
/// in `order`.
fn window_query(
    filter: &TaskFilter,
    order: TaskOrder,
    offset: i64,
    limit: i64,
) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new("SELECT object");
    push_from_where(&mut qb, filter);
    qb.push(order_by(order))
        .push(" LIMIT ")
        .push_bind(limit.max(0))
        .push(" OFFSET ")
        .push_bind(offset.max(0));
    qb
}

impl Archive {
    /// How many archived runs of `filter`'s namespaces (and app) carry label
    /// `key` with one of `values`, less those `filter` leaves out: the
    /// per-label counts (`stage_run_label_counts`, kept by the archive's
    /// inserts), as [`Archive::counted`] totals a stage's.
    async fn counted_by_label(
        &self,
        filter: &TaskFilter,
        key: &str,
        values: &[String],
    ) -> Result<i64> {
        sqlx::query_scalar(
            "SELECT (SELECT COALESCE(SUM(runs), 0)::bigint FROM stage_run_label_counts \
               WHERE namespace = ANY($1) AND key = $3 AND value = ANY($4) \
               AND ($2::text IS NULL OR pipeline = $2)) \
             - (SELECT COUNT(*) FROM stage_runs WHERE uid = ANY($5) AND namespace = ANY($1) \
               AND ($2::text IS NULL OR pipeline = $2) AND labels ->> $3 = ANY($4))",
        )
        .bind(&filter.namespaces)
        .bind(filter.pipeline.as_deref())
        .bind(key)
        .bind(values)
        .bind(&filter.excluding)
        .fetch_one(&self.pool)
        .timed(&self.metrics, "count archived tasks by label")
        .await
    }

    /// The namespaces with archived runs (of `pipeline`, when given): those
    /// whose permissions a task list must ask for. A loose index scan, as
    /// [`Archive::stage_namespaces`]: its cost follows the namespaces.
    pub async fn task_namespaces(&self, pipeline: Option<&str>) -> Result<Vec<String>> {
        self.namespaces_with(pipeline, None).await
    }

    /// The archived runs `filter` selects, in `order`, `limit` from
    /// `offset`, and how many it selects in all.
    pub async fn tasks(
        &self,
        filter: &TaskFilter,
        order: TaskOrder,
        offset: i64,
        limit: i64,
    ) -> Result<Page> {
        self.migrate().await?;
        if filter.namespaces.is_empty() {
            return Ok(Page::default());
        }
        let filter = &TaskFilter {
            excluding: self.held(&filter.excluding).await?,
            ..filter.clone()
        };
        // Only by namespace and app: the stages' counts; by one label too:
        // the labels' counts. Either costs a few rows, whatever the total.
        let total: i64 = if filter.counts_by_stage() {
            let pipeline = filter.pipeline.as_deref();
            (self.counted(&filter.namespaces, pipeline, None, &filter.excluding)).await?
        } else if let Some((key, values)) = filter.counts_by_label() {
            self.counted_by_label(filter, key, &values).await?
        } else {
            count_query(filter)
                .build_query_scalar()
                .fetch_one(&self.pool)
                .timed(&self.metrics, "count archived tasks")
                .await?
        };
        let objects: Vec<Value> = window_query(filter, order, offset, limit)
            .build_query_scalar()
            .fetch_all(&self.pool)
            .timed(&self.metrics, "read a page of archived tasks")
            .await?;
        let runs = objects.into_iter().map(decoded).collect::<Result<_>>()?;
        Ok(Page { runs, total })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::{Selector, SelectorExt};

    use super::*;

    fn filter() -> TaskFilter {
        TaskFilter {
            namespaces: vec!["a".into()],
            pipeline: None,
            guids: None,
            names: None,
            phases: None,
            sequence_ids: None,
            labels: Vec::new(),
            excluding: Vec::new(),
        }
    }

    fn selector(text: &str) -> Vec<Expression> {
        crate::sidecar::cloudfoundry::selector::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .requirements()
    }

    /// What a condition means, as PostgreSQL evaluates `@>` (of a one-label
    /// object) and `?` on a labels object.
    fn holds(condition: &LabelCondition, labels: &BTreeMap<String, String>) -> bool {
        let any = condition.any_of.iter().any(|test| match test {
            LabelTest::Contains(pair) => pair
                .as_object()
                .expect("an object")
                .iter()
                .all(|(k, v)| labels.get(k).map(|l| json!(l)) == Some(v.clone())),
            LabelTest::Has(key) => labels.contains_key(key),
        });
        any != condition.negated
    }

    #[test]
    fn label_conditions_mean_what_kubernetes_selectors_mean() {
        let label_sets: Vec<BTreeMap<String, String>> = [
            vec![],
            vec![("env", "prod")],
            vec![("env", "dev"), ("team", "a")],
            vec![("env", ""), ("team", "b"), ("example.com/tier", "web")],
            vec![("canary", "yes"), ("legacy", "1")],
        ]
        .into_iter()
        .map(|pairs| {
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .collect();
        for text in [
            "env=prod",
            "env==prod",
            "env=",
            "env!=prod",
            "env!=",
            "env in (prod,dev)",
            "env in ()",
            "env notin (prod)",
            "team notin (a,b)",
            "env",
            "!env",
            "example.com/tier=web",
            "env=prod,team",
            "env!=dev,!legacy,team in (a,b)",
            "canary,legacy notin (2)",
        ] {
            let requirements = selector(text);
            let kube: Selector = requirements.iter().cloned().collect();
            let conditions = label_conditions(&requirements);
            for labels in &label_sets {
                let sql = conditions.iter().all(|c| holds(c, labels));
                assert_eq!(sql, kube.matches(labels), "{text} on {labels:?}");
            }
        }
    }

    #[test]
    fn label_values_are_bound_never_written_into_the_query() {
        let conditions = label_conditions(&selector("env in (prod,dev),!legacy,tier!=web"));
        assert_eq!(
            conditions,
            [
                LabelCondition {
                    negated: false,
                    any_of: vec![
                        LabelTest::Contains(json!({"env": "dev"})),
                        LabelTest::Contains(json!({"env": "prod"}))
                    ]
                },
                LabelCondition {
                    negated: true,
                    any_of: vec![LabelTest::Has("legacy".into())]
                },
                LabelCondition {
                    negated: true,
                    any_of: vec![LabelTest::Contains(json!({"tier": "web"}))]
                },
            ]
        );
        let f = TaskFilter {
            labels: selector("env in (prod,dev),!legacy,tier!=web"),
            ..filter()
        };
        let sql = count_query(&f).into_string();
        assert_eq!(
            sql,
            "SELECT COUNT(*) FROM stage_runs WHERE namespace = ANY($1) AND NOT (uid = ANY($2)) \
             AND (labels @> $3 OR labels @> $4) AND NOT (labels ? $5) AND NOT (labels @> $6)"
        );
        for word in ["env", "prod", "legacy", "tier", "web"] {
            assert!(!sql.contains(word), "{word} in {sql}");
        }
        // An empty set selects nothing; its negation everything.
        let none = LabelCondition {
            negated: false,
            any_of: Vec::new(),
        };
        let mut qb = QueryBuilder::new("");
        push_label_condition(&mut qb, &none);
        assert_eq!(qb.into_string(), " AND (FALSE)");
        assert!(!holds(&none, &BTreeMap::new()));
    }

    #[test]
    fn every_filter_is_a_bound_condition_and_the_window_follows_the_order() {
        let f = TaskFilter {
            pipeline: Some("app".into()),
            guids: Some(vec!["g".into()]),
            names: Some(vec!["n".into()]),
            phases: Some(vec!["Failed".into()]),
            sequence_ids: Some(vec![7]),
            labels: selector("env"),
            ..filter()
        };
        let order = TaskOrder {
            time: TaskTime::UpdatedAt,
            descending: true,
        };
        assert_eq!(
            window_query(&f, order, 10, 5).into_string(),
            "SELECT object FROM stage_runs WHERE namespace = ANY($1) AND NOT (uid = ANY($2)) \
             AND pipeline = $3 AND uid = ANY($4) AND name = ANY($5) AND phase = ANY($6) \
             AND pipeline_counter = ANY($7) AND (labels ? $8) \
             ORDER BY updated_at DESC, pipeline_counter ASC, uid COLLATE \"C\" ASC \
             LIMIT $9 OFFSET $10"
        );
        assert_eq!(
            count_query(&filter()).into_string(),
            "SELECT COUNT(*) FROM stage_runs WHERE namespace = ANY($1) AND NOT (uid = ANY($2))"
        );
    }
}
