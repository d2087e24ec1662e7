//! Which NFS server and tree a local path is, from `/proc/self/mountinfo`: the scan pod's source
//! is a mount (a PVC's volume, most often) whose server and export the IngestJob does not name, so
//! the scan reads them here to refuse a source that overlaps the destination's tree on one of its
//! servers (`ingest_api::validate::check_source_apart`, the check the operator makes itself for
//! an NFS source named in the spec). Pure, but for reading the file.

use std::path::Path;

use ingest_api::job::path_segments;

/// An NFS mount's server and the tree a path is on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsTree {
    /// The server as the mount names it (`server:/export`), and the address the kernel resolved
    /// it to (`addr=` of the super options), when it says one that differs.
    pub servers: Vec<String>,
    /// The path on the server: the export, the mount's root in it, and the path below the mount
    /// point.
    pub path: String,
}

/// The NFS server and tree of `path` (absolute, resolved), from the text of a mountinfo file:
/// the last mount whose mount point holds `path` (a later mount hides an earlier one on the same
/// point). `None` when that mount is not NFS (or the path is not UTF-8, as no export's name is
/// here).
pub fn nfs_tree(mountinfo: &str, path: &Path) -> Option<NfsTree> {
    let wanted = path_segments(path.to_str()?);
    let mut best: Option<(usize, &str)> = None;
    for line in mountinfo.lines() {
        let Some(point) = line.split(' ').nth(4) else {
            continue;
        };
        let point = unescape(point);
        let p = path_segments(&point);
        if wanted.starts_with(&p) && best.is_none_or(|(n, _)| p.len() >= n) {
            best = Some((p.len(), line));
        }
    }
    let (depth, line) = best?;
    let fields: Vec<&str> = line.split(' ').collect();
    let root = unescape(fields.get(3)?);
    let dash = fields.iter().position(|f| *f == "-")?;
    let (fstype, source, options) = (
        fields.get(dash + 1)?,
        fields.get(dash + 2)?,
        fields.get(dash + 3).copied().unwrap_or(""),
    );
    if !fstype.starts_with("nfs") {
        return None;
    }
    let source = unescape(source);
    let at = source.find(":/")?;
    let host = source[..at].trim_start_matches('[').trim_end_matches(']');
    let mut servers = vec![host.to_owned()];
    if let Some(addr) = options.split(',').find_map(|o| o.strip_prefix("addr="))
        && addr != host
    {
        servers.push(addr.to_owned());
    }
    let mut tree = path_segments(&source[at + 1..]);
    tree.extend(path_segments(&root));
    tree.extend(&wanted[depth..]);
    Some(NfsTree {
        servers,
        path: format!("/{}", tree.join("/")),
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - overlay overlay rw,lowerdir=/l
30 22 0:40 / /ingest/source ro,relatime - nfs4 10.1.1.101:/data/projects rw,vers=4.1,addr=10.1.1.101
31 22 0:41 / /ingest/other ro,relatime - nfs filer.example.com:/exports rw,vers=3,addr=10.0.0.9
32 22 0:42 /team\\040a /ingest/bind ro - nfs4 [fd00::1]:/vol rw,addr=fd00::1
33 22 8:1 / /ingest/local rw - ext4 /dev/sda1 rw
34 22 0:43 / /ingest/local rw - nfs4 10.1.1.102:/shadow rw,addr=10.1.1.102
";

    fn tree(path: &str) -> Option<NfsTree> {
        nfs_tree(MOUNTINFO, Path::new(path))
    }

    #[test]
    fn the_server_and_the_tree_of_a_path_on_an_nfs_mount() {
        assert_eq!(
            tree("/ingest/source/2019/raw"),
            Some(NfsTree {
                servers: vec!["10.1.1.101".into()],
                path: "/data/projects/2019/raw".into(),
            })
        );
        // A host name, and the address the kernel resolved it to.
        assert_eq!(
            tree("/ingest/other").unwrap().servers,
            ["filer.example.com", "10.0.0.9"]
        );
        // A bind of a directory of an export (its root in the mount), with a space, over IPv6.
        assert_eq!(
            tree("/ingest/bind/x"),
            Some(NfsTree {
                servers: vec!["fd00::1".into()],
                path: "/vol/team a/x".into(),
            })
        );
        // The later mount on a point hides the earlier.
        assert_eq!(tree("/ingest/local").unwrap().path, "/shadow");
    }

    #[test]
    fn a_path_on_no_nfs_mount_is_none() {
        assert_eq!(tree("/ingest"), None, "the overlay root");
        assert_eq!(tree("/ingest/sourcefoo"), None, "a name is not a prefix");
        assert_eq!(nfs_tree("", Path::new("/x")), None);
        assert_eq!(unescape("a\\134b\\040"), "a\\b ");
    }
}
