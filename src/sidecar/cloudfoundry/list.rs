//! Task lists: the query a Cloud Controller accepts on `GET /v3/tasks` and
//! `GET /v3/apps/{guid}/tasks`, the filters it applies, and its pagination
//! object, and how a page merges the cluster's tasks with a window of the
//! archive's. Pure: the handler feeds it tasks and gets a page back.

use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use super::selector::{self, LabelSelector};
use super::{Task, phases_in};
use crate::archive::{TaskFilter, TaskOrder, TaskTime};
use crate::sidecar::history::{archive_window, merged_window};

/// Task states a filter may name.
pub const STATES: [&str; 5] = ["PENDING", "RUNNING", "CANCELING", "SUCCEEDED", "FAILED"];

pub const DEFAULT_PER_PAGE: u32 = 50;
pub const MAX_PER_PAGE: u32 = 5000;

/// The exact forms of `states`, `sequence_ids` and `label_selector` that a
/// list accepts: openapi/openapi.json documents these patterns (a unit test
/// keeps them equal), and a value is checked against them before it is
/// parsed. Items are separated by commas, with spaces around them allowed.
pub mod patterns {
    /// Comma-separated task states; empty items are dropped.
    pub const STATES: &str = "^ *(?:(?:PENDING|RUNNING|CANCELING|SUCCEEDED|FAILED) *)?(?:, *(?:(?:PENDING|RUNNING|CANCELING|SUCCEEDED|FAILED) *)?)*$";
    /// Comma-separated integers of at most 18 digits; empty items are dropped.
    pub const SEQUENCE_IDS: &str = "^ *(?:[+-]?[0-9]{1,18} *)?(?:, *(?:[+-]?[0-9]{1,18} *)?)*$";
    /// A label name, or a value when not empty.
    const NAME: &str = "[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?";
    /// A DNS label of a key's prefix.
    const LABEL: &str = "[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?";

    /// Requirements `key`, `!key`, `key=value` (or `==`), `key!=value`,
    /// `key in (v1,v2)`, `key notin (v1,v2)`, comma-separated. A key is an
    /// optional prefix of one to three DNS labels and `/`, then a name of
    /// at most 63 characters `[A-Za-z0-9._-]`, alphanumeric at both ends; a
    /// value is such a name or empty.
    pub fn label_selector() -> String {
        let key = format!("(?:{LABEL}(?:\\.{LABEL}){{0,2}}/)?{NAME}");
        let value = format!("(?:{NAME})?");
        let set = format!("\\( *{value} *(?:, *{value} *)*\\)");
        let req =
            format!(" *(?:! *{key}|{key}(?: *(?:==|!=|=) *{value}| +(?:in|notin) *{set})?) *");
        format!("^{req}(?:,{req})*$")
    }
}

/// Whether `value` has the form `pattern` describes. `$` also matches before
/// a final newline, as JSON Schema validators written in Python read it.
fn has_form(re: &Regex, value: &str) -> bool {
    re.is_match(value.strip_suffix('\n').unwrap_or(value))
}

static STATES_FORM: LazyLock<Regex> = LazyLock::new(|| Regex::new(patterns::STATES).unwrap());
static SEQUENCE_IDS_FORM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(patterns::SEQUENCE_IDS).unwrap());
static LABEL_SELECTOR_FORM: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&patterns::label_selector()).unwrap());

/// Parameters every task list accepts, in the order hrefs carry them.
const FILTERS: [&str; 5] = ["guids", "names", "states", "sequence_ids", "label_selector"];
const PAGING: [&str; 3] = ["page", "per_page", "order_by"];

/// The sort column; descending when the parameter starts with `-`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderColumn {
    CreatedAt,
    UpdatedAt,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    pub column: OrderColumn,
    pub descending: bool,
}

impl Default for Order {
    fn default() -> Self {
        Order {
            column: OrderColumn::CreatedAt,
            descending: false,
        }
    }
}

