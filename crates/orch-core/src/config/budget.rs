//! The time budget of every stage (DESIGN §2 point 5): the longest a healthy job of
//! the stage can take — agent timeout, the gates on its way out, and the finalize
//! grace — must stay below the reaper's Tier-3 backstop `max_running_s`, or the
//! backstop would kill live work. `validate` refuses configs where it does not
//! hold; `orch check` prints the table so operators can see the headroom.

use serde::Serialize;

use super::model::{AdapterKind, Config, EdgeTarget};
use crate::names::{GateName, RoleName, StageName, TrackName};

/// One gate's share of a stage's budget.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateBudget {
    /// The gate, as named on the edge.
    pub name: GateName,
    /// Its `timeout_s`: the longest it can hold up the stage.
    pub timeout_s: f64,
}

/// The worst-case time of one stage on one track, compared with `max_running_s`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageBudget {
    /// The track; a stage's exit edge, and so its gates, depend on the track.
    pub track: TrackName,
    /// The stage whose job this budget bounds.
    pub stage: StageName,
    /// The role whose agent runs the stage.
    pub role: RoleName,
    /// The agent's `timeout_s`; 0 for adapter `none`, which runs no process.
    pub agent_timeout_s: f64,
    /// Where the stage's exit edge on this track leads; its gates count.
    pub to: EdgeTarget,
    /// The gates on that edge, in run order.
    pub gates: Vec<GateBudget>,
    /// Σ of the gates' `timeout_s`.
    pub gates_s: f64,
    /// `reaper.finalize_grace_s`: finalization may take this long before Tier 2 acts.
    pub finalize_grace_s: f64,
    /// `agent_timeout_s + gates_s + finalize_grace_s`.
    pub total_s: f64,
    /// `reaper.max_running_s`, the Tier-3 backstop the total must stay below.
    pub max_running_s: f64,
    /// `max_running_s - total_s`; must be positive.
    pub headroom_s: f64,
    /// Whether `total_s < max_running_s`.
    pub holds: bool,
}

impl StageBudget {
    /// The edge as `from -> to`, as messages and tables show it.
    pub fn edge_label(&self) -> String {
        format!("{} -> {}", self.stage, self.to.as_str())
    }
}

impl Config {
    /// The budget of every stage of every track, tracks in name order and stages in
    /// track order. Stages whose stage table or agent is missing (which validation
    /// reports on its own) are left out, and unknown gates count as zero.
    pub fn budget(&self) -> Vec<StageBudget> {
        let grace = self.reaper.finalize_grace_s;
        let max = self.reaper.max_running_s;
        let mut out = Vec::new();
        for (track, t) in &self.tracks {
            for stage in &t.stages {
                let (Some((role, agent)), Some(exit)) = (self.agent_for(stage), self.exit(track, stage)) else {
                    continue;
                };
                let agent_timeout_s = if agent.adapter == AdapterKind::None { 0.0 } else { agent.timeout_s };
                let gates: Vec<GateBudget> = exit
                    .edge
                    .map(|e| &e.gates)
                    .into_iter()
                    .flatten()
                    .filter_map(|g| self.gates.get(g).map(|gc| GateBudget { name: g.clone(), timeout_s: gc.timeout_s }))
                    .collect();
                // A fold from +0.0: `Sum` for floats starts at -0.0, which would print as `-0`.
                let gates_s = gates.iter().fold(0.0, |sum, g| sum + g.timeout_s);
                let total_s = agent_timeout_s + gates_s + grace;
                out.push(StageBudget {
                    track: track.clone(),
                    stage: stage.clone(),
                    role: role.clone(),
                    agent_timeout_s,
                    to: exit.to,
                    gates,
                    gates_s,
                    finalize_grace_s: grace,
                    total_s,
                    max_running_s: max,
                    headroom_s: max - total_s,
                    holds: total_s < max,
                });
            }
        }
        out
    }
}

/// Seconds as people write them: `600`, `0.5`, `2.25` (rounded to milliseconds, so
/// float sums like 0.1 + 0.2 print as `0.3`).
pub fn format_secs(s: f64) -> String {
    let text = format!("{s:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" { "0".to_owned() } else { text.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_print_without_noise() {
        assert_eq!(format_secs(600.0), "600");
        assert_eq!(format_secs(0.1 + 0.2), "0.3");
        assert_eq!(format_secs(2.25), "2.25");
        assert_eq!(format_secs(-0.0001), "0");
        assert_eq!(format_secs(-12.5), "-12.5");
    }
}
