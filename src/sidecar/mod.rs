//! The REST sidecar: the cancel and history endpoints of GoCD, CodeArts,
//! CrafterCMS and Cloud Foundry over StageRuns. Reads come from a watch
//! cache; the only writes are CancelRequests.
//!
//! A request goes `server` (route, read the body, count) → its family's
//! module (`gocd`, `codearts`, `crafter`/`studio`, `cloudfoundry`, `uaa`)
//! → `service` (identify, authorise, cancel) and back to the family, which
//! renders the answer in its API's format.

pub mod aksk;
pub mod auth;
mod body;
mod by_pipeline;
pub(crate) mod cache;
pub(crate) mod cloudfoundry;
pub(crate) mod codearts;
mod config;
pub(crate) mod crafter;
mod flags;
pub(crate) mod gocd;
pub(crate) mod history;
pub(crate) mod http;
mod identity;
mod metrics;
pub(crate) mod render;
pub mod routes;
mod server;
pub(crate) mod service;
pub(crate) mod studio;
pub(crate) mod uaa;

#[cfg(test)]
mod hostile_tests;

pub use config::{ArchiveUrl, Config, Limits};
pub use server::{filter, run, serve};
pub use service::{Service, request_client, start};

/// The OpenAPI document of every route, served at /openapi.json.
pub const OPENAPI: &str = include_str!("../../openapi/openapi.json");
