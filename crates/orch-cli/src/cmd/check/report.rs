//! The human-readable `orch check` report: settings, repos, agents, tracks, edges,
//! gates and the per-stage time-budget table. Rendered into a string so it is
//! written in one go and can be tested without a process.

use std::fmt::Write as _;

use orch_core::config::{AdapterKind, Config, EdgeTarget, ForgeKind, VerdictSource, format_secs};

/// The whole report.
pub(super) fn render(c: &Config, host: &str) -> String {
    let mut out = String::new();
    settings(&mut out, c, host);
    repos(&mut out, c);
    agents(&mut out, c);
    tracks(&mut out, c);
    edges(&mut out, c);
    gates(&mut out, c);
    budget(&mut out, c);
    out
}

fn settings(out: &mut String, c: &Config, host: &str) {
    let store = c.store_url_resolved();
    let store = if store == c.store.url { store } else { format!("{store}  (url = {:?})", c.store.url) };
    let id =
        if c.node.id.is_empty() { format!("{host} (node.id is empty: this host's name)") } else { c.node.id.clone() };
    let r = &c.reaper;
    let rows = vec![
        vec!["config".to_owned(), c.source.display().to_string()],
        vec!["store".to_owned(), store],
        vec!["server".to_owned(), format!("listen {}", c.server.listen)],
        vec![
            "node".to_owned(),
            format!(
                "id {id}  max_concurrent_jobs {}  data_dir {}",
                c.node.max_concurrent_jobs,
                c.data_dir_resolved().display()
            ),
        ],
        vec![
            "reaper".to_owned(),
            format!(
                "interval_s {}  finalize_grace_s {}  max_running_s {}  finalizer_liveness_enabled {}  \
                 lease_ttl_s {}  heartbeat_s {}",
                format_secs(r.interval_s),
                format_secs(r.finalize_grace_s),
                format_secs(r.max_running_s),
                r.finalizer_liveness_enabled,
                format_secs(r.lease_ttl_s),
                format_secs(r.heartbeat_s),
            ),
        ],
    ];
    out.push_str(&table(&rows, &[]));
}

fn repos(out: &mut String, c: &Config) {
    out.push_str("\nrepos\n");
    if c.repos.is_empty() {
        out.push_str("  (none: add a [[repos]] entry to file items)\n");
        return;
    }
    let rows: Vec<Vec<String>> = c
        .repos
        .iter()
        .map(|r| {
            let forge = match r.forge {
                ForgeKind::Local => "local",
                ForgeKind::Gitea => "gitea",
                ForgeKind::Github => "github",
            };
            let kinds: Vec<String> = r.tracks.iter().map(|(k, t)| format!("{k}={t}")).collect();
            vec![
                r.name.clone(),
                format!("key {}", r.key),
                format!("path {}", c.resolve_path(&r.path).display()),
                format!("forge {forge}"),
                format!("main_branch {}", r.main_branch),
                format!("tracks {}", kinds.join(" ")),
            ]
        })
        .collect();
    out.push_str(&indent(&table(&rows, &[])));
}

fn agents(out: &mut String, c: &Config) {
    out.push_str("\nagents\n");
    if c.agents.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let rows: Vec<Vec<String>> = c
        .agents
        .iter()
        .map(|(role, a)| {
            let adapter = match a.adapter {
                AdapterKind::Command => "command",
                AdapterKind::ClaudeCode => "claude-code",
                AdapterKind::Codex => "codex",
                AdapterKind::Script => "script",
                AdapterKind::None => "none",
            };
            let verdict = match a.verdict {
                VerdictSource::File => "file",
                VerdictSource::ExitCode => "exit-code",
                VerdictSource::Result => "result",
            };
            let (command, timeout) = if a.adapter == AdapterKind::None {
                ("(no process)".to_owned(), "-".to_owned())
            } else if a.command.is_empty() {
                // claude-code and codex: orch builds the command line per run.
                let program = a.cli.binary.clone().unwrap_or_else(|| adapter.replace("claude-code", "claude"));
                (format!("{program} (command line built per run)"), format!("timeout_s {}", format_secs(a.timeout_s)))
            } else {
                (argv(&c.resolve_argv(&a.command)), format!("timeout_s {}", format_secs(a.timeout_s)))
            };
            vec![role.to_string(), format!("adapter {adapter}"), timeout, format!("verdict {verdict}"), command]
        })
        .collect();
    out.push_str(&indent(&table(&rows, &[])));
}

