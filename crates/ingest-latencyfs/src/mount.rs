//! Starting and stopping emulated nodes, and never leaving a mount behind.
//!
//! A FUSE mount whose daemon is gone stays in the mount table and answers "transport endpoint
//! is not connected" until someone unmounts it. So every mount is unmounted when its [`Node`] is
//! dropped, and [`unmount_all_on_signal`] unmounts whatever is still mounted on Ctrl-C.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::fs::{LatencyFs, NodeConfig, Stats, StatsSnapshot};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error(
        "mount {}: fusermount3 not found; install Debian's fuse3 package (apt-get install fuse3)",
        .0.display()
    )]
    NoFusermount(PathBuf),
    #[error("mount {}: {}", .0.display(), .1)]
    Mount(PathBuf, io::Error),
    #[error("backing directory {}: {}", .0.display(), .1)]
    Backing(PathBuf, io::Error),
    #[error("capacity: must be at least 1 (operations served at once)")]
    NoCapacity,
}

/// Mount points currently mounted by this process, for the signal handler.
static MOUNTED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The process group of the tool being timed (0: none), for the signal handler.
static RUNNING_GROUP: AtomicI32 = AtomicI32::new(0);

/// Records the process group the signal handler stops before unmounting (see
/// [`unmount_all_on_signal`]); 0 when nothing runs.
pub fn set_running_group(pgid: i32) {
    RUNNING_GROUP.store(pgid, Ordering::SeqCst);
}

/// One emulated cluster node: a mount of the backing directory.
pub struct Node {
    session: Option<BackgroundSession>,
    mountpoint: PathBuf,
    stats: Arc<Stats>,
    config: NodeConfig,
}

/// Session threads beyond the service slots: requests past the capacity wait inside the file
/// system, where they are counted, rather than unseen in the kernel's queue.
const EXTRA_THREADS: usize = 16;

impl Node {
    /// Mounts `backing` at `mountpoint` (created if missing) as a node with `config`.
    pub fn mount(
        backing: &Path,
        mountpoint: &Path,
        config: NodeConfig,
    ) -> Result<Node, MountError> {
        if config.capacity == 0 {
            return Err(MountError::NoCapacity);
        }
        if which("fusermount3").is_none() {
            return Err(MountError::NoFusermount(mountpoint.to_path_buf()));
        }
        std::fs::create_dir_all(mountpoint)
            .map_err(|e| MountError::Mount(mountpoint.to_path_buf(), e))?;
        let stats = Arc::new(Stats::default());
        let fs = LatencyFs::new(backing, config, stats.clone())
            .map_err(|e| MountError::Backing(backing.to_path_buf(), e))?;
        let mut cfg = Config::default();
        cfg.mount_options = vec![
            MountOption::FSName("latencyfs".into()),
            MountOption::Subtype("latencyfs".into()),
            // The kernel checks each caller's uid against the modes, as an NFS server does for
            // AUTH_SYS: a worker running as uid 1000 gets EACCES on a mode-000 directory, as it
            // would on the real export.
            MountOption::DefaultPermissions,
        ];
        // Any uid may use the mount (allow_other), as any uid may use an NFS mount.
        cfg.acl = SessionACL::All;
        cfg.n_threads = Some(config.capacity + EXTRA_THREADS);
        cfg.clone_fd = true;
        let session = fuser::spawn_mount(fs, mountpoint, &cfg)
            .map_err(|e| MountError::Mount(mountpoint.to_path_buf(), e))?;
        MOUNTED.lock().unwrap().push(mountpoint.to_path_buf());
        Ok(Node {
            session: Some(session),
            mountpoint: mountpoint.to_path_buf(),
            stats,
            config,
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn config(&self) -> NodeConfig {
        self.config
    }

    /// The node's live counters (to watch them from another thread).
    pub fn stats_handle(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// What this node served so far.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }

    /// Unmounts and waits for the session to end.
    pub fn unmount(mut self) -> io::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> io::Result<()> {
        let Some(s) = self.session.take() else {
            return Ok(());
        };
        MOUNTED.lock().unwrap().retain(|p| p != &self.mountpoint);
        // Requests held by a node that stopped answering would keep their session threads, and
        // the join below, waiting for ever.
        self.stats.release_held();
        // A forced unmount first aborts the FUSE connection (the kernel's umount_begin), which
        // ends every session thread's read; the session's own unmount-then-join could wait
        // for ever when its check for "still mounted" misjudged the device (seen under load).
        let c = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: valid C string.
        let forced = unsafe { libc::umount2(c.as_ptr(), libc::MNT_FORCE) } == 0;
        if !forced {
            // Busy (a process still has a file open there): detach it; the abort above still
            // happened, so the session ends either way.
            // SAFETY: valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        s.join()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!(
                "warning: unmount {}: {e}; trying a lazy unmount",
                self.mountpoint.display()
            );
            lazy_unmount(&self.mountpoint);
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// The emulated cluster's own storage for one run: a tmpfs over the backing directory.
///
/// A real cache cluster does its file system work on its own CPUs and memory. Over a directory
/// on this machine's disk, that work (ext4's journal, inode allocation that slows after the
/// previous run's deletes) would run on the client's two cores and make runs depend on what
/// ran before. Unmounted (lazily, so an open file cannot keep it) when dropped.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts an empty tmpfs at `path` (an existing directory); needs root.
    pub fn mount(path: &Path) -> Result<Tmpfs, MountError> {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| MountError::Backing(path.to_path_buf(), io::Error::other(e)))?;
        // SAFETY: valid C strings; no data argument.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                c.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(MountError::Backing(
                path.to_path_buf(),
                io::Error::last_os_error(),
            ));
        }
        MOUNTED.lock().unwrap().push(path.to_path_buf());
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        MOUNTED.lock().unwrap().retain(|p| p != &self.path);
        lazy_unmount(&self.path);
    }
}

/// Detaches the mount at `p`: directly as root, else through fusermount3 (a FUSE mount).
fn lazy_unmount(p: &Path) {
    if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
        // SAFETY: valid C string.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            return;
        }
    }
    let _ = Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(p)
        .status();
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread and every thread started after it, and
/// starts a thread that, on any of them, stops the tool being timed (its process group, see
/// [`set_running_group`]), unmounts every mounted node and exits with 130.
///
/// Call it first thing in `main`, before any other thread exists (a thread started before keeps
/// the default action and would let the process die with mounts left behind). The tool runs in
/// a process group of its own, which a signal sent to this process alone (`kill`, a CI timeout)
/// would not reach: left running, `parallel` went on writing into the unmounted directories.
pub fn unmount_all_on_signal() {
    // SAFETY: plain libc signal-set manipulation on a local sigset_t.
    let set = unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is a valid, initialized signal set; `sig` receives the signal number.
        unsafe { libc::sigwait(&set, &mut sig) };
        let group = RUNNING_GROUP.load(Ordering::SeqCst);
        if group > 0 {
            // SAFETY: kill takes plain integers; a group that is already gone gives ESRCH.
            unsafe { libc::kill(-group, libc::SIGKILL) };
        }
        let mounted = MOUNTED.lock().unwrap().clone();
        eprintln!(
            "interrupted: unmounting {} emulated node(s) and backing file systems",
            mounted.len()
        );
        for p in &mounted {
            lazy_unmount(p);
        }
        std::process::exit(130);
    });
}
