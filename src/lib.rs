//! rollbackd: an alert-driven auto-rollback daemon for Kubernetes.
//!
//! The crate is split the way the design brief draws it: `core` decides and does no I/O;
//! everything else is an adapter (webhook, watches, executor, store, notifier) or wiring.

pub mod core;
pub mod poller;
pub mod sandbox;