/// A validated list query.
#[derive(Debug)]
pub struct ListQuery {
    guids: Option<BTreeSet<String>>,
    names: Option<BTreeSet<String>>,
    states: Option<BTreeSet<&'static str>>,
    sequence_ids: Option<BTreeSet<i64>>,
    label_selector: Option<LabelSelector>,
    pub page: u32,
    pub per_page: u32,
    pub order: Order,
    /// The filters as given (decoded), in href order, for the page links.
    given: Vec<(&'static str, String)>,
    order_given: Option<String>,
}

/// Comma-separated values; empty items are dropped.
fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

fn positive(value: &str) -> Option<u32> {
    value.parse::<u32>().ok().filter(|n| *n > 0)
}

/// Refuses parameters a task list does not take, naming them all.
fn refuse_unknown(pairs: &[(String, String)]) -> Result<(), String> {
    let mut unknown: Vec<&str> = Vec::new();
    for (k, _) in pairs {
        if !FILTERS.contains(&k.as_str())
            && !PAGING.contains(&k.as_str())
            && !unknown.contains(&k.as_str())
        {
            unknown.push(k);
        }
    }
    if unknown.is_empty() {
        return Ok(());
    }
    let valid: Vec<&str> = FILTERS.iter().chain(PAGING.iter()).copied().collect();
    Err(format!(
        "The query parameter is invalid: Unknown query parameter(s): '{}'. Valid parameters are: '{}'",
        unknown.join("', '"),
        valid.join("', '")
    ))
}

// Each parser below adds what is wrong with its value to `errors`, in the
// Cloud Controller's words: each item first, for its message about it, then
// the whole value against its documented form.

fn states(v: &str, errors: &mut Vec<String>) -> BTreeSet<&'static str> {
    let known_before = errors.len();
    let states = list(v)
        .filter_map(|s| match STATES.iter().find(|known| **known == s) {
            Some(known) => Some(*known),
            None => {
                errors.push(format!(
                    "States can only be: '{}' (not '{s}')",
                    STATES.join("', '")
                ));
                None
            }
        })
        .collect();
    if errors.len() == known_before && !has_form(&STATES_FORM, v) {
        errors.push(format!(
            "States can only be: '{}', comma-separated (not '{v}')",
            STATES.join("', '")
        ));
    }
    states
}

fn sequence_ids(v: &str, errors: &mut Vec<String>) -> BTreeSet<i64> {
    let known_before = errors.len();
    let ids = list(v)
        .filter_map(|s| match s.parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                errors.push(format!("Sequence ids must be integers (not '{s}')"));
                None
            }
        })
        .collect();
    if errors.len() == known_before && !has_form(&SEQUENCE_IDS_FORM, v) {
        errors.push(format!(
            "Sequence ids must be integers of at most 18 digits, comma-separated (not '{v}')"
        ));
    }
    ids
}

fn label_selector(v: &str, errors: &mut Vec<String>) -> Option<LabelSelector> {
    match selector::parse(v) {
        Ok(s) if has_form(&LABEL_SELECTOR_FORM, v) => Some(s),
        Ok(_) => {
            errors.push(format!(
                "Invalid label_selector value: '{v}' is not of the documented form"
            ));
            None
        }
        Err(why) => {
            errors.push(format!("Invalid label_selector value: {why}"));
            None
        }
    }
}

fn page(v: &str, errors: &mut Vec<String>) -> u32 {
    positive(v).unwrap_or_else(|| {
        errors.push("Page must be a positive integer".into());
        1
    })
}

fn per_page(v: &str, errors: &mut Vec<String>) -> u32 {
    match positive(v) {
        Some(n) if n <= MAX_PER_PAGE => return n,
        Some(_) => errors.push(format!("Per page must be between 1 and {MAX_PER_PAGE}")),
        None if v.parse::<u64>().is_ok_and(|n| n > 0) => {
            errors.push(format!("Per page must be between 1 and {MAX_PER_PAGE}"));
        }
        None => errors.push("Per page must be a positive integer".into()),
    }
    DEFAULT_PER_PAGE
}

/// `created_at` or `updated_at`, descending with a leading `-`.
fn order(v: &str, errors: &mut Vec<String>) -> Order {
    let (descending, column) = match v.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, v),
    };
    let column = match column {
        "created_at" => OrderColumn::CreatedAt,
        "updated_at" => OrderColumn::UpdatedAt,
        _ => {
            errors.push("Order by can only be: 'created_at', 'updated_at'".into());
            return Order::default();
        }
    };
    Order { column, descending }
}

