//! The container launcher: `test-node-agent __exec --bind SRC=DST ... -- ARGV`.
//!
//! The agent starts this as a child; it enters a private mount namespace,
//! bind-mounts each volume's local directory at the container's mountPath (so
//! the program sees the paths a real pod would), then execs the program. It
//! must run single-threaded (before any runtime starts): `unshare(CLONE_NEWNS)`
//! fails in a process whose filesystem context is shared with other threads.

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use rustix::fs::{Mode, OFlags};

use rustix::mount::{MountFlags, MountPropagationFlags, mount_bind, mount_change, mount_remount};
use rustix::thread::{UnshareFlags, unshare_unsafe};

/// One bind mount: the local `source` appears at `target` inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub source: PathBuf,
    pub target: PathBuf,
    pub read_only: bool,
}

impl Bind {
    /// The `__exec` argument form: `--bind SRC=DST` or `--bind-ro SRC=DST`.
    pub fn to_args(&self) -> [String; 2] {
        let flag = if self.read_only {
            "--bind-ro"
        } else {
            "--bind"
        };
        [
            flag.into(),
            format!("{}={}", self.source.display(), self.target.display()),
        ]
    }

    pub fn parse(spec: &str, read_only: bool) -> Result<Bind, String> {
        let (s, t) = spec
            .split_once('=')
            .filter(|(s, t)| s.starts_with('/') && t.starts_with('/'))
            .ok_or_else(|| format!("bind '{spec}': expected /SOURCE=/TARGET"))?;
        Ok(Bind {
            source: s.into(),
            target: t.into(),
            read_only,
        })
    }
}

/// The identity a container's process runs as, from the pod's and the
/// container's securityContext (runAsUser, runAsGroup, supplementalGroups,
/// fsGroup), as a container runtime applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

impl Identity {
    /// The `__exec` argument form: `--user UID:GID[:G1,G2...]`.
    pub fn to_args(&self) -> [String; 2] {
        let mut v = format!("{}:{}", self.uid, self.gid);
        if !self.groups.is_empty() {
            let g: Vec<String> = self.groups.iter().map(u32::to_string).collect();
            v = format!("{v}:{}", g.join(","));
        }
        ["--user".into(), v]
    }

    pub fn parse(spec: &str) -> Result<Identity, String> {
        let bad = || format!("user '{spec}': expected UID:GID[:G1,G2...]");
        let mut parts = spec.splitn(3, ':');
        let num = |s: Option<&str>| s.and_then(|s| s.parse::<u32>().ok()).ok_or_else(bad);
        let uid = num(parts.next())?;
        let gid = num(parts.next())?;
        let groups = match parts.next() {
            None => Vec::new(),
            Some(g) => g
                .split(',')
                .map(|x| x.parse::<u32>().map_err(|_| bad()))
                .collect::<Result<_, _>>()?,
        };
        Ok(Identity { uid, gid, groups })
    }
}

/// The identity of container `c` of `pod`: the container's runAsUser and
/// runAsGroup over the pod's, the pod's supplementalGroups and fsGroup as
/// extra groups. None when nothing is set (the launcher's own, root): there
/// is no image whose USER could say otherwise.
pub fn container_identity(pod: &Pod, c: &Container) -> Option<Identity> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc
        .and_then(|s| s.run_as_user)
        .or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc
        .and_then(|s| s.run_as_group)
        .or_else(|| psc.and_then(|s| s.run_as_group));
    let mut groups: Vec<u32> = psc
        .into_iter()
        .flat_map(|s| s.supplemental_groups.iter().flatten().chain(&s.fs_group))
        .map(|g| *g as u32)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    if uid.is_none() && gid.is_none() && groups.is_empty() {
        return None;
    }
    Some(Identity {
        uid: uid.unwrap_or(0) as u32,
        gid: gid.unwrap_or(0) as u32,
        groups,
    })
}

/// What `__exec` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub binds: Vec<Bind>,
    pub workdir: Option<PathBuf>,
    pub user: Option<Identity>,
    pub argv: Vec<String>,
}

