//! Command-line mappings: NFS exports to local directories, images to local binaries.

use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MapError {
    #[error(
        "--nfs-map '{0}': expected SERVER:/EXPORT=/local/dir (an absolute export path and local dir)"
    )]
    NfsSyntax(String),
    #[error(
        "--exec-override '{0}': expected IMAGE_PREFIX=/path/to/binary (an absolute binary path)"
    )]
    ExecSyntax(String),
}

/// One `--nfs-map SERVER:/EXPORT=/local/dir`: the export on that server is the local dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMap {
    pub server: String,
    pub export: String,
    pub local: PathBuf,
}

impl std::str::FromStr for NfsMap {
    type Err = MapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MapError::NfsSyntax(s.to_string());
        let (remote, local) = s.split_once('=').ok_or_else(bad)?;
        // The export starts at the first ":/", so IPv6-free server names and
        // export paths with colons further on both parse.
        let colon = remote.find(":/").ok_or_else(bad)?;
        let (server, export) = (&remote[..colon], &remote[colon + 1..]);
        if server.is_empty() || !local.starts_with('/') {
            return Err(bad());
        }
        Ok(NfsMap {
            server: server.to_string(),
            export: normalise_export(export),
            local: PathBuf::from(local),
        })
    }
}

fn normalise_export(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

/// Finds the local directory for `server:path`: the map for that server whose
/// export is the longest prefix of `path`, joined with the rest of `path`.
/// `None` when no map covers it.
pub fn resolve_nfs(maps: &[NfsMap], server: &str, path: &str) -> Option<PathBuf> {
    let path = normalise_export(path);
    maps.iter()
        .filter(|m| m.server == server)
        .filter_map(|m| {
            let rest = if m.export == "/" {
                Some(path.trim_start_matches('/'))
            } else if path == m.export {
                Some("")
            } else {
                path.strip_prefix(&m.export)
                    .and_then(|r| r.strip_prefix('/'))
            }?;
            Some((m.export.len(), m.local.join(rest)))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, dir)| dir)
}

/// One `--exec-override IMAGE_PREFIX=/path/to/binary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOverride {
    pub image_prefix: String,
    pub binary: PathBuf,
}

impl std::str::FromStr for ExecOverride {
    type Err = MapError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || MapError::ExecSyntax(s.to_string());
        let (prefix, bin) = s.rsplit_once('=').ok_or_else(bad)?;
        if prefix.is_empty() || !bin.starts_with('/') {
            return Err(bad());
        }
        Ok(ExecOverride {
            image_prefix: prefix.to_string(),
            binary: PathBuf::from(bin),
        })
    }
}

/// The argv a container runs. The image is not pulled, so:
/// - with an override matching the image (longest prefix): no `command` runs
///   the binary with `args` (the image's entrypoint); a `command` whose program
///   has the binary's file name (`/usr/local/bin/vfxt-ingest`) runs the local
///   binary in its place; any other `command` runs as written;
/// - without one, `command` + `args` run as written and `command` is required.
pub fn container_argv(
    overrides: &[ExecOverride],
    image: &str,
    command: &[String],
    args: &[String],
) -> Result<Vec<String>, String> {
    let over = overrides
        .iter()
        .filter(|o| image.starts_with(&o.image_prefix))
        .max_by_key(|o| o.image_prefix.len());
    let mut argv: Vec<String> = match (over, command.split_first()) {
        (Some(o), None) => vec![o.binary.display().to_string()],
        (Some(o), Some((prog, rest))) if same_file_name(prog, &o.binary) => {
            std::iter::once(o.binary.display().to_string())
                .chain(rest.iter().cloned())
                .collect()
        }
        (_, Some(_)) => command.to_vec(),
        (None, None) => {
            return Err(format!(
                "image '{image}' has no local entrypoint: set the container's command, \
                 or start the agent with --exec-override IMAGE_PREFIX=/path/to/binary"
            ));
        }
    };
    argv.extend(args.iter().cloned());
    Ok(argv)
}

fn same_file_name(prog: &str, binary: &Path) -> bool {
    Path::new(prog).file_name().is_some() && Path::new(prog).file_name() == binary.file_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(s: &str) -> NfsMap {
        s.parse().unwrap()
    }

    #[test]
    fn nfs_map_parses_and_rejects() {
        let m = map("10.0.0.5:/export/data/=/tmp/src");
        assert_eq!(m.server, "10.0.0.5");
        assert_eq!(m.export, "/export/data");
        assert_eq!(m.local, PathBuf::from("/tmp/src"));
        for bad in ["10.0.0.5:/x", "10.0.0.5=/tmp", ":/x=/tmp", "s:/x=relative"] {
            assert_eq!(
                bad.parse::<NfsMap>(),
                Err(MapError::NfsSyntax(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn nfs_resolves_longest_prefix_and_subdirs() {
        let maps = [
            map("a:/nfs=/tmp/dst"),
            map("b:/nfs=/tmp/dst"),
            map("a:/nfs/special=/tmp/special"),
            map("c:/=/tmp/root"),
        ];
        assert_eq!(resolve_nfs(&maps, "a", "/nfs"), Some("/tmp/dst".into()));
        assert_eq!(
            resolve_nfs(&maps, "b", "/nfs/x/y"),
            Some("/tmp/dst/x/y".into())
        );
        assert_eq!(
            resolve_nfs(&maps, "a", "/nfs/special/z"),
            Some("/tmp/special/z".into())
        );
        assert_eq!(
            resolve_nfs(&maps, "c", "/any/where"),
            Some("/tmp/root/any/where".into())
        );
        // Same prefix as a string but not as a path.
        assert_eq!(resolve_nfs(&maps, "a", "/nfsother"), None);
        assert_eq!(resolve_nfs(&maps, "z", "/nfs"), None);
    }

    #[test]
    fn exec_override_parses() {
        let o: ExecOverride = "registry/vfxt-ingest:=/work/target/debug/vfxt-ingest"
            .parse()
            .unwrap();
        assert_eq!(o.image_prefix, "registry/vfxt-ingest:");
        assert!("img=relative".parse::<ExecOverride>().is_err());
        assert!("=/bin/true".parse::<ExecOverride>().is_err());
    }

    #[test]
    fn argv_follows_command_and_overrides() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let ov = [ExecOverride {
            image_prefix: "vfxt".into(),
            binary: "/bin/vfxt-ingest".into(),
        }];
        assert_eq!(
            container_argv(&ov, "vfxt:dev", &[], &s(&["worker"])).unwrap(),
            s(&["/bin/vfxt-ingest", "worker"])
        );
        assert_eq!(
            container_argv(
                &ov,
                "vfxt:dev",
                &s(&["/usr/local/bin/vfxt-ingest", "op"]),
                &s(&["-v"])
            )
            .unwrap(),
            s(&["/bin/vfxt-ingest", "op", "-v"])
        );
        assert_eq!(
            container_argv(&ov, "vfxt:dev", &s(&["sh", "-c"]), &s(&["true"])).unwrap(),
            s(&["sh", "-c", "true"])
        );
        assert_eq!(
            container_argv(&[], "busybox", &s(&["echo"]), &[]).unwrap(),
            s(&["echo"])
        );
        let err = container_argv(&[], "busybox", &[], &s(&["x"])).unwrap_err();
        assert!(err.contains("--exec-override"), "{err}");
    }
}