impl ListQuery {
    /// Validates decoded query pairs (a repeated parameter: the last one
    /// counts). The error is the detail of a `CF-BadQueryParameter`, in
    /// the Cloud Controller's words.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, String> {
        let value_of = |name: &str| -> Option<&str> {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        refuse_unknown(pairs)?;
        let mut errors: Vec<String> = Vec::new();
        let given = FILTERS
            .iter()
            .filter_map(|name| value_of(name).map(|v| (*name, v.to_string())))
            .collect();
        let query = ListQuery {
            guids: value_of("guids").map(|v| list(v).map(String::from).collect()),
            names: value_of("names").map(|v| list(v).map(String::from).collect()),
            states: value_of("states").map(|v| states(v, &mut errors)),
            sequence_ids: value_of("sequence_ids").map(|v| sequence_ids(v, &mut errors)),
            label_selector: value_of("label_selector").and_then(|v| label_selector(v, &mut errors)),
            page: value_of("page").map_or(1, |v| page(v, &mut errors)),
            per_page: value_of("per_page").map_or(DEFAULT_PER_PAGE, |v| per_page(v, &mut errors)),
            order: value_of("order_by").map_or_else(Order::default, |v| order(v, &mut errors)),
            given,
            order_given: value_of("order_by").map(String::from),
        };
        if !errors.is_empty() {
            return Err(format!(
                "The query parameter is invalid: {}",
                errors.join(", ")
            ));
        }
        Ok(query)
    }

    /// True when the task passes every filter.
    pub fn selects(&self, task: &Task) -> bool {
        self.guids.as_ref().is_none_or(|g| g.contains(&task.guid))
            && self.names.as_ref().is_none_or(|n| n.contains(&task.name))
            && self.states.as_ref().is_none_or(|s| s.contains(task.state))
            && self
                .sequence_ids
                .as_ref()
                .is_none_or(|s| s.contains(&task.sequence_id))
            && self
                .label_selector
                .as_ref()
                .is_none_or(|s| s.matches(&task.metadata.labels))
    }

    /// The href of page `page` of this query at `base_path` (absolute).
    fn href(&self, base_path: &str, page: u32) -> Link {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.given {
            q.append_pair(k, v);
        }
        if let Some(o) = &self.order_given {
            q.append_pair("order_by", o);
        }
        q.append_pair("page", &page.to_string());
        q.append_pair("per_page", &self.per_page.to_string());
        Link {
            href: format!("{base_path}?{}", q.finish()),
        }
    }

    /// The list's order: by the time asked for, then sequence id, then
    /// guid (both ascending either way). The archive sorts its rows the
    /// same way (`archive::tasks::order_by`), so that the two merge.
    pub fn compare(&self, a: &Task, b: &Task) -> Ordering {
        let column = self.order.column;
        let by_time = sort_key(a, column).cmp(sort_key(b, column));
        let by_time = if self.order.descending {
            by_time.reverse()
        } else {
            by_time
        };
        by_time
            .then_with(|| a.sequence_id.cmp(&b.sequence_id))
            .then_with(|| a.guid.cmp(&b.guid))
    }

    /// The tasks of `tasks` the query selects, in its order.
    pub fn selected(&self, tasks: Vec<Task>) -> Vec<Task> {
        let mut tasks: Vec<Task> = tasks.into_iter().filter(|t| self.selects(t)).collect();
        tasks.sort_by(|a, b| self.compare(a, b));
        tasks
    }

    /// How many tasks come before the page.
    fn offset(&self) -> usize {
        let offset = u64::from(self.page - 1) * u64::from(self.per_page);
        usize::try_from(offset).unwrap_or(usize::MAX)
    }

    /// Which of the archive's selected tasks (offset and count, in the
    /// list's order) the page can hold, when `in_cluster` selected tasks
    /// come from the cluster.
    pub fn archive_window(&self, in_cluster: usize) -> (usize, usize) {
        archive_window(self.offset(), self.per_page as usize, in_cluster)
    }

    /// The archive's side of the query: its filters for the archived runs
    /// of `namespaces` (and of `pipeline`, an app), without the uids
    /// `excluding` that the cluster has.
    pub fn archive_filter(
        &self,
        namespaces: Vec<String>,
        pipeline: Option<&str>,
        excluding: Vec<String>,
    ) -> TaskFilter {
        TaskFilter {
            namespaces,
            pipeline: pipeline.map(String::from),
            guids: self.guids.as_ref().map(|g| g.iter().cloned().collect()),
            names: self.names.as_ref().map(|n| n.iter().cloned().collect()),
            phases: self.states.as_ref().map(phases_in),
            sequence_ids: self
                .sequence_ids
                .as_ref()
                .map(|s| s.iter().copied().collect()),
            labels: self
                .label_selector
                .as_ref()
                .map(LabelSelector::requirements)
                .unwrap_or_default(),
            excluding,
        }
    }