/// Parses `__exec`'s arguments (after the subcommand name).
pub fn parse_args(args: &[String]) -> Result<Launch, String> {
    let mut binds = Vec::new();
    let mut workdir = None;
    let mut user = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--bind" => binds.push(Bind::parse(&value()?, false)?),
            "--bind-ro" => binds.push(Bind::parse(&value()?, true)?),
            "--workdir" => workdir = Some(PathBuf::from(value()?)),
            "--user" => user = Some(Identity::parse(&value()?)?),
            "--" => {
                let argv: Vec<String> = it.cloned().collect();
                if argv.is_empty() {
                    return Err("no program after --".into());
                }
                return Ok(Launch {
                    binds,
                    workdir,
                    user,
                    argv,
                });
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Err("missing -- ARGV".into())
}

/// Mounts and execs; returns only on failure, with the reason.
pub fn exec(launch: Launch) -> String {
    let Launch {
        mut binds,
        workdir,
        user,
        argv,
    } = launch;
    // Found before mounting: a volume mounted over, say, /tmp would hide a
    // program that lives there (an --exec-override binary under /tmp).
    let program = resolve_program(&argv[0]);
    let mut held = None;
    // Held open too when the container runs as another uid: the program stands for the image's,
    // which any uid can run, but its path here (a build directory, say under a mode-0700
    // directory) may not be reachable for that uid.
    let shadowed = program
        .as_ref()
        .is_some_and(|p| binds.iter().any(|b| p.starts_with(&b.target)));
    if let Some(p) = &program
        && (shadowed || user.is_some())
    {
        match open_path(p) {
            Ok(fd) => held = Some(fd),
            Err(e) => return e,
        }
    }
    if !binds.is_empty()
        && let Err(e) = enter_namespace(&mut binds)
    {
        return e;
    }
    // A shadowed program runs through the fd opened before the mounts (kept
    // open across exec: the kernel re-opens scripts through it too).
    let path = match &held {
        Some(fd) => PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd())),
        None => PathBuf::from(&argv[0]),
    };
    // Identity last: the mounts above need root. Groups, then gid, then uid
    // (after setuid to a non-root uid the process may change none of them).
    // Per-thread calls are the process's here: the launcher is single-threaded.
    if let Some(id) = &user
        && let Err(e) = switch_identity(id)
    {
        return format!("run as {}:{}: {e}", id.uid, id.gid);
    }
    // Changing uid makes the process undumpable, which makes /proc/self/fd root's: the
    // held program would be out of reach. Nothing here needs that protection.
    if user.is_some()
        && let Err(e) =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
    {
        return format!("prctl(PR_SET_DUMPABLE): {e}");
    }
    let mut cmd = std::process::Command::new(&path);
    cmd.arg0(&argv[0]).args(&argv[1..]);
    if let Some(wd) = workdir {
        cmd.current_dir(wd);
    }
    let err = cmd.exec();
    format!(
        "exec {:?}: {err} (the program must be on PATH or an absolute path)",
        argv[0]
    )
}

fn switch_identity(id: &Identity) -> rustix::io::Result<()> {
    use rustix::thread::{Gid, Uid, set_thread_gid, set_thread_groups, set_thread_uid};
    let groups: Vec<Gid> = id.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    set_thread_groups(&groups)?;
    set_thread_gid(Gid::from_raw(id.gid))?;
    set_thread_uid(Uid::from_raw(id.uid))
}

