//! What an agent run consumed, as the agent itself reported it: turns, tokens and
//! cost. Kept per job and summed per item, so budgets (`max_cost_usd`,
//! `max_tokens`, `max_agent_s`) can be judged and operators can see where the
//! money went. Plain data: the adapters fill it from the agent's event stream.

use serde::{Deserialize, Serialize};

/// Usage of one run, or the sum over an item's runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Usage {
    /// Model round trips (Claude Code's `num_turns`; Codex's completed turns).
    pub turns: u64,
    /// Input tokens not served from a cache.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read_tokens: u64,
    /// Input tokens written to the prompt cache.
    pub cache_write_tokens: u64,
    /// Cost in US dollars where the agent reports it (Claude Code does; Codex
    /// does not), else `None`.
    pub cost_usd: Option<f64>,
}

impl Usage {
    /// Every token the run was billed for, cached or not.
    pub fn total_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_add(self.output_tokens)
            .saturating_add(self.cache_read_tokens)
            .saturating_add(self.cache_write_tokens)
    }

    /// The sum of two usages; a cost known on either side is kept.
    #[must_use]
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            turns: self.turns.saturating_add(other.turns),
            input_tokens: self.input_tokens.saturating_add(other.input_tokens),
            output_tokens: self.output_tokens.saturating_add(other.output_tokens),
            cache_read_tokens: self.cache_read_tokens.saturating_add(other.cache_read_tokens),
            cache_write_tokens: self.cache_write_tokens.saturating_add(other.cache_write_tokens),
            cost_usd: match (self.cost_usd, other.cost_usd) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0.0) + b.unwrap_or(0.0)),
            },
        }
    }

    /// Whether nothing was reported.
    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn sums_keep_a_cost_known_on_either_side_and_saturate() {
        let a = Usage { turns: 2, input_tokens: u64::MAX, cost_usd: Some(0.5), ..Usage::default() };
        let b = Usage { turns: 1, input_tokens: 5, output_tokens: 7, ..Usage::default() };
        let s = a.plus(&b);
        assert_eq!((s.turns, s.input_tokens, s.output_tokens, s.cost_usd), (3, u64::MAX, 7, Some(0.5)));
        assert_eq!(b.plus(&b).cost_usd, None);
        assert_eq!(b.total_tokens(), 12);
    }

    #[test]
    fn a_stored_usage_missing_fields_reads_as_zero() {
        let u: Usage = serde_json::from_str(r#"{"turns": 3}"#).unwrap();
        assert_eq!(u, Usage { turns: 3, ..Usage::default() });
    }
}

#[cfg(test)]
mod budget_tests {
    use super::Usage;
    use crate::config::Budget;

    #[test]
    fn a_budget_names_the_first_limit_broken() {
        let b = Budget { max_cost_usd: Some(1.0), max_tokens: Some(100), max_agent_s: Some(60.0) };
        let u = Usage { input_tokens: 60, output_tokens: 40, cost_usd: Some(0.5), ..Usage::default() };
        assert_eq!(b.breached(&u, 10.0), None, "at the limit is not over it");
        let more = Usage { output_tokens: 41, ..u };
        assert_eq!(b.breached(&more, 10.0).as_deref(), Some("101 tokens are over max_tokens 100"));
        let dear = Usage { cost_usd: Some(1.5), ..u };
        assert_eq!(b.breached(&dear, 10.0).as_deref(), Some("cost $1.5000 is over max_cost_usd 1"));
        assert_eq!(b.breached(&u, 61.0).as_deref(), Some("61.0s of agent runs are over max_agent_s 60"));
        // No cost reported (Codex): the cost limit cannot be judged, the others still are.
        assert_eq!(b.breached(&Usage { cost_usd: None, ..u }, 0.0), None);
        assert!(Budget::default().is_empty());
    }
}
