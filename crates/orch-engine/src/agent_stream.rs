//! Reading a coding agent's event stream (Claude Code's `stream-json`, Codex's
//! `exec --json`) from its stdout pipe while the run goes on: every byte is kept
//! beside the job log as `<log>.jsonl`, each line is handed to the adapter's
//! parser (orch-agents) and the readable progress lines it yields go into the
//! job log. The stream is hostile input: lines are bounded ([`MAX_LINE_BYTES`]),
//! a malformed or overlong line is logged and skipped, the raw copy is bounded
//! ([`MAX_RAW_BYTES`]), and nothing here can panic on what the agent prints.
//!
//! Two watches end a run from here, by cancelling its stop token (the launcher
//! then kills the whole tree): a stream that shows no progress for the agent's
//! `stall_s` (Codex retries an unreachable server forever), and a budget the
//! run's usage pushes an item over.

use std::path::{Path, PathBuf};
use std::time::Duration;

use orch_agents::StreamParser;
use orch_core::Usage;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::ChildStdout;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::untrusted;

/// The longest stream line parsed; a longer one is skipped (a tool result an
/// agent echoes can be large, but never this large in a sane run).
pub(crate) const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// The most of the raw stream kept beside the log; past it the copy stops (the
/// parser still reads everything).
pub(crate) const MAX_RAW_BYTES: u64 = 256 * 1024 * 1024;

/// At most this many "skipped a malformed line" notes go into the log per run.
const MAX_SKIP_NOTES: u64 = 20;

/// How long the stream is still drained once the run was told to stop: the
/// launcher kills the tree within its kill grace, which closes the pipe.
const DRAIN: Duration = Duration::from_secs(10);

/// Decides whether the usage so far breaks a budget: `Some(reason)` stops the run.
pub(crate) type BudgetCheck = Box<dyn Fn(&Usage) -> Option<String> + Send + Sync>;

/// What watching the stream found.
pub(crate) struct StreamEnd {
    pub(crate) parser: StreamParser,
    /// The run was stopped because its stream showed no progress for `stall`.
    pub(crate) stalled: bool,
    /// The run was stopped because it broke a budget; the reason says which.
    pub(crate) over_budget: Option<String>,
}

/// The raw stream's path beside the job log: `<log>.jsonl`.
pub(crate) fn raw_path(log: &Path) -> PathBuf {
    let mut p = log.as_os_str().to_owned();
    p.push(".jsonl");
    PathBuf::from(p)
}

async fn open_append(path: &Path) -> Option<tokio::fs::File> {
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || untrusted::open_append(&p)).await {
        Ok(Ok(f)) => Some(tokio::fs::File::from_std(f)),
        Ok(Err(e)) => {
            warn!(path = %path.display(), error = %e, "cannot open the agent's stream log");
            None
        }
        Err(_) => None,
    }
}

struct Sink {
    log: Option<tokio::fs::File>,
}

impl Sink {
    async fn note(&mut self, line: &str) {
        if let Some(f) = &mut self.log
            && f.write_all(format!("[orch] {line}\n").as_bytes()).await.is_err()
        {
            self.log = None;
        }
    }
}

/// Reads `stdout` to its end (or until [`DRAIN`] after a stop), feeding
/// `parser`. Cancels `stop` when the stream stalls for `stall` or `budget`
/// says the usage is over a limit.
pub(crate) async fn pump(
    stdout: ChildStdout,
    mut parser: StreamParser,
    log: &Path,
    stall: Duration,
    stop: &CancellationToken,
    budget: Option<BudgetCheck>,
) -> StreamEnd {
    let mut sink = Sink { log: open_append(log).await };
    let mut raw = open_append(&raw_path(log)).await;
    let mut raw_written: u64 = 0;
    let mut reader = BufReader::with_capacity(64 * 1024, stdout);
    let mut line: Vec<u8> = Vec::new();
    let mut overlong = false;
    let mut skipped: u64 = 0;
    let (mut stalled, mut over_budget) = (false, None::<String>);
    let mut deadline = tokio::time::Instant::now() + stall;
    loop {
        let stopping = stop.is_cancelled();
        let limit = if stopping { tokio::time::Instant::now() + DRAIN } else { deadline };
        let chunk = match tokio::time::timeout_at(limit, reader.fill_buf()).await {
            Err(_) if stopping => break,
            Err(_) => {
                stalled = true;
                sink.note(&format!(
                    "the agent's stream showed no progress for {}s: stopping the run",
                    stall.as_secs_f64()
                ))
                .await;
                stop.cancel();
                continue;
            }
            Ok(Err(e)) => {
                sink.note(&format!("cannot read the agent's stream: {e}")).await;
                break;
            }
            Ok(Ok([])) => break,
            Ok(Ok(buf)) => {
                let take = buf.iter().position(|b| *b == b'\n').map_or(buf.len(), |i| i + 1);
                buf[..take].to_vec()
            }
        };
        reader.consume(chunk.len());
        if let Some(f) = &mut raw
            && raw_written < MAX_RAW_BYTES
        {
            raw_written += chunk.len() as u64;
            if f.write_all(&chunk).await.is_err() {
                raw = None;
            }
        }
        let complete = chunk.last() == Some(&b'\n');
        let data = if complete { &chunk[..chunk.len() - 1] } else { &chunk[..] };
        if line.len() + data.len() > MAX_LINE_BYTES {
            overlong = true;
            line.clear();
        } else if !overlong {
            line.extend_from_slice(data);
        }
        if complete {
            let progressed = handle(&mut parser, &line, overlong, &mut sink, &mut skipped).await;
            if progressed {
                deadline = tokio::time::Instant::now() + stall;
            }
            line.clear();
            overlong = false;
            if over_budget.is_none()
                && let Some(reason) = budget.as_ref().and_then(|b| b(&parser.usage()))
            {
                sink.note(&format!("stopping the run: {reason}")).await;
                over_budget = Some(reason);
                stop.cancel();
            }
        }
    }
    if !line.is_empty() {
        handle(&mut parser, &line, overlong, &mut sink, &mut skipped).await;
    }
    if skipped > MAX_SKIP_NOTES {
        sink.note(&format!("{skipped} stream lines were skipped in all")).await;
    }
    if let Some(f) = &mut raw {
        let _ = f.flush().await;
    }
    if let Some(f) = &mut sink.log {
        let _ = f.flush().await;
    }
    StreamEnd { parser, stalled, over_budget }
}

