//! The pure core: domain types and the decision engine.
//!
//! Nothing under `core` performs I/O or imports kube, reqwest, axum, lettre, sqlx or tokio. It
//! takes alerts, a snapshot of the workloads and the clock, and returns decisions with reasons.
//! Adapters elsewhere in the crate feed it and carry out what it decides.

pub mod alert;
pub mod correlate;
pub mod engine;
pub mod gitops;
pub mod guard;
pub mod promote;
pub mod rollout;
pub mod settle;
pub mod traffic;
pub mod undo;
pub mod verify;
pub mod workload;
