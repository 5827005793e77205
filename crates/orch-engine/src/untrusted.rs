//! Files an agent can touch, handled as hostile input (DESIGN §7, "Agent-writable
//! paths are hostile").
//!
//! An agent runs as the same user as orch and can replace any file orch reads back
//! (its verdict, a gate's log) with a FIFO, a device, a directory, a link to
//! somewhere else or a file of many gigabytes. A blocking `open` of a FIFO parks the
//! thread that calls it; on a runtime worker that froze a whole node once. So every
//! such file is opened here without following a final link and without blocking
//! (`O_NOFOLLOW | O_NONBLOCK`), checked with `fstat` to be a regular file, read up
//! to a limit, and all of it runs on the blocking pool under a timeout, never on the
//! async runtime's threads. Files orch writes for an agent (prompt, logs) are
//! created fresh and exclusively, so whatever the agent left at that path is never
//! opened.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;

/// How long one read of an agent-writable file may take before it is abandoned.
/// A regular file of at most a few MiB is read in milliseconds; anything slower is
/// a hostile or broken filesystem, and the read's thread is left to the blocking
/// pool rather than waited for.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an agent-writable file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{path} does not exist")]
    Missing { path: String },
    #[error("{path} is a symbolic link; orch does not follow links in agent-writable paths")]
    Link { path: String },
    #[error("{path} is not a regular file (it is a {kind})")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is {size} bytes, over the {limit}-byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("reading {path} took longer than {}s", READ_TIMEOUT.as_secs())]
    TimedOut { path: String },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// Opens `path` for reading without following a final link or blocking, and
/// insists on a regular file; returns it with its size. The open itself never
/// blocks; reads of a regular file do not either, so a caller outside the async
/// runtime (the CLI) may use it directly.
///
/// # Errors
/// A [`ReadError`] naming the path and what was wrong with it.
pub fn open_regular(path: &Path) -> Result<(File, u64), ReadError> {
    let name = || path.display().to_string();
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(code) if code == nix::libc::ELOOP => ReadError::Link { path: name() },
            _ if source.kind() == std::io::ErrorKind::NotFound => ReadError::Missing { path: name() },
            _ => ReadError::Io { path: name(), source },
        })?;
    let meta = file.metadata().map_err(|source| ReadError::Io { path: name(), source })?;
    let ft = meta.file_type();
    if !ft.is_file() {
        let kind = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_char_device() || ft.is_block_device() {
            "device"
        } else if ft.is_socket() {
            "socket"
        } else {
            "special file"
        };
        return Err(ReadError::NotRegular { path: name(), kind });
    }
    Ok((file, meta.len()))
}

/// Reads all of a regular file of at most `limit` bytes (blocking; see [`read`]).
fn read_all_blocking(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    let (file, size) = open_regular(path)?;
    let name = || path.display().to_string();
    if size > limit {
        return Err(ReadError::TooLarge { path: name(), size, limit });
    }
    // The file may grow between fstat and read: read one byte past the limit so a
    // file that grew is refused rather than silently cut.
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(limit + 1).read_to_end(&mut buf).map_err(|source| ReadError::Io { path: name(), source })?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: name(), size: buf.len() as u64, limit });
    }
    Ok(buf)
}

/// The last `max` bytes of a regular file (blocking; see [`tail`]).
fn tail_blocking(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let (mut file, size) = open_regular(path)?;
    let name = || path.display().to_string();
    file.seek(SeekFrom::Start(size.saturating_sub(max))).map_err(|source| ReadError::Io { path: name(), source })?;
    let mut buf = Vec::new();
    file.take(max).read_to_end(&mut buf).map_err(|source| ReadError::Io { path: name(), source })?;
    Ok(buf)
}

/// At most `max` bytes from offset `start` of a regular file, with the file's
/// size when it was opened (blocking; see [`try_range`]).
fn range_blocking(path: &Path, start: u64, max: u64) -> Result<(Vec<u8>, u64), ReadError> {
    let (mut file, size) = open_regular(path)?;
    let name = || path.display().to_string();
    if start >= size {
        return Ok((Vec::new(), size));
    }
    file.seek(SeekFrom::Start(start)).map_err(|source| ReadError::Io { path: name(), source })?;
    // Read no further than the size seen at open: a file growing under the read
    // is read again from the returned offset, never past what the size says.
    let mut buf = Vec::new();
    file.take(max.min(size - start)).read_to_end(&mut buf).map_err(|source| ReadError::Io { path: name(), source })?;
    Ok((buf, size))
}

/// Runs a blocking read on the blocking pool under [`READ_TIMEOUT`].
async fn off_runtime<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(PathBuf) -> Result<T, ReadError> + Send + 'static,
) -> Result<T, ReadError> {
    let owned = path.to_path_buf();
    let name = path.display().to_string();
    match tokio::time::timeout(READ_TIMEOUT, tokio::task::spawn_blocking(move || f(owned))).await {
        Ok(Ok(r)) => r,
        Ok(Err(join)) => {
            Err(ReadError::Io { path: name, source: std::io::Error::other(format!("reader thread failed: {join}")) })
        }
        Err(_) => Err(ReadError::TimedOut { path: name }),
    }
}

/// Reads an agent-writable file whole, refusing links, anything but a regular
/// file, and files over `limit` bytes.
///
/// # Errors
/// A [`ReadError`] naming the path and what was wrong with it.
pub async fn read(path: &Path, limit: u64) -> Result<Vec<u8>, ReadError> {
    off_runtime(path, move |p| read_all_blocking(&p, limit)).await
}

