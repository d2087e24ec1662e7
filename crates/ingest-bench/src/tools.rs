//! The tools under test: how each is run, and what each promises to keep, so a copy is judged
//! only on what its tool claims (everything else is listed as "not kept", not as a failure).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ingest_testkit::Aspect;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tool {
    Vfxt,
    /// `vfxt-ingest copy` of another build (`--baseline BIN`), for old against new in one run.
    VfxtBase,
    /// `vfxt-ingest run` with 4 worker processes (issue 3's comparison).
    VfxtRun,
    Cp,
    Rsync,
    RsyncInplace,
    Parallel,
    Fpsync,
    /// `fpsync -n 4`: as many workers as `vfxt-run`.
    Fpsync4,
    /// The field guide's manifest: depth-2 directories dealt round robin to 4 clients, each
    /// `cp -a` one directory after another.
    Manifest,
    Rclone,
}

/// Worker processes of `vfxt-run`, clients of `manifest` and jobs of `fpsync4`.
pub const RUN_WORKERS: u32 = 4;

/// Jobs for the parallel peers, as in issue 2 and the field guide.
pub const PEER_JOBS: u32 = 16;

impl Tool {
    pub const ALL: [Tool; 11] = [
        Tool::Vfxt,
        Tool::VfxtBase,
        Tool::VfxtRun,
        Tool::Cp,
        Tool::Rsync,
        Tool::RsyncInplace,
        Tool::Parallel,
        Tool::Fpsync,
        Tool::Fpsync4,
        Tool::Manifest,
        Tool::Rclone,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Vfxt => "vfxt",
            Tool::VfxtBase => "vfxt-base",
            Tool::VfxtRun => "vfxt-run",
            Tool::Cp => "cp",
            Tool::Rsync => "rsync",
            Tool::RsyncInplace => "rsync-inplace",
            Tool::Parallel => "parallel",
            Tool::Fpsync => "fpsync",
            Tool::Fpsync4 => "fpsync4",
            Tool::Manifest => "manifest",
            Tool::Rclone => "rclone",
        }
    }

    /// How the row is labelled: the command line in short.
    pub fn label(self) -> &'static str {
        match self {
            Tool::Vfxt => "vfxt-ingest copy",
            Tool::VfxtBase => "vfxt-ingest copy (baseline)",
            Tool::VfxtRun => "vfxt-ingest run (4 workers)",
            Tool::Cp => "cp -a",
            Tool::Rsync => "rsync -a",
            Tool::RsyncInplace => "rsync -a --inplace",
            Tool::Parallel => "find | parallel -j16 cp",
            Tool::Fpsync => "fpsync -n 16",
            Tool::Fpsync4 => "fpsync -n 4",
            Tool::Manifest => "manifest, 4 x cp -a",
            Tool::Rclone => "rclone copy --transfers 16",
        }
    }

    /// The program that must be on PATH, and the Debian package that has it.
    pub fn program(self) -> Option<(&'static str, &'static str)> {
        match self {
            Tool::Vfxt | Tool::VfxtBase | Tool::VfxtRun => None,
            Tool::Cp => Some(("cp", "coreutils")),
            Tool::Rsync | Tool::RsyncInplace => Some(("rsync", "rsync")),
            Tool::Parallel => Some(("parallel", "parallel")),
            Tool::Fpsync | Tool::Fpsync4 => Some(("fpsync", "fpart")),
            Tool::Manifest => Some(("cp", "coreutils")),
            Tool::Rclone => Some(("rclone", "rclone")),
        }
    }

    /// Aspects beyond the basic ones (names, kinds, sizes, contents, symlink targets) that the
    /// tool, run as below, is documented to keep. `owner` only counts when running as root.
    pub fn promises(self, root: bool) -> BTreeSet<Aspect> {
        use Aspect::*;
        let owner = if root { vec![Owner] } else { vec![] };
        let v: Vec<Aspect> = match self {
            // Issue 2: everything, to the nanosecond.
            Tool::Vfxt | Tool::VfxtBase => [
                vec![Mode, Mtime, DirMtime, SymlinkMtime, Xattr, HardLink, Sparse],
                owner,
            ]
            .concat(),
            // The IngestJob's default `preserve`: everything but xattrs.
            Tool::VfxtRun => [
                vec![Mode, Mtime, DirMtime, SymlinkMtime, HardLink, Sparse],
                owner,
            ]
            .concat(),
            // Each client's `cp -a` keeps its subtree; the levels above are copied file by file
            // while the clients write below them, so their directory times are not kept, nor
            // hard links between different clients' directories.
            Tool::Manifest => [vec![Mode, Mtime, SymlinkMtime], owner].concat(),
            // -a = --preserve=all (mode, owner, timestamps, links, xattr); --sparse=auto.
            Tool::Cp => [
                vec![Mode, Mtime, DirMtime, SymlinkMtime, Xattr, HardLink, Sparse],
                owner,
            ]
            .concat(),
            // -a = -rlptgoD: no -H, -X or -S.
            Tool::Rsync | Tool::RsyncInplace => {
                [vec![Mode, Mtime, DirMtime, SymlinkMtime], owner].concat()
            }
            // rsync -lptgoD per file list; parallel jobs write into shared directories after a
            // job has set their times, so directory times are not kept.
            Tool::Fpsync | Tool::Fpsync4 => [vec![Mode, Mtime, SymlinkMtime], owner].concat(),
            // cp -P without -p keeps contents and symlinks only.
            Tool::Parallel => vec![],
            // File contents and modification times only (no --metadata).
            Tool::Rclone => vec![Mtime],
        };
        v.into_iter().collect()
    }

    /// The command that copies the tree at `src` into the existing empty directory `dst`.
    /// `scratch` is a private directory for the tool's own files.
    pub fn command(self, src: &Path, dst: &Path, scratch: &Path, vfxt: &VfxtArgs) -> Command {
        let slash = |p: &Path| format!("{}/", p.display());
        match self {
            Tool::Vfxt | Tool::VfxtBase => {
                let bin = match (self, &vfxt.baseline) {
                    (Tool::VfxtBase, Some(b)) => b,
                    _ => &vfxt.bin,
                };
                let mut c = Command::new(bin);
                c.arg("copy")
                    .arg(src)
                    .arg(dst)
                    .arg("--json")
                    .args(&vfxt.extra);
                c
            }
            Tool::Cp => {
                let mut c = Command::new("cp");
                c.arg("-a").arg(src.join(".")).arg(dst);
                c
            }
            Tool::Rsync | Tool::RsyncInplace => {
                let mut c = Command::new("rsync");
                c.arg("-a");
                if self == Tool::RsyncInplace {
                    c.arg("--inplace");
                }
                c.arg(slash(src)).arg(slash(dst));
                c
            }
            Tool::Parallel => {
                // The field guide's parallelcp: make every directory first, then one `cp -P` per
                // entry. DEST comes through the environment so no path is pasted into a shell line.
                let script = format!(
                    "set -eu -o pipefail\ncd \"$SRC\"\n\
                     find . -mindepth 1 -type d -print0 | parallel --will-cite -0 -j{PEER_JOBS} mkdir -p -- '\"$DEST\"'/{{}}\n\
                     find . -mindepth 1 ! -type d -print0 | parallel --will-cite -0 -j{PEER_JOBS} cp -P -- {{}} '\"$DEST\"'/{{}}\n"
                );
                bash(&script, src, dst, scratch)
            }
            Tool::VfxtRun => {
                // The local form of an IngestJob: one destination mount, RUN_WORKERS processes.
                let script = r#"set -eu
cat > "$SCRATCH/job.yaml" <<YAML
apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: bench}
spec:
  source: {local: "$SRC"}
  destination: {local: ["$DEST"]}
  workers: $WORKERS
  threadsPerWorker: 8
YAML
exec "$BIN" run -f "$SCRATCH/job.yaml" --state "$SCRATCH/state" --quiet
"#;
                let mut c = bash(script, src, dst, scratch);
                c.env("BIN", &vfxt.bin);
                c
            }
            Tool::Manifest => {
                // The field guide's recipe: the top levels first, then `find -mindepth 2 -maxdepth
                // 2 -type d` dealt round robin (`sed -n i~Np`) to N clients that `cp -a` one
                // directory after the other, all at once.
                let script = r#"set -eu -o pipefail
cd "$SRC"
find . -mindepth 1 -maxdepth 1 -type d -exec mkdir -p "$DEST/{}" \;
find . -mindepth 1 -maxdepth 1 ! -type d -exec cp -a -t "$DEST" {} +
find . -mindepth 1 -maxdepth 1 -type d | while IFS= read -r d; do
  find "$d" -mindepth 1 -maxdepth 1 ! -type d -exec cp -a -t "$DEST/$d" {} +
done
find . -mindepth 2 -maxdepth 2 -type d > "$SCRATCH/manifest"
for i in $(seq 1 "$WORKERS"); do
  sed -n "${i}~${WORKERS}p" "$SCRATCH/manifest" | while IFS= read -r d; do
    cp -a "$d" "$DEST/$(dirname "$d")/"
  done &
done
wait
"#;
                bash(script, src, dst, scratch)
            }
            Tool::Fpsync | Tool::Fpsync4 => {
                let jobs = if self == Tool::Fpsync4 {
                    RUN_WORKERS
                } else {
                    PEER_JOBS
                };
                let mut c = Command::new("fpsync");
                c.arg("-n")
                    .arg(jobs.to_string())
                    .arg("-t")
                    .arg(scratch)
                    .arg(slash(src))
                    .arg(slash(dst));
                c
            }
            Tool::Rclone => {
                // Without --create-empty-src-dirs rclone leaves out empty directories, which no
                // ingest may do; with it the tree is complete and the comparison is about speed.
                let mut c = Command::new("rclone");
                c.args([
                    "copy",
                    "--transfers",
                    &PEER_JOBS.to_string(),
                    "--create-empty-src-dirs",
                ])
                .arg(src)
                .arg(dst)
                .env("RCLONE_CONFIG", scratch.join("rclone.conf"));
                c
            }
        }
    }
}

