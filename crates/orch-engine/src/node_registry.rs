//! The node's entry in the store's `nodes` table (DESIGN §5): registered at start
//! (refused while a live node holds the id), touched with every heartbeat together
//! with the node's measured offset to the store's clock, and marked stopped on a
//! clean shutdown.

use crate::ctx::Ctx;

/// One heartbeat of the node's registration and clock offset.
pub(crate) async fn heartbeat(_ctx: &Ctx) {}