/// The file `prog` names: itself when it has a slash, else the first
/// executable of that name on PATH, as execvp would pick it.
fn resolve_program(prog: &str) -> Option<PathBuf> {
    if prog.contains('/') {
        return Some(PathBuf::from(prog));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// An O_PATH descriptor (not close-on-exec) that keeps `p` reachable after
/// mounts hide its path.
fn open_path(p: &Path) -> Result<OwnedFd, String> {
    rustix::fs::open(p, OFlags::PATH, Mode::empty())
        .map_err(|e| format!("open {}: {e}", p.display()))
}

fn enter_namespace(binds: &mut [Bind]) -> Result<(), String> {
    // SAFETY: called from the single-threaded launcher before exec; no other
    // thread shares (or relies on) this process's mount namespace.
    unsafe { unshare_unsafe(UnshareFlags::NEWNS) }.map_err(|e| {
        format!("unshare(CLONE_NEWNS): {e} (the agent needs CAP_SYS_ADMIN, e.g. root)")
    })?;
    // Private, so nothing mounted here shows up on the host.
    mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("make / private: {e}"))?;
    // Parents before children, so /out/sub lands inside the /out mount.
    binds.sort_by_key(|b| b.target.components().count());
    // Every source is opened before the first mount: a volume mounted at
    // /tmp would otherwise hide the sources that live in a pod dir under /tmp.
    let sources = binds
        .iter()
        .map(|b| {
            let fd = rustix::fs::open(&b.source, OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| format!("open bind source {}: {e}", b.source.display()))?;
            Ok((fd, b.source.is_dir()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    for (b, (fd, is_dir)) in binds.iter().zip(&sources) {
        make_target(*is_dir, &b.target)?;
        mount_bind(format!("/proc/self/fd/{}", fd.as_raw_fd()), &b.target)
            .map_err(|e| format!("bind {} at {}: {e}", b.source.display(), b.target.display()))?;
        if b.read_only {
            mount_remount(&b.target, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(|e| format!("remount {} read-only: {e}", b.target.display()))?;
        }
    }
    Ok(())
}

/// A bind mount needs an existing target of the same kind (dir or file).
/// Missing ones are created (on the host's filesystem: mount points only).
fn make_target(is_dir: bool, target: &Path) -> Result<(), String> {
    if target.exists() {
        return Ok(());
    }
    let fail = |e: std::io::Error| format!("create mount point {}: {e}", target.display());
    if is_dir {
        std::fs::create_dir_all(target).map_err(fail)
    } else {
        if let Some(p) = target.parent() {
            std::fs::create_dir_all(p).map_err(fail)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(target)
            .map(drop)
            .map_err(fail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_takes_the_container_over_the_pod() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {
                "securityContext": {"runAsUser": 7, "runAsGroup": 8, "supplementalGroups": [30, 20], "fsGroup": 20},
                "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000}}],
            }
        }))
        .unwrap();
        let cs = &pod.spec.as_ref().unwrap().containers;
        let want = |uid| Identity {
            uid,
            gid: 8,
            groups: vec![20, 30],
        };
        assert_eq!(container_identity(&pod, &cs[0]), Some(want(7)));
        assert_eq!(container_identity(&pod, &cs[1]), Some(want(1000)));
        let bare: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "a"}]}}))
                .unwrap();
        assert_eq!(
            container_identity(&bare, &bare.spec.as_ref().unwrap().containers[0]),
            None
        );
    }

    #[test]
    fn args_round_trip() {
        let b = Bind {
            source: "/a/b".into(),
            target: "/out".into(),
            read_only: true,
        };
        let mut args: Vec<String> = b.to_args().to_vec();
        let id = Identity {
            uid: 1000,
            gid: 2000,
            groups: vec![3, 4],
        };
        args.extend(id.to_args());
        args.extend(["--workdir", "/w", "--", "sh", "-c", "x"].map(String::from));
        let l = parse_args(&args).unwrap();
        assert_eq!(l.binds, vec![b]);
        assert_eq!(l.user, Some(id));
        assert_eq!(
            Identity::parse("5:6").unwrap(),
            Identity {
                uid: 5,
                gid: 6,
                groups: vec![]
            }
        );
        assert!(Identity::parse("5").unwrap_err().contains("UID:GID"));
        assert!(Identity::parse("a:6").is_err());
        assert_eq!(l.workdir, Some(PathBuf::from("/w")));
        assert_eq!(l.argv, ["sh", "-c", "x"]);
        assert!(
            parse_args(&["--bind".into(), "rel=/x".into()])
                .unwrap_err()
                .contains("expected /SOURCE=/TARGET")
        );
        assert_eq!(
            parse_args(&["--".into()]).unwrap_err(),
            "no program after --"
        );
    }
}
