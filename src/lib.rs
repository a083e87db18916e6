//! rollbackd: an alert-driven auto-rollback daemon for Kubernetes.
//!
//! The crate is split the way the design brief draws it: `core` decides and does no I/O;
//! everything else is an adapter (webhook, poller, watches, executor, store, notifier) or wiring.
//!
//! The simulated API server lives in its own crate, `kube-sandbox` (`crates/kube-sandbox`), and
//! the helpers shared by the demo, the tests and the benchmarks in `scenario`
//! (`crates/scenario`). `rollbackd sandbox` and `rollbackd demo` use them behind the default cargo
//! feature `sandbox`; the production build (the Dockerfile's) leaves all of it out with
//! `--no-default-features`.

pub mod audit;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod fault;
pub mod graph;
pub mod http;
pub mod k8s;
pub mod link;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod poller;
pub mod store;