/// The last `max` bytes of an agent-writable file, lossily decoded: enough to read
/// a gate's metric or show a failure's tail. Empty when the file cannot be read
/// safely (the caller reports the gate's own result; the tail is only detail).
pub async fn tail(path: &Path, max: u64) -> String {
    match off_runtime(path, move |p| tail_blocking(&p, max)).await {
        Ok(buf) => String::from_utf8_lossy(&buf).into_owned(),
        Err(err) => {
            tracing::warn!(error = %err, "cannot read the tail of an output file");
            String::new()
        }
    }
}

/// The last `max` bytes of an agent-writable file, raw, or why it cannot be read
/// safely (the API reports that, where [`tail`] only logs it).
///
/// # Errors
/// A [`ReadError`] naming the path and what was wrong with it.
pub async fn try_tail(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    off_runtime(path, move |p| tail_blocking(&p, max)).await
}

/// Creates `path` fresh for writing: whatever is at the path (a file from an
/// earlier run, or a FIFO or link an agent put there) is removed first, then the
/// file is created exclusively without following links, so orch never writes
/// through something an agent planted. Blocking, but never on a FIFO: the final
/// open cannot succeed on anything but a new regular file.
///
/// # Errors
/// The I/O error of the removal or the exclusive creation.
pub fn create_fresh(path: &Path) -> std::io::Result<File> {
    clear(path)?;
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).bits())
        .open(path)
}

/// Removes whatever is at `path` (a file, a FIFO, a link — not what it points to —
/// or a directory tree); nothing there is fine.
///
/// # Errors
/// The I/O error of the removal.
pub fn clear(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Opens a log that several runs of one job append to (the job's agent log). A
/// regular file is appended to; anything else at the path (a FIFO, a link, a
/// directory an earlier run's agent left) is replaced by a fresh file. The open
/// never blocks: `O_NONBLOCK` makes a planted FIFO fail instead of waiting for a
/// reader, and `O_NOFOLLOW` refuses a planted link.
///
/// # Errors
/// The I/O error of the open or the replacement.
pub fn open_append(path: &Path) -> std::io::Result<File> {
    let opened = OpenOptions::new()
        .append(true)
        .create(true)
        .custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).bits())
        .open(path);
    match opened {
        Ok(f) if f.metadata().is_ok_and(|m| m.file_type().is_file()) => {
            // Appends to a regular file never block; clear O_NONBLOCK anyway so the
            // agent that inherits this descriptor sees an ordinary file.
            let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_GETFL)?);
            nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK))?;
            Ok(f)
        }
        _ => create_fresh(path),
    }
}

/// At most `max` bytes of an agent-writable file from offset `start`, and the
/// file's size: what a follower of a growing log or a `Range` request reads.
/// Empty when `start` is at or past the end.
///
/// # Errors
/// A [`ReadError`] naming the path and what was wrong with it.
pub async fn try_range(path: &Path, start: u64, max: u64) -> Result<(Vec<u8>, u64), ReadError> {
    off_runtime(path, move |p| range_blocking(&p, start, max)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("verdict.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = read(&fifo, 1024).await.unwrap_err();
        assert!(matches!(err, ReadError::NotRegular { kind: "FIFO", .. }), "{err}");
        assert_eq!(tail(&fifo, 1024).await, "");
    }

    #[tokio::test]
    async fn links_directories_devices_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(matches!(read(&link, 1024).await.unwrap_err(), ReadError::Link { .. }));
        assert!(matches!(read(dir.path(), 1024).await.unwrap_err(), ReadError::NotRegular { kind: "directory", .. }));
        let dev = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &dev).unwrap();
        assert!(matches!(read(&dev, 1024).await.unwrap_err(), ReadError::Link { .. }));
        assert!(matches!(
            read(Path::new("/dev/zero"), 1024).await.unwrap_err(),
            ReadError::NotRegular { kind: "device", .. }
        ));
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'x'; 2048]).unwrap();
        assert!(matches!(read(&big, 1024).await.unwrap_err(), ReadError::TooLarge { size: 2048, .. }));
        assert_eq!(tail(&big, 10).await, "xxxxxxxxxx");
        assert!(matches!(read(&dir.path().join("none"), 1).await.unwrap_err(), ReadError::Missing { .. }));
    }

    #[test]
    fn fresh_and_append_opens_replace_a_planted_fifo_or_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("outside");
        std::fs::write(&target, "keep").unwrap();
        let log = dir.path().join("job.log");
        std::os::unix::fs::symlink(&target, &log).unwrap();
        use std::io::Write;
        open_append(&log).unwrap().write_all(b"a").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep", "wrote through a planted link");
        std::fs::remove_file(&log).unwrap();
        nix::unistd::mkfifo(&log, nix::sys::stat::Mode::S_IRWXU).unwrap();
        open_append(&log).unwrap().write_all(b"b").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "b");
        open_append(&log).unwrap().write_all(b"c").unwrap();
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "bc", "a regular log is appended to");
        let prompt = dir.path().join("prompt.md");
        std::os::unix::fs::symlink(&target, &prompt).unwrap();
        create_fresh(&prompt).unwrap().write_all(b"p").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&prompt).unwrap(), "p");
    }
}
