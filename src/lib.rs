//! rollbackd: an alert-driven auto-rollback daemon for Kubernetes.
//!
//! The crate is split the way the design brief draws it: `core` decides and does no I/O;
//! everything else is an adapter (webhook, poller, watches, executor, store, notifier) or wiring.
//!
//! The simulated API server (`sandbox`) and the `demo` built on it come with the default cargo
//! feature `sandbox`; the production build (the Dockerfile's) leaves them out with
//! `--no-default-features`.

pub mod audit;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
#[cfg(feature = "sandbox")]
pub mod demo;
pub mod fault;
pub mod graph;
pub mod http;
pub mod k8s;
pub mod link;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod poller;
#[cfg(feature = "sandbox")]
pub mod sandbox;
pub mod scenario;
pub mod store;
