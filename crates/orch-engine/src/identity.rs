//! Names that identify a node: its default id and the key of its cgroup folder.
//!
//! The hostname alone is not an identity: two `orch serve` processes on one host
//! (two data directories, a test and a real node) would share it, and a node that
//! reconciles under another's id kills that node's work. Both names therefore mix
//! in the data directory, which two nodes never share.

use std::path::Path;

/// FNV-1a, 64 bits: stable across Rust releases and platforms (unlike std's
/// `DefaultHasher`), which matters because the result names folders and ids that
/// must survive an upgrade of the binary.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Eight hex digits standing for `data_dir` (made absolute where it exists).
fn dir_tag(data_dir: &Path) -> String {
    let abs = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    format!("{:08x}", fnv1a(abs.as_os_str().as_encoded_bytes()) as u32)
}

/// The id a node takes when `[node] id` is empty: `host-xxxxxxxx`, the host name
/// and a tag of the data directory, stable across restarts of the same node and
/// different for two nodes on one host.
pub fn default_node_id(host: &str, data_dir: &Path) -> String {
    format!("{host}-{}", dir_tag(data_dir))
}

/// The name of the folder holding a node's job cgroups: its id and data directory.
pub(crate) fn containment_key(node_id: &str, data_dir: &Path) -> String {
    format!("{node_id}-{}", dir_tag(data_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_differ_by_data_dir_and_are_stable() {
        let a = default_node_id("box", Path::new("/srv/a"));
        assert_eq!(a, default_node_id("box", Path::new("/srv/a")));
        assert_ne!(a, default_node_id("box", Path::new("/srv/b")));
        assert!(a.starts_with("box-") && a.len() == "box-".len() + 8, "{a}");
        // Pinned so an accidental change of the hash (which would orphan cgroups
        // and rename nodes across an upgrade) fails here.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}