fn tracks(out: &mut String, c: &Config) {
    out.push_str("\ntracks (stage: role, max_attempts)\n");
    for (name, t) in &c.tracks {
        let stages: Vec<String> = t
            .stages
            .iter()
            .map(|s| match c.stages.get(s) {
                Some(sc) => format!("{s} ({}, {})", sc.role, sc.max_attempts),
                None => s.to_string(),
            })
            .collect();
        let _ = writeln!(out, "  {name}: {} -> done", stages.join(" -> "));
    }
}

fn edges(out: &mut String, c: &Config) {
    out.push_str("\nedges\n");
    if c.edges.is_empty() {
        out.push_str("  (none: no gates run between stages, and a failed stage retries itself)\n");
        return;
    }
    let rows: Vec<Vec<String>> = c
        .edges
        .iter()
        .map(|e| {
            let gates = if e.gates.is_empty() {
                "-".to_owned()
            } else {
                e.gates.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            };
            let on_fail = match &e.on_fail {
                Some(s) => s.to_string(),
                None => format!("{} (retry)", e.from),
            };
            let to = match &e.to {
                EdgeTarget::Stage(s) => s.as_str(),
                EdgeTarget::Done => "done",
            };
            vec![
                format!("{} -> {to}", e.from),
                format!("gates {gates}"),
                format!("on_fail {on_fail}"),
                format!("approval {}", if e.approval { "yes" } else { "no" }),
            ]
        })
        .collect();
    out.push_str(&indent(&table(&rows, &[])));
}

fn gates(out: &mut String, c: &Config) {
    if c.gates.is_empty() {
        return;
    }
    out.push_str("\ngates\n");
    let rows: Vec<Vec<String>> = c
        .gates
        .iter()
        .map(|(name, g)| {
            let metric = g
                .metric
                .as_ref()
                .map_or("passes on exit 0".to_owned(), |m| format!("metric {:?} >= {}", m.regex.as_str(), m.min));
            vec![
                name.to_string(),
                format!("timeout_s {}", format_secs(g.timeout_s)),
                metric,
                argv(&c.resolve_argv(&g.command)),
            ]
        })
        .collect();
    out.push_str(&indent(&table(&rows, &[])));
}

fn budget(out: &mut String, c: &Config) {
    let _ = writeln!(
        out,
        "\ntime budget (agent + gates on the way out + finalize grace must stay below max_running_s = {})",
        format_secs(c.reaper.max_running_s)
    );
    let mut rows = vec![
        ["track", "stage", "next", "agent_s", "gates", "gates_s", "grace_s", "total_s", "max_running_s", "headroom_s"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for b in c.budget() {
        let gates = if b.gates.is_empty() {
            "-".to_owned()
        } else {
            b.gates.iter().map(|g| format!("{} {}", g.name, format_secs(g.timeout_s))).collect::<Vec<_>>().join(" + ")
        };
        rows.push(vec![
            b.track.to_string(),
            b.stage.to_string(),
            b.to.as_str().to_owned(),
            format_secs(b.agent_timeout_s),
            gates,
            format_secs(b.gates_s),
            format_secs(b.finalize_grace_s),
            format_secs(b.total_s),
            format_secs(b.max_running_s),
            format_secs(b.headroom_s),
        ]);
    }
    out.push_str(&indent(&table(&rows, &[3, 5, 6, 7, 8, 9])));
}

/// Rows as aligned columns, two spaces apart; the columns listed in `right` (the
/// numbers) are right-aligned. No trailing spaces.
fn table(rows: &[Vec<String>], right: &[usize]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                line.push_str("  ");
            }
            if right.contains(&i) {
                let _ = write!(line, "{cell:>w$}");
            } else {
                let _ = write!(line, "{cell:<w$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// An argv as a shell would need it typed: words with spaces or quotes are quoted.
fn argv(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            let plain = !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain { a.clone() } else { format!("'{}'", a.replace('\'', r"'\''")) }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![vec!["a".into(), "1".into(), "x".into()], vec!["bbb".into(), "22".into(), "".into()]];
        assert_eq!(table(&rows, &[1]), "a     1  x\nbbb  22\n");
    }

    #[test]
    fn argv_quotes_what_a_shell_would_split() {
        assert_eq!(argv(&["sh".into(), "-c".into(), "exit 0".into()]), "sh -c 'exit 0'");
        assert_eq!(argv(&["it's".into()]), r"'it'\''s'");
    }
}
