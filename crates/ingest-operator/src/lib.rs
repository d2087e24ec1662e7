//! The IngestJob controller. Reconcile is a pipeline of small steps, one module each:
//! [`observe`] (I/O) → validate (`ingest_api::validate`, pure) → [`stage`] + [`desired`] (pure) → [`apply`] (I/O,
//! server-side apply) → [`status`] (pure) → status write ([`reconcile`], I/O, rate-limited). [`controller`] runs
//! it; [`plan_store`] and [`pod`] are the pod side of the contract described in README.md.

pub mod api_count;
pub mod apply;
pub mod claims;
pub mod controller;
pub mod defaults;
pub mod desired;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod plan_store;
pub mod pod;
pub mod reconcile;
pub mod stage;
pub mod status;
pub mod token;

pub use error::{Category, Error, Result};
