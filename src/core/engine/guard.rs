//! Guard rails: what may hold back a decision to act, or change it, once the engine found a
//! cause to revert. Pure: it reads the context (policy, past actions, the index, the clock).

use super::{Context, Decision};

/// Applies the guard rails to `decision`; a decision that does not act passes unchanged.
pub(super) fn apply(_ctx: &Context<'_>, decision: Decision) -> Decision {
    decision
}
