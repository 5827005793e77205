//! `orch logs JOB [--follow]`: prints a job's agent log; with `--follow`, keeps
//! printing what the agent writes until the job ends.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use orch_store::JobId;

use crate::context;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The job id (see `orch item show KEY` or `orch queue`).
    job: i64,
    /// Keep printing new output until the job ends.
    #[arg(long, short)]
    follow: bool,
}

pub(crate) fn run(config_path: &Path, args: &Args) -> anyhow::Result<ExitCode> {
    context::with_store(config_path, |_config, store| async move {
        let id = JobId(args.job);
        let job = store.get_job(id).await?.with_context(|| format!("no job {id}"))?;
        let Some(path) = job.log_path.clone() else {
            eprintln!("job {id} has not started yet (status {}): no log", job.status);
            return Ok(ExitCode::SUCCESS);
        };
        let mut offset = 0u64;
        let mut out = std::io::stdout();
        loop {
            offset = copy_from(Path::new(&path), offset, &mut out)?;
            if !args.follow {
                break;
            }
            let job = store.get_job(id).await?.with_context(|| format!("job {id} vanished"))?;
            if job.status.is_ended() {
                copy_from(Path::new(&path), offset, &mut out)?;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Copies the file from `offset` to `out` in bounded chunks; returns the new offset.
/// The log sits where the agent can reach it: it is opened as hostile input (no
/// link followed, no FIFO or device opened), so a planted FIFO cannot hang `orch logs`.
fn copy_from(path: &Path, offset: u64, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut f = match orch_engine::untrusted::open_regular(path) {
        Ok((f, _)) => f,
        Err(orch_engine::untrusted::ReadError::Missing { .. }) => return Ok(offset),
        Err(e) => anyhow::bail!("cannot show the log: {e}"),
    };
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = offset;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        pos += n as u64;
    }
    out.flush()?;
    Ok(pos)
}
