//! A node-local record of the process groups this node has started, one small
//! file per live group under `data_dir/run/<node>/`. The store knows an agent's
//! pgid only while this node owns its job, and never knows a gate's; after a
//! crash, start-up reconcile reads these files and kills every group still alive,
//! whatever the store says now (the job may since have been cancelled or taken
//! over elsewhere), so no process outlives the incarnation that started it (I6).

use std::path::{Path, PathBuf};

use crate::process;

/// This boot's id: groups recorded under another boot are long gone, and their
/// numbers may belong to someone else now.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

/// Records a group; returns the file to remove once the group is dead.
pub(crate) fn record(dir: &Path, name: &str, pid: i32, proc_start: Option<i64>) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    let path = dir.join(format!("{name}.pg"));
    let start = proc_start.map_or_else(|| "-".to_owned(), |s| s.to_string());
    std::fs::write(&path, format!("{pid} {start} {}\n", boot_id())).ok()?;
    Some(path)
}

/// Forgets a group that has been waited for and killed.
pub(crate) fn forget(path: Option<PathBuf>) {
    if let Some(p) = path {
        let _ = std::fs::remove_file(p);
    }
}

/// Kills every recorded group still alive (same boot, same leader start time, or a
/// leaderless group) and clears the records. Returns how many were killed.
pub(crate) fn kill_recorded(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let boot = boot_id();
    let mut killed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let mut fields = text.split_whitespace();
        let pid = fields.next().and_then(|p| p.parse::<i32>().ok());
        let start = fields.next().and_then(|s| s.parse::<i64>().ok());
        let same_boot = fields.next().is_some_and(|b| b == boot);
        if let (Some(pid), true) = (pid, same_boot)
            && process::kill_recorded_group(pid, pid, start)
        {
            killed += 1;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}