    /// The archive's order for the query's.
    pub fn archive_order(&self) -> TaskOrder {
        TaskOrder {
            time: match self.order.column {
                OrderColumn::CreatedAt => TaskTime::CreatedAt,
                OrderColumn::UpdatedAt => TaskTime::UpdatedAt,
            },
            descending: self.order.descending,
        }
    }

    /// Filters, sorts and cuts one page out of `tasks` (all there are).
    /// `base_path` is the absolute URL of the list (without query).
    #[cfg(test)]
    pub fn page(&self, tasks: Vec<Task>, base_path: &str) -> TaskList {
        self.merged_page(self.selected(tasks), ArchivedWindow::default(), base_path)
    }

    /// The page of the tasks the query selects in the cluster (`cluster`,
    /// as [`Self::selected`] gives them) and in the archive (`archived`, the
    /// window [`Self::archive_window`] names).
    ///
    /// Why the cut is right: merge the two into one list `L`. An archived
    /// task before the window lies before the page, and so does a cluster
    /// task that sorts before the window's first; every other task at index
    /// `i` of `L` has `window.start + i` tasks before it in the whole list.
    /// So the page is `L[offset - window.start ..]`.
    pub fn merged_page(
        &self,
        cluster: Vec<Task>,
        archived: ArchivedWindow,
        base_path: &str,
    ) -> TaskList {
        let total = cluster.len() as u64 + archived.total;
        let per_page = u64::from(self.per_page);
        let total_pages = total.div_ceil(per_page);
        let page = u64::from(self.page);
        let resources = merged_window(
            cluster,
            archived.tasks,
            archived.start,
            self.offset(),
            self.per_page as usize,
            |a, b| self.compare(a, b),
        );
        let pagination = Pagination {
            total_results: total,
            total_pages,
            first: self.href(base_path, 1),
            last: self.href(base_path, total_pages.clamp(1, u64::from(u32::MAX)) as u32),
            next: (page < total_pages).then(|| self.href(base_path, self.page + 1)),
            previous: (page > 1).then(|| self.href(base_path, self.page - 1)),
        };
        TaskList {
            pagination,
            resources,
        }
    }
}

/// The archive's part of a list: its selected tasks from `start` (in the
/// list's order), as many as the page may need, and how many it selects in
/// all.
#[derive(Debug, Default)]
pub struct ArchivedWindow {
    pub tasks: Vec<Task>,
    pub start: usize,
    pub total: u64,
}