/// Parses one line; returns whether it showed progress.
async fn handle(parser: &mut StreamParser, line: &[u8], overlong: bool, sink: &mut Sink, skipped: &mut u64) -> bool {
    let trimmed = line.strip_suffix(b"\r").unwrap_or(line);
    if trimmed.iter().all(u8::is_ascii_whitespace) && !overlong {
        return false;
    }
    let result = if overlong {
        Err(format!("longer than {MAX_LINE_BYTES} bytes"))
    } else {
        parser.feed(&String::from_utf8_lossy(trimmed)).map_err(|e| e.to_string())
    };
    match result {
        Ok(fed) => {
            for l in &fed.lines {
                if let Some(f) = &mut sink.log
                    && f.write_all(format!("[agent] {l}\n").as_bytes()).await.is_err()
                {
                    sink.log = None;
                }
            }
            fed.progress
        }
        Err(e) => {
            *skipped += 1;
            if *skipped <= MAX_SKIP_NOTES {
                sink.note(&format!("skipped a stream line: {e}")).await;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;
    use std::time::Duration;

    use orch_core::config::AdapterKind;
    use tokio_util::sync::CancellationToken;

    use super::{MAX_LINE_BYTES, pump, raw_path};

    /// Runs `script` with its stdout piped into `pump` (a Claude Code parser).
    async fn pumped(script: &str, stall: Duration) -> (super::StreamEnd, String, String, bool) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("job-1.log");
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", script])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stop = CancellationToken::new();
        let parser = orch_agents::parser(AdapterKind::ClaudeCode).unwrap();
        let stdout = child.stdout.take().unwrap();
        // The launcher's part: kill the process when the run is told to stop.
        let (end, ()) = tokio::join!(pump(stdout, parser, &log, stall, &stop, None), async {
            tokio::select! {
                () = stop.cancelled() => { let _ = child.kill().await; }
                _ = child.wait() => {}
            }
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let raw = String::from_utf8_lossy(&std::fs::read(raw_path(&log)).unwrap_or_default()).into_owned();
        (end, text, raw, stop.is_cancelled())
    }

    /// Garbage, an overlong line, binary bytes and a line without newline at the
    /// end: each bad line is noted and skipped, the good ones still count.
    #[tokio::test]
    async fn hostile_lines_are_skipped_and_the_rest_still_parsed() {
        let script = format!(
            "echo 'not json at all'; echo '{{\"no\":\"type\"}}'; head -c {} /dev/zero | tr '\\0' x; echo; \
             printf '\\377\\376\\001\\n'; \
             printf '%s' '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"ok\",\"num_turns\":2,\"usage\":{{\"input_tokens\":5,\"output_tokens\":7}}}}'",
            MAX_LINE_BYTES + 10
        );
        let (end, log, raw, stopped) = pumped(&script, Duration::from_secs(30)).await;
        assert!(!stopped && !end.stalled);
        assert_eq!(log.matches("[orch] skipped a stream line").count(), 4, "{log}");
        assert!(log.contains(&format!("longer than {MAX_LINE_BYTES} bytes")), "{log}");
        assert!(log.contains("[agent] result: success after 2 turns, 5 input + 7 output tokens: ok"), "{log}");
        assert_eq!((end.parser.usage().turns, end.parser.usage().output_tokens), (2, 7));
        assert!(raw.starts_with("not json at all\n") && raw.len() > MAX_LINE_BYTES, "the raw stream is kept whole");
    }

    /// A stream that goes quiet is stopped after `stall`, whatever it printed before.
    #[tokio::test]
    async fn a_quiet_stream_is_reported_stalled_and_stopped() {
        let script = r#"echo '{"type":"system","subtype":"init","model":"m"}'; exec sleep 30"#;
        let (end, log, _, stopped) = pumped(script, Duration::from_millis(300)).await;
        assert!(end.stalled && stopped, "{log}");
        assert!(log.contains("[orch] the agent's stream showed no progress for 0.3s: stopping the run"), "{log}");
    }
}