/// How to run `vfxt-ingest`.
#[derive(Clone, Debug)]
pub struct VfxtArgs {
    pub bin: PathBuf,
    pub extra: Vec<String>,
    /// `--baseline BIN`: the build the `vfxt-base` row runs (with the same extra arguments).
    pub baseline: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "unknown tool {0:?} in --tools: valid are vfxt, vfxt-base, vfxt-run, cp, rsync, rsync-inplace, parallel, fpsync, fpsync4, manifest, rclone"
)]
pub struct UnknownTool(pub String);

/// Parses `--tools`: comma-separated names, duplicates dropped, vfxt always first (the others'
/// ratios are to it).
pub fn parse_tools(list: &str) -> Result<Vec<Tool>, UnknownTool> {
    let mut set = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let t = Tool::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| UnknownTool(name.to_owned()))?;
        set.insert(t);
    }
    if set.is_empty() {
        return Err(UnknownTool(list.to_owned()));
    }
    Ok(set.into_iter().collect())
}

/// Finds `program` on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

/// A shell recipe run by bash. Paths come through the environment (SRC, DEST, SCRATCH, and
/// WORKERS for the multi-client recipes), so none is pasted into a shell line.
fn bash(script: &str, src: &Path, dst: &Path, scratch: &Path) -> Command {
    let mut c = Command::new("bash");
    c.arg("-c")
        .arg(script)
        .env("SRC", src)
        .env("DEST", dst)
        .env("SCRATCH", scratch)
        .env("WORKERS", RUN_WORKERS.to_string());
    c
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_keeps_order_of_all_and_rejects_unknown_names() {
        assert_eq!(
            parse_tools("rclone, cp,vfxt,cp").unwrap(),
            vec![Tool::Vfxt, Tool::Cp, Tool::Rclone]
        );
        let all = Tool::ALL.map(Tool::name).join(",");
        assert_eq!(parse_tools(&all).unwrap(), Tool::ALL.to_vec());
        let e = parse_tools("cp,robocopy").unwrap_err();
        assert_eq!(e, UnknownTool("robocopy".into()));
        assert!(
            e.to_string()
                .contains("valid are vfxt, vfxt-base, vfxt-run, cp")
        );
        assert!(parse_tools(" , ").is_err());
    }

    #[test]
    fn promises_follow_each_tools_documented_options() {
        assert!(Tool::Cp.promises(true).contains(&Aspect::HardLink));
        assert!(!Tool::Rsync.promises(true).contains(&Aspect::HardLink));
        assert!(!Tool::Rsync.promises(true).contains(&Aspect::Sparse));
        assert!(Tool::Parallel.promises(true).is_empty());
        assert_eq!(Tool::Rclone.promises(false), [Aspect::Mtime].into());
        assert!(Tool::Vfxt.promises(true).contains(&Aspect::Owner));
        assert!(!Tool::Vfxt.promises(false).contains(&Aspect::Owner));
        // The IngestJob's default preserve leaves xattrs out; the manifest recipe loses the
        // directory times above its split depth.
        assert!(!Tool::VfxtRun.promises(true).contains(&Aspect::Xattr));
        assert!(Tool::VfxtRun.promises(true).contains(&Aspect::HardLink));
        assert!(!Tool::Manifest.promises(true).contains(&Aspect::DirMtime));
        assert_eq!(Tool::Fpsync4.promises(true), Tool::Fpsync.promises(true));
    }

    #[test]
    fn commands_name_source_and_destination() {
        let v = VfxtArgs {
            bin: "/x/vfxt-ingest".into(),
            extra: vec!["--threads".into(), "8".into()],
            baseline: Some("/old/vfxt-ingest".into()),
        };
        let (s, d, t) = (Path::new("/s"), Path::new("/d"), Path::new("/t"));
        let argv = |tool: Tool| {
            let c = tool.command(s, d, t, &v);
            std::iter::once(c.get_program())
                .chain(c.get_args())
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            argv(Tool::Vfxt),
            [
                "/x/vfxt-ingest",
                "copy",
                "/s",
                "/d",
                "--json",
                "--threads",
                "8"
            ]
        );
        assert_eq!(argv(Tool::VfxtBase)[..2], ["/old/vfxt-ingest", "copy"]);
        assert_eq!(argv(Tool::VfxtBase).len(), 7);
        assert_eq!(argv(Tool::Cp), ["cp", "-a", "/s/.", "/d"]);
        assert_eq!(
            argv(Tool::RsyncInplace),
            ["rsync", "-a", "--inplace", "/s/", "/d/"]
        );
        assert_eq!(
            argv(Tool::Fpsync),
            ["fpsync", "-n", "16", "-t", "/t", "/s/", "/d/"]
        );
        assert!(argv(Tool::Parallel)[2].contains("-j16 cp -P -- {} '\"$DEST\"'/{}"));
    }
}