/// RFC 3339 UTC times in one format sort as the times do.
fn sort_key(task: &Task, column: OrderColumn) -> &str {
    match column {
        OrderColumn::CreatedAt => &task.created_at,
        OrderColumn::UpdatedAt => &task.updated_at,
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Link {
    pub href: String,
}

/// The Cloud Controller's pagination object.
#[derive(Serialize, Debug, PartialEq)]
pub struct Pagination {
    pub total_results: u64,
    pub total_pages: u64,
    pub first: Link,
    pub last: Link,
    pub next: Option<Link>,
    pub previous: Option<Link>,
}

#[derive(Serialize, Debug, PartialEq)]
pub struct TaskList {
    pub pagination: Pagination,
    pub resources: Vec<Task>,
}

#[cfg(test)]
mod tests {
    use super::super::{Links, Metadata, TaskResult};
    use super::*;

    #[test]
    fn the_document_gives_the_patterns_the_lists_check() {
        let doc: serde_json::Value = serde_json::from_str(crate::sidecar::OPENAPI).unwrap();
        for path in ["/v3/tasks", "/v3/apps/{app_guid}/tasks"] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
            let pattern = |name: &str| {
                params.iter().find(|p| p["name"] == name).unwrap()["schema"]["pattern"]
                    .as_str()
                    .unwrap()
                    .to_string()
            };
            assert_eq!(pattern("states"), patterns::STATES, "{path}");
            assert_eq!(pattern("sequence_ids"), patterns::SEQUENCE_IDS, "{path}");
            assert_eq!(
                pattern("label_selector"),
                patterns::label_selector(),
                "{path}"
            );
        }
    }

    #[test]
    fn values_of_the_documented_forms_are_accepted_and_others_refused() {
        for q in [
            "states=",
            "states=RUNNING,,FAILED",
            "states= RUNNING , FAILED",
            "sequence_ids=1,+2,-3,",
            "label_selector=a",
            "label_selector=!a",
            "label_selector=a=b,c!=d,e==",
            "label_selector=example.com/a in (b, c),d notin ()",
            "label_selector=a%0A",
        ] {
            query(q);
        }
        for q in [
            "states=RUNNING\tFAILED",
            "sequence_ids=1234567890123456789",
            "label_selector=%01",
            "label_selector=a,",
            "label_selector=a in",
            "label_selector=a.b.c.d/e",
            "label_selector=%E2%80%83a",
        ] {
            refused(q);
        }
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn query(q: &str) -> ListQuery {
        ListQuery::parse(&pairs(q)).unwrap_or_else(|e| panic!("{q}: {e}"))
    }

    fn refused(q: &str) -> String {
        match ListQuery::parse(&pairs(q)) {
            Ok(_) => panic!("{q} was accepted"),
            Err(e) => e,
        }
    }

    fn task(
        guid: &str,
        seq: i64,
        state: &'static str,
        created: &str,
        labels: &[(&str, &str)],
    ) -> Task {
        let link = |h: &str| super::super::Link {
            href: h.to_string(),
            method: None,
        };
        Task {
            guid: guid.into(),
            sequence_id: seq,
            name: format!("run-{seq}"),
            command: String::new(),
            state,
            memory_in_mb: 0,
            disk_in_mb: 0,
            droplet_guid: String::new(),
            result: TaskResult {
                failure_reason: None,
            },
            metadata: Metadata {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                annotations: Default::default(),
            },
            created_at: created.into(),
            updated_at: format!("2026-02-0{}T00:00:00Z", 10 - seq),
            links: Links {
                self_: link("s"),
                cancel: link("c"),
            },
        }
    }

    fn tasks() -> Vec<Task> {
        vec![
            task(
                "c",
                3,
                "RUNNING",
                "2026-01-03T00:00:00Z",
                &[("env", "prod")],
            ),
            task(
                "a",
                1,
                "SUCCEEDED",
                "2026-01-01T00:00:00Z",
                &[("env", "dev")],
            ),
            task("b", 2, "FAILED", "2026-01-02T00:00:00Z", &[]),
            task(
                "d",
                4,
                "RUNNING",
                "2026-01-04T00:00:00Z",
                &[("env", "prod"), ("team", "x")],
            ),
        ]
    }

    fn guids(list: &TaskList) -> Vec<&str> {
        list.resources.iter().map(|t| t.guid.as_str()).collect()
    }

    const BASE: &str = "http://h/v3/tasks";

    #[test]
    fn defaults_list_everything_oldest_first() {
        let q = query("");
        assert_eq!((q.page, q.per_page, q.order), (1, 50, Order::default()));
        let l = q.page(tasks(), BASE);
        assert_eq!(guids(&l), ["a", "b", "c", "d"]);
        assert_eq!(
            l.pagination,
            Pagination {
                total_results: 4,
                total_pages: 1,
                first: Link {
                    href: format!("{BASE}?page=1&per_page=50")
                },
                last: Link {
                    href: format!("{BASE}?page=1&per_page=50")
                },
                next: None,
                previous: None,
            }
        );
    }

    #[test]
    fn each_filter_selects() {
        for (q, want) in [
            ("guids=b,d", vec!["b", "d"]),
            ("guids=", vec![]),
            ("names=run-1", vec!["a"]),
            ("states=RUNNING", vec!["c", "d"]),
            ("states=FAILED,SUCCEEDED", vec!["a", "b"]),
            ("sequence_ids=2,4", vec!["b", "d"]),
            ("label_selector=env%3Dprod", vec!["c", "d"]),
            ("label_selector=env%3Dprod,team", vec!["d"]),
            ("label_selector=!env", vec!["b"]),
            ("label_selector=env+notin+(prod)", vec!["a", "b"]),
            ("states=RUNNING&sequence_ids=3", vec!["c"]),
            ("order_by=-created_at", vec!["d", "c", "b", "a"]),
            ("order_by=updated_at", vec!["d", "c", "b", "a"]),
            ("order_by=-updated_at", vec!["a", "b", "c", "d"]),
            ("order_by=created_at", vec!["a", "b", "c", "d"]),
        ] {
            assert_eq!(guids(&query(q).page(tasks(), BASE)), want, "{q}");
        }
    }

    #[test]
    fn pages_link_to_each_other_with_the_same_filters() {
        let q = query(
            "states=RUNNING,SUCCEEDED,FAILED&label_selector=env+in+(prod,dev)&per_page=1&page=2&order_by=-created_at",
        );
        let l = q.page(tasks(), BASE);
        assert_eq!(guids(&l), ["c"]);
        let filters = "states=RUNNING%2CSUCCEEDED%2CFAILED&label_selector=env+in+%28prod%2Cdev%29&order_by=-created_at";
        let href = |p: u32| Link {
            href: format!("{BASE}?{filters}&page={p}&per_page=1"),
        };
        assert_eq!(
            l.pagination,
            Pagination {
                total_results: 3,
                total_pages: 3,
                first: href(1),
                last: href(3),
                next: Some(href(3)),
                previous: Some(href(1)),
            }
        );
        // The links parse back into the same query.
        let next = &l.pagination.next.as_ref().unwrap().href;
        let again = query(next.split_once('?').unwrap().1);
        assert_eq!(guids(&again.page(tasks(), BASE)), ["a"]);
        assert!(again.page(tasks(), BASE).pagination.next.is_none());
    }

    #[test]
    fn an_empty_or_overrun_list_still_has_a_first_and_last_page() {
        let l = query("states=PENDING").page(tasks(), BASE);
        assert_eq!(l.pagination.total_results, 0);
        assert_eq!(l.pagination.total_pages, 0);
        assert_eq!(
            l.pagination.last.href,
            format!("{BASE}?states=PENDING&page=1&per_page=50")
        );
        assert!(l.pagination.next.is_none() && l.pagination.previous.is_none());
        let l = query("page=9&per_page=2").page(tasks(), BASE);
        assert!(l.resources.is_empty());
        assert_eq!(l.pagination.total_pages, 2);
        assert!(l.pagination.next.is_none());
        assert_eq!(
            l.pagination.previous.unwrap().href,
            format!("{BASE}?page=8&per_page=2")
        );
    }

    #[test]
    fn bad_values_are_refused_in_the_cloud_controllers_words() {
        for (q, detail) in [
            ("per_page=0", "Per page must be a positive integer"),
            ("per_page=-1", "Per page must be a positive integer"),
            ("per_page=x", "Per page must be a positive integer"),
            ("per_page=5001", "Per page must be between 1 and 5000"),
            (
                "per_page=99999999999",
                "Per page must be between 1 and 5000",
            ),
            ("page=0", "Page must be a positive integer"),
            ("page=1.5", "Page must be a positive integer"),
            (
                "order_by=name",
                "Order by can only be: 'created_at', 'updated_at'",
            ),
            (
                "order_by=+created_at",
                "Order by can only be: 'created_at', 'updated_at'",
            ),
            (
                "sequence_ids=1,x",
                "Sequence ids must be integers (not 'x')",
            ),
            (
                "states=RUNNING,running",
                "States can only be: 'PENDING', 'RUNNING', 'CANCELING', 'SUCCEEDED', 'FAILED' (not 'running')",
            ),
            (
                "label_selector=a+in+(b",
                "Invalid label_selector value: unbalanced parentheses",
            ),
        ] {
            assert_eq!(
                refused(q),
                format!("The query parameter is invalid: {detail}"),
                "{q}"
            );
        }
        assert_eq!(
            refused("page=0&per_page=0"),
            "The query parameter is invalid: Page must be a positive integer, Per page must be a positive integer"
        );
        assert_eq!(
            refused("x=1&states=nope&y=2&x=3"),
            "The query parameter is invalid: Unknown query parameter(s): 'x', 'y'. Valid parameters are: 'guids', 'names', 'states', 'sequence_ids', 'label_selector', 'page', 'per_page', 'order_by'"
        );
    }

    /// Fifteen tasks with ties on both times, states and labels mixed.
    fn many() -> Vec<Task> {
        (0..15)
            .map(|i: i64| {
                let labels: &[(&str, &str)] = match i % 3 {
                    0 => &[("env", "prod")],
                    1 => &[("env", "dev"), ("team", "x")],
                    _ => &[],
                };
                let mut t = task(
                    &format!("g{:02}", (i * 7) % 15),
                    i % 4 + 1,
                    ["RUNNING", "FAILED", "SUCCEEDED"][(i % 3) as usize],
                    &format!("2026-01-0{}T00:00:00Z", 1 + i % 3),
                    labels,
                );
                t.updated_at = format!("2026-02-0{}T00:00:00Z", 1 + (i * 5) % 4);
                t
            })
            .collect()
    }

    /// Every way of splitting the tasks between cluster and archive, in
    /// every order, with filters, every page: the merged page is the page
    /// of the whole. The archive's window is cut from its selected tasks
    /// in the list's order, as its query does.
    #[test]
    fn pages_of_cluster_and_archive_are_pages_of_the_whole() {
        let splits: [fn(usize) -> bool; 5] = [
            |_| false,
            |_| true,
            |i| i < 4,
            |i| i % 3 == 0,
            |i| i % 2 == 1,
        ];
        for filters in [
            "",
            "order_by=-created_at",
            "order_by=updated_at&states=RUNNING,FAILED",
            "order_by=-updated_at&label_selector=env",
            "label_selector=team+notin+(y)&sequence_ids=1,2,4",
        ] {
            for per_page in [1, 2, 4, 50] {
                for page in 1..=17 {
                    let q = query(&format!("{filters}&page={page}&per_page={per_page}"));
                    let whole = q.page(many(), BASE);
                    for (n, in_cluster) in splits.iter().enumerate() {
                        let (cluster, archived): (Vec<_>, Vec<_>) = many()
                            .into_iter()
                            .enumerate()
                            .partition(|(i, _)| in_cluster(*i));
                        let cluster = q.selected(cluster.into_iter().map(|(_, t)| t).collect());
                        let archived = q.selected(archived.into_iter().map(|(_, t)| t).collect());
                        let (start, count) = q.archive_window(cluster.len());
                        let total = archived.len() as u64;
                        let window = ArchivedWindow {
                            tasks: archived.into_iter().skip(start).take(count).collect(),
                            start,
                            total,
                        };
                        assert_eq!(
                            q.merged_page(cluster, window, BASE),
                            whole,
                            "{filters}, page {page} of {per_page}, split {n}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_archive_is_asked_what_the_query_selects_and_its_order() {
        let q = query(
            "guids=b,a&names=x&states=RUNNING,FAILED&sequence_ids=3,-1&label_selector=env%3Dprod&order_by=-updated_at",
        );
        let f = q.archive_filter(vec!["ns".into()], Some("app"), vec!["u".into()]);
        assert_eq!(f.namespaces, ["ns"]);
        assert_eq!(f.pipeline.as_deref(), Some("app"));
        assert_eq!(f.guids, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(f.names, Some(vec!["x".to_string()]));
        assert_eq!(
            f.phases,
            Some(vec!["Running".to_string(), "Failed".to_string()])
        );
        assert_eq!(f.sequence_ids, Some(vec![-1, 3]));
        assert_eq!(
            f.labels,
            [kube::core::Expression::Equal("env".into(), "prod".into())]
        );
        assert_eq!(f.excluding, ["u"]);
        assert_eq!(
            q.archive_order(),
            TaskOrder {
                time: TaskTime::UpdatedAt,
                descending: true
            }
        );
        let all = query("").archive_filter(Vec::new(), None, Vec::new());
        assert!(all.guids.is_none() && all.phases.is_none() && all.labels.is_empty());
        // An empty filter selects nothing there too.
        assert_eq!(
            query("states=")
                .archive_filter(Vec::new(), None, Vec::new())
                .phases,
            Some(Vec::new())
        );
        // The window: what comes before the page, less the cluster's.
        assert_eq!(query("page=3&per_page=10").archive_window(4), (16, 14));
        assert_eq!(query("page=1&per_page=10").archive_window(4), (0, 10));
    }

    #[test]
    fn a_repeated_parameter_counts_once_the_last() {
        let q = query("per_page=5&per_page=7&states=FAILED&states=RUNNING");
        assert_eq!(q.per_page, 7);
        assert_eq!(guids(&q.page(tasks(), BASE)), ["c", "d"]);
        assert_eq!(
            q.page(tasks(), BASE).pagination.first.href,
            format!("{BASE}?states=RUNNING&page=1&per_page=7")
        );
    }
}
