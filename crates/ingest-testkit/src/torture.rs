//! The differential torture test's inputs, all deterministic from one seed: a random tree with
//! every kind of entry and metadata item ([`random_tree`]), one or two faults for the engine's
//! fault hook ([`random_faults`]), changes made to the source and the destination between two
//! runs ([`random_mutations`]), and a snapshot of a tree's metadata and contents ([`snapshot`])
//! to prove that a run left its source alone.
//!
//! The test that uses them is `crates/vfxt-ingest/tests/torture.rs` (see this crate's `README.md`
//! for how to run it and the soak). Like [`crate::compare`], nothing here uses the
//! engine.
//!
//! A tree holds, at random places and with random names (control bytes, invalid UTF-8, names
//! near 255 bytes, newlines, leading `-`, spaces): regular files from empty to ~300 KiB (so
//! that a split threshold of 64 KiB splits some), sparse files, directories, symlinks (some
//! dangling), fifos, device nodes and owners (as root), sockets (in some seeds), hard links
//! inside the tree and to a path outside it (in `outside_dir`), hard-linked symlinks and fifos
//! (in some seeds), user xattrs, modes with setuid, setgid and sticky bits, and times with
//! nanoseconds, some before 1970.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};

use crate::rng::Rng;

const KIB: u64 = 1024;

/// What [`random_tree`] made. Paths are relative to the root, as raw bytes.
#[derive(Clone, Debug, Default)]
pub struct TreeInfo {
    pub seed: u64,
    /// Every name of a regular file (each name of a hard-linked file).
    pub files: Vec<Vec<u8>>,
    /// Every directory below the root.
    pub dirs: Vec<Vec<u8>>,
    pub symlinks: Vec<Vec<u8>>,
    /// Fifos and device nodes.
    pub specials: Vec<Vec<u8>>,
    pub sockets: Vec<Vec<u8>>,
    /// Names of regular files that have another name in the tree.
    pub linked_inside: Vec<Vec<u8>>,
    /// Names of regular files that also have a name in `outside_dir`.
    pub linked_outside: Vec<Vec<u8>>,
    /// Names of symlinks and fifos that share their inode with another name in the tree.
    pub linked_non_files: Vec<Vec<u8>>,
    /// Files larger than 64 KiB (split when the split threshold is 64 KiB).
    pub big_files: Vec<Vec<u8>>,
    pub sparse_files: Vec<Vec<u8>>,
    /// Entries below the root, every name counted.
    pub entries: usize,
    /// Apparent bytes of regular files, each inode once.
    pub bytes: u64,
}

fn io_ctx(op: &str, p: &Path) -> impl FnOnce(io::Error) -> io::Error {
    let what = format!("{op} {}", crate::compare::show_path(p));
    move |e| io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn errno_ctx(op: &str, p: &Path) -> impl FnOnce(rustix::io::Errno) -> io::Error {
    let f = io_ctx(op, p);
    move |e| f(e.into())
}

fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut r = parent.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name);
    r
}

fn abs(root: &Path, rel: &[u8]) -> PathBuf {
    if rel.is_empty() {
        root.to_owned()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}

fn set_times_at(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = |(s, ns): (i64, i64)| Timespec {
        tv_sec: s,
        tv_nsec: ns as _,
    };
    rustix::fs::utimensat(
        CWD,
        p,
        &Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(errno_ctx("set times of", p))
}

/// A time with a nanosecond part: mostly 2000–2030, some before 1970, some on a second.
fn draw_time(r: &mut Rng) -> (i64, i64) {
    let roll = r.range(0, 99);
    let ns = match r.range(0, 9) {
        0 => 0,
        1 => 1,
        2 => 999_999_999,
        _ => r.range(0, 999_999_999) as i64,
    };
    let sec = if roll < 12 {
        // 1901..1970
        -(r.range(1, 2_147_000_000) as i64)
    } else if roll < 14 {
        0
    } else {
        946_684_800 + r.range(0, 946_080_000) as i64
    };
    (sec, ns)
}

/// A name for an entry of `dir`: mostly plain, often odd, never `.`, `..`, or with `/` or NUL.
fn draw_name(r: &mut Rng, index: usize) -> Vec<u8> {
    let plain = format!("e{index:03}").into_bytes();
    let mut n = match r.range(0, 19) {
        0 => {
            // Control bytes 0x01-0x1f.
            let mut v = plain.clone();
            for _ in 0..r.range(1, 3) {
                let at = r.range(0, v.len() as u64) as usize;
                v.insert(at, r.range(1, 0x1f) as u8);
            }
            v
        }
        1 => {
            // Invalid UTF-8: a lone continuation byte, a cut sequence, 0xff.
            let bad: [&[u8]; 4] = [b"\xff", b"\xc3", b"\x80\x80", b"\xed\xa0\x80"];
            let mut v = plain.clone();
            v.extend_from_slice(bad[r.range(0, 3) as usize]);
            v
        }
        2 => {
            // Long: 240 to 255 bytes, sometimes with multi-byte characters inside.
            let len = r.range(240, 255) as usize;
            let mut v = plain.clone();
            v.push(b'-');
            while v.len() < len {
                if r.range(0, 9) == 0 && v.len() + 3 <= len {
                    v.extend_from_slice("é".as_bytes());
                    v.push(b'x');
                } else {
                    v.push(b'a' + r.range(0, 25) as u8);
                }
            }
            v.truncate(len);
            // Never end in a cut multi-byte sequence by accident: that would be fine for the
            // engine, but keep the byte count exact and the name readable.
            v
        }
        3 => [b"line\n".as_slice(), &plain].concat(),
        4 => [b"-".as_slice(), &plain].concat(),
        5 => [b"--".as_slice(), &plain, b" x"].concat(),
        6 => [b" ".as_slice(), &plain, b" "].concat(),
        7 => [plain.as_slice(), b" with  spaces"].concat(),
        8 => [plain.as_slice(), "-ünï-日本".as_bytes()].concat(),
        9 => [plain.as_slice(), b"\\back\\slash*?[x]'\"$HOME"].concat(),
        10 => [b".".as_slice(), &plain].concat(),
        _ => plain.clone(),
    };
    n.truncate(255);
    if n == b"." || n == b".." || n.is_empty() {
        n = plain;
    }
    n
}

/// A directory's path, mode, atime and mtime, set after its contents.
type DirMeta = (Vec<u8>, u32, (i64, i64), (i64, i64));

struct Gen<'a> {
    root: &'a Path,
    outside: &'a Path,
    r: Rng,
    is_root: bool,
    info: TreeInfo,
    /// Names used in each directory.
    names: BTreeMap<Vec<u8>, HashSet<Vec<u8>>>,
    /// Directories with the mode and times to set last, in creation order.
    dir_meta: Vec<DirMeta>,
    counter: usize,
}

const FILE_MODES: [u32; 12] = [
    0o644, 0o644, 0o644, 0o600, 0o755, 0o000, 0o444, 0o4755, 0o2755, 0o6711, 0o1644, 0o640,
];
const DIR_MODES: [u32; 8] = [0o755, 0o755, 0o755, 0o700, 0o1777, 0o2775, 0o555, 0o3770];
const IDS: [u32; 6] = [0, 1, 1000, 12345, 65534, 2_000_000_000];

impl Gen<'_> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        abs(self.root, rel)
    }

    /// A fresh name in `dir`.
    fn name_in(&mut self, dir: &[u8]) -> Vec<u8> {
        loop {
            self.counter += 1;
            let n = draw_name(&mut self.r, self.counter);
            let set = self.names.entry(dir.to_vec()).or_default();
            if set.insert(n.clone()) {
                return join(dir, &n);
            }
        }
    }

    fn pick_dir(&mut self) -> Vec<u8> {
        let i = self.r.range(0, self.info.dirs.len() as u64) as usize;
        if i == self.info.dirs.len() {
            Vec::new()
        } else {
            self.info.dirs[i].clone()
        }
    }

    /// Owner then mode (a chown clears setuid) then xattrs then times.
    fn finish_entry(&mut self, rel: &[u8], mode: Option<u32>, xattrs: bool) -> io::Result<()> {
        let p = self.path(rel);
        if self.is_root && self.r.range(0, 3) == 0 {
            let uid = IDS[self.r.range(0, IDS.len() as u64 - 1) as usize];
            let gid = IDS[self.r.range(0, IDS.len() as u64 - 1) as usize];
            rustix::fs::chownat(
                CWD,
                &p,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(errno_ctx("chown", &p))?;
        }
        if let Some(m) = mode {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).map_err(io_ctx("chmod", &p))?;
        }
        if xattrs && self.r.range(0, 6) == 0 {
            for i in 0..self.r.range(1, 3) {
                let len = match self.r.range(0, 3) {
                    0 => 0,
                    1 => self.r.range(1, 16),
                    _ => self.r.range(16, 300),
                } as usize;
                let mut v = vec![0u8; len];
                self.r.fill(&mut v);
                let name = format!("user.torture{i}");
                rustix::fs::lsetxattr(&p, &name, &v, XattrFlags::empty())
                    .map_err(errno_ctx("set xattr on", &p))?;
            }
        }
        let (a, m) = (draw_time(&mut self.r), draw_time(&mut self.r));
        set_times_at(&p, a, m)
    }

    fn dir(&mut self) -> io::Result<()> {
        let parent = self.pick_dir();
        // Keep depth modest so that long names stay below PATH_MAX.
        if parent.iter().filter(|&&b| b == b'/').count() >= 5 {
            return Ok(());
        }
        let rel = self.name_in(&parent);
        let p = self.path(&rel);
        fs::create_dir(&p).map_err(io_ctx("create directory", &p))?;
        let mode = DIR_MODES[self.r.range(0, DIR_MODES.len() as u64 - 1) as usize];
        // Owner and xattrs now; mode and times after its contents.
        self.finish_entry(&rel, None, true)?;
        let (a, m) = (draw_time(&mut self.r), draw_time(&mut self.r));
        self.dir_meta.push((rel.clone(), mode, a, m));
        self.info.dirs.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    fn file_data(&mut self, rel: &[u8], size: u64) -> io::Result<()> {
        let p = self.path(rel);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_ctx("create", &p))?;
        let mut buf = vec![0u8; size as usize];
        // Mostly random bytes; sometimes runs of zeros (not holes) and repeated blocks.
        self.r.fill(&mut buf);
        if size > 0 && self.r.range(0, 4) == 0 {
            let at = self.r.range(0, size - 1) as usize;
            let len = self.r.range(0, size - at as u64) as usize;
            buf[at..at + len].fill(0);
        }
        f.write_all(&buf).map_err(io_ctx("write", &p))?;
        self.info.bytes += size;
        Ok(())
    }

    fn regular(&mut self) -> io::Result<()> {
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let size = match self.r.range(0, 19) {
            0 | 1 => 0,
            2..=5 => self.r.range(64 * KIB - 2, 300 * KIB),
            6 => 64 * KIB + self.r.range(0, 1),
            _ => log_uniform(&mut self.r, 1, 64 * KIB),
        };
        self.file_data(&rel, size)?;
        let mode = FILE_MODES[self.r.range(0, FILE_MODES.len() as u64 - 1) as usize];
        self.finish_entry(&rel, Some(mode), true)?;
        if size > 64 * KIB {
            self.info.big_files.push(rel.clone());
        }
        self.info.files.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    fn sparse(&mut self) -> io::Result<()> {
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let p = self.path(&rel);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(io_ctx("create", &p))?;
        let size = self.r.range(256 * KIB, 3 * 1024 * KIB);
        for _ in 0..self.r.range(0, 4) {
            let off = self.r.range(0, size / 4096) * 4096;
            let len = self.r.range(1, 32 * KIB).min(size - off);
            let mut data = vec![0u8; len as usize];
            self.r.fill(&mut data);
            f.write_all_at(&data, off).map_err(io_ctx("write", &p))?;
        }
        f.set_len(size).map_err(io_ctx("set length of", &p))?;
        drop(f);
        self.info.bytes += size;
        self.finish_entry(&rel, Some(0o644), true)?;
        self.info.sparse_files.push(rel.clone());
        self.info.big_files.push(rel.clone());
        self.info.files.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    fn symlink(&mut self) -> io::Result<()> {
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let target: Vec<u8> = match self.r.range(0, 5) {
            0 => b"does/not/exist".to_vec(),
            1 => b"/nonexistent/absolute\xff".to_vec(),
            2 if !self.info.files.is_empty() => {
                // Absolute, to an existing file (must be copied as text, not followed); the
                // same for every root, so that trees compare equal.
                if self.r.range(0, 1) == 0 {
                    b"/etc/passwd".to_vec()
                } else {
                    let i = self.r.range(0, self.info.files.len() as u64 - 1) as usize;
                    [b"/".as_slice(), &self.info.files[i]].concat()
                }
            }
            3 => b"..".to_vec(),
            4 => {
                let mut v = vec![b'x'; self.r.range(1, 1000) as usize];
                v[0] = b'\n';
                v
            }
            _ => b"../sibling with space".to_vec(),
        };
        let p = self.path(&rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(&target), &p)
            .map_err(io_ctx("create symlink", &p))?;
        self.finish_entry(&rel, None, false)?;
        self.info.symlinks.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    fn special(&mut self) -> io::Result<()> {
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let p = self.path(&rel);
        let (kind, dev, mode) = match self.r.range(0, 3) {
            0 | 1 if self.is_root => {
                let k = if self.r.range(0, 1) == 0 {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                let dev =
                    rustix::fs::makedev(self.r.range(1, 260) as u32, self.r.range(0, 70000) as u32);
                (k, dev, 0o660)
            }
            _ => (
                FileType::Fifo,
                0,
                [0o640, 0o666, 0o600][self.r.range(0, 2) as usize],
            ),
        };
        rustix::fs::mknodat(CWD, &p, kind, Mode::from_raw_mode(mode), dev)
            .map_err(errno_ctx("create special file", &p))?;
        self.finish_entry(&rel, Some(mode), false)?;
        self.info.specials.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    /// A socket: bound by a listener that is then dropped (the socket file stays). Bound at a
    /// short name first (a socket address holds ~107 bytes), then renamed into place.
    fn socket(&mut self) -> io::Result<()> {
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let p = self.path(&rel);
        let short = self.root.join(".sock-tmp");
        if short.as_os_str().len() < 100 {
            let l = std::os::unix::net::UnixListener::bind(&short)
                .map_err(io_ctx("bind socket", &short))?;
            drop(l);
            fs::rename(&short, &p).map_err(io_ctx("rename socket to", &p))?;
        } else {
            rustix::fs::mknodat(CWD, &p, FileType::Socket, Mode::from_raw_mode(0o755), 0)
                .map_err(errno_ctx("create socket", &p))?;
        }
        self.finish_entry(&rel, Some(0o755), false)?;
        self.info.sockets.push(rel);
        self.info.entries += 1;
        Ok(())
    }

    /// Another name in the tree for a regular file (sometimes for a symlink or fifo).
    fn hard_link(&mut self, non_files: bool) -> io::Result<()> {
        let pool = if non_files && self.r.range(0, 1) == 0 {
            let mut v = self.info.symlinks.clone();
            v.extend(
                self.info
                    .specials
                    .iter()
                    .filter(|s| {
                        fs::symlink_metadata(self.path(s)).is_ok_and(|m| m.file_type().is_fifo())
                    })
                    .cloned(),
            );
            v
        } else {
            self.info.files.clone()
        };
        if pool.is_empty() {
            return Ok(());
        }
        let existing = pool[self.r.range(0, pool.len() as u64 - 1) as usize].clone();
        let dir = self.pick_dir();
        let rel = self.name_in(&dir);
        let p = self.path(&rel);
        fs::hard_link(self.path(&existing), &p).map_err(io_ctx("create hard link", &p))?;
        let m = fs::symlink_metadata(&p).map_err(io_ctx("stat", &p))?;
        if m.is_file() {
            for r in [&existing, &rel] {
                if !self.info.linked_inside.contains(r) {
                    self.info.linked_inside.push(r.clone());
                }
            }
            if self.info.big_files.contains(&existing) {
                self.info.big_files.push(rel.clone());
            }
            if self.info.sparse_files.contains(&existing) {
                self.info.sparse_files.push(rel.clone());
            }
            self.info.files.push(rel);
        } else {
            for r in [&existing, &rel] {
                if !self.info.linked_non_files.contains(r) {
                    self.info.linked_non_files.push(r.clone());
                }
            }
            if m.file_type().is_symlink() {
                self.info.symlinks.push(rel);
            } else {
                self.info.specials.push(rel);
            }
        }
        self.info.entries += 1;
        Ok(())
    }

    /// A name in `outside_dir` for a regular file of the tree.
    fn outside_link(&mut self) -> io::Result<()> {
        if self.info.files.is_empty() {
            return Ok(());
        }
        let i = self.r.range(0, self.info.files.len() as u64 - 1) as usize;
        let existing = self.info.files[i].clone();
        if self.info.linked_outside.contains(&existing) {
            return Ok(());
        }
        self.counter += 1;
        let p = self
            .outside
            .join(format!("outside-{}-{}", self.info.seed, self.counter));
        fs::hard_link(self.path(&existing), &p).map_err(io_ctx("create hard link", &p))?;
        self.info.linked_outside.push(existing);
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        // The root last: its own mode and times are part of the copy too.
        let (a, m) = (draw_time(&mut self.r), draw_time(&mut self.r));
        self.dir_meta.insert(0, (Vec::new(), 0o755, a, m));
        for (rel, mode, a, m) in std::mem::take(&mut self.dir_meta).into_iter().rev() {
            let p = self.path(&rel);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(io_ctx("chmod", &p))?;
            set_times_at(&p, a, m)?;
        }
        Ok(())
    }
}

use std::os::unix::fs::FileTypeExt;

/// Log-uniform size in `lo..=hi`.
fn log_uniform(r: &mut Rng, lo: u64, hi: u64) -> u64 {
    let (l, h) = (lo.max(1) as f64, hi as f64);
    ((l.ln() + r.unit() * (h.ln() - l.ln())).exp() as u64).clamp(lo, hi)
}

/// Writes a random tree of about 250–350 entries into `root` (created; must not exist or be
/// empty), with hard links from `outside_dir` (an existing directory on the same file system,
/// outside `root`) to some of its files. The same seed gives the same tree (names, kinds,
/// contents, modes, owners, xattrs, times), except that device nodes and owners are made only
/// when running as root.
pub fn random_tree(seed: u64, root: &Path, outside_dir: &Path) -> io::Result<TreeInfo> {
    fs::create_dir_all(root).map_err(io_ctx("create directory", root))?;
    if fs::read_dir(root)?.next().is_some() {
        return Err(io::Error::other(format!(
            "{} is not empty",
            crate::compare::show_path(root)
        )));
    }
    let mut g = Gen {
        root,
        outside: outside_dir,
        r: Rng::derive(seed, 0x7047_7572),
        is_root: rustix::process::geteuid().is_root(),
        info: TreeInfo {
            seed,
            ..TreeInfo::default()
        },
        names: BTreeMap::new(),
        dir_meta: Vec::new(),
        counter: 0,
    };
    let target = g.r.range(250, 350) as usize;
    let sockets = g.r.range(0, 2) == 0;
    let linked_non_files = g.r.range(0, 2) == 0;
    let n_dirs = g.r.range(target as u64 / 15, target as u64 / 6);
    for _ in 0..n_dirs {
        g.dir()?;
    }
    while g.info.entries < target {
        match g.r.range(0, 99) {
            0..=54 => g.regular()?,
            55..=58 => g.sparse()?,
            59..=70 => g.symlink()?,
            71..=77 => g.special()?,
            78..=79 if sockets => g.socket()?,
            80..=87 => g.hard_link(linked_non_files)?,
            88..=91 => g.outside_link()?,
            92..=94 => g.dir()?,
            _ => g.regular()?,
        }
    }
    // At least one of each kind of link the test cares about.
    if g.info.linked_outside.is_empty() {
        g.outside_link()?;
    }
    if g.info.linked_inside.is_empty() {
        g.hard_link(false)?;
    }
    g.finish()?;
    let mut info = g.info;
    info.files.sort();
    info.linked_inside.sort();
    info.linked_outside.sort();
    Ok(info)
}

/// The fault points and actions the torture test draws from.
pub const FAULT_KINDS: [&str; 8] = [
    "write@N=eio",
    "write@N..=enospc",
    "create@N=eacces",
    "close@N=eio",
    "set-meta@N=eio",
    "read@N=change-source",
    "open-source@N=vanish-source",
    "mkdir@N=eio",
];

/// One or two faults for `VFXT_INGEST_FAULTS`, with N drawn so that the fault usually falls
/// inside the run of a tree like `info` (operations are counted over all threads, so which
/// entry it strikes depends on scheduling unless the copy runs one thread).
pub fn random_faults(seed: u64, info: &TreeInfo) -> String {
    let mut r = Rng::derive(seed, 0xFA17);
    let files = info.files.len().max(1) as u64;
    let mut out: Vec<String> = Vec::new();
    let mut used = BTreeSet::new();
    for _ in 0..r.range(1, 2) {
        let k = r.range(0, FAULT_KINDS.len() as u64 - 1) as usize;
        if !used.insert(k) {
            continue;
        }
        let max = match k {
            7 => info.dirs.len().max(1) as u64,
            4 => info.entries.max(1) as u64,
            1 => files * 2,
            _ => files,
        };
        let n = r.range(1, max);
        out.push(FAULT_KINDS[k].replace("@N", &format!("@{n}")));
    }
    out.join(",")
}

/// A change made between the two runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mutation {
    /// New contents of the same size, then the old mtime back: only reading tells.
    SrcRewriteSameSizeMtime(Vec<u8>),
    SrcAppend(Vec<u8>),
    SrcDelete(Vec<u8>),
    /// A new name (second) for an existing regular file (first), made after the first run.
    SrcAddHardLink(Vec<u8>, Vec<u8>),
    /// Cut to a shorter length, mtime kept.
    DstTruncate(Vec<u8>),
    /// One byte changed, size and mtime kept.
    DstFlipByte(Vec<u8>),
    /// A file that is not in the source.
    DstAddExtraneous(Vec<u8>),
    DstRemove(Vec<u8>),
}

impl Mutation {
    /// Changes that leave the destination with an entry the source does not have, which the
    /// engine reports (as extraneous) rather than deletes.
    pub fn leaves_extraneous(&self) -> bool {
        matches!(self, Mutation::SrcDelete(_) | Mutation::DstAddExtraneous(_))
    }

    pub fn class(&self) -> &'static str {
        match self {
            Mutation::SrcRewriteSameSizeMtime(_) => "src-rewrite-same-size-mtime",
            Mutation::SrcAppend(_) => "src-append",
            Mutation::SrcDelete(_) => "src-delete",
            Mutation::SrcAddHardLink(..) => "src-add-hard-link",
            Mutation::DstTruncate(_) => "dst-truncate",
            Mutation::DstFlipByte(_) => "dst-flip-byte",
            Mutation::DstAddExtraneous(_) => "dst-add-extraneous",
            Mutation::DstRemove(_) => "dst-remove",
        }
    }

    /// The path the change is about.
    pub fn path(&self) -> &[u8] {
        match self {
            Mutation::SrcAddHardLink(_, p)
            | Mutation::SrcRewriteSameSizeMtime(p)
            | Mutation::SrcAppend(p)
            | Mutation::SrcDelete(p)
            | Mutation::DstTruncate(p)
            | Mutation::DstFlipByte(p)
            | Mutation::DstAddExtraneous(p)
            | Mutation::DstRemove(p) => p,
        }
    }
}

impl std::fmt::Display for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |p: &[u8]| ingest_path::escape(p, true);
        match self {
            Mutation::SrcAddHardLink(a, b) => {
                write!(f, "{} {} -> {}", self.class(), show(b), show(a))
            }
            m => write!(f, "{} {}", m.class(), show(m.path())),
        }
    }
}

/// Draws one to three changes (distinct paths) for the tree `info` describes, and makes them in
/// `src` and `dst`, skipping those whose entry is not there (a file the first run did not copy,
/// or one a fault removed from the source). Returns the changes made.
pub fn mutate(seed: u64, info: &TreeInfo, src: &Path, dst: &Path) -> io::Result<Vec<Mutation>> {
    let mut r = Rng::derive(seed, 0x3D7A);
    let mut done = Vec::new();
    let mut touched: HashSet<Vec<u8>> = HashSet::new();
    let is_regular =
        |root: &Path, rel: &[u8]| fs::symlink_metadata(abs(root, rel)).is_ok_and(|m| m.is_file());
    let n = r.range(1, 3);
    let mut tries = 0;
    while done.len() < n as usize && tries < 50 {
        tries += 1;
        if info.files.is_empty() {
            break;
        }
        let f = info.files[r.range(0, info.files.len() as u64 - 1) as usize].clone();
        if touched.contains(&f) {
            continue;
        }
        let class = r.range(0, 7);
        let m = match class {
            0..=3 if !is_regular(src, &f) => continue,
            4 | 5 | 7 if !is_regular(dst, &f) => continue,
            0 => {
                let p = abs(src, &f);
                let len = fs::symlink_metadata(&p)?.len();
                if len == 0 {
                    continue;
                }
                keeping_times(&p, || {
                    let mut buf = vec![0u8; len as usize];
                    r.fill(&mut buf);
                    // Make sure at least one byte changes.
                    let old = fs::read(&p)?;
                    if old == buf {
                        buf[0] ^= 1;
                    }
                    let file = OpenOptions::new().write(true).open(&p)?;
                    file.write_all_at(&buf, 0)
                })?;
                Mutation::SrcRewriteSameSizeMtime(f.clone())
            }
            1 => {
                let p = abs(src, &f);
                let mut file = OpenOptions::new().append(true).open(&p)?;
                let mut extra = vec![0u8; r.range(1, 100 * KIB) as usize];
                r.fill(&mut extra);
                file.write_all(&extra)?;
                Mutation::SrcAppend(f.clone())
            }
            2 => {
                fs::remove_file(abs(src, &f))?;
                Mutation::SrcDelete(f.clone())
            }
            3 => {
                let d = if info.dirs.is_empty() || r.range(0, 2) == 0 {
                    Vec::new()
                } else {
                    info.dirs[r.range(0, info.dirs.len() as u64 - 1) as usize].clone()
                };
                if !abs(src, &d).is_dir() {
                    continue;
                }
                let new = join(&d, format!("added-link-{seed}-{tries}").as_bytes());
                fs::hard_link(abs(src, &f), abs(src, &new))?;
                touched.insert(new.clone());
                Mutation::SrcAddHardLink(f.clone(), new)
            }
            4 => {
                let p = abs(dst, &f);
                let len = fs::symlink_metadata(&p)?.len();
                if len == 0 {
                    continue;
                }
                let to = r.range(0, len - 1);
                keeping_times(&p, || OpenOptions::new().write(true).open(&p)?.set_len(to))?;
                Mutation::DstTruncate(f.clone())
            }
            5 => {
                let p = abs(dst, &f);
                let len = fs::symlink_metadata(&p)?.len();
                if len == 0 {
                    continue;
                }
                let at = r.range(0, len - 1);
                keeping_times(&p, || {
                    let file = OpenOptions::new().read(true).write(true).open(&p)?;
                    let mut b = [0u8; 1];
                    file.read_exact_at(&mut b, at)?;
                    b[0] ^= 1 << r.range(0, 7);
                    file.write_all_at(&b, at)
                })?;
                Mutation::DstFlipByte(f.clone())
            }
            6 => {
                let parent = match f.iter().rposition(|&b| b == b'/') {
                    Some(i) => f[..i].to_vec(),
                    None => Vec::new(),
                };
                if !abs(dst, &parent).is_dir() {
                    continue;
                }
                let new = join(&parent, format!("extraneous-{seed}-{tries}").as_bytes());
                fs::write(abs(dst, &new), b"not in the source\n")?;
                Mutation::DstAddExtraneous(new)
            }
            _ => {
                fs::remove_file(abs(dst, &f))?;
                Mutation::DstRemove(f.clone())
            }
        };
        touched.insert(f);
        done.push(m);
    }
    Ok(done)
}

/// Runs `f` and puts the atime and mtime of `p` back.
fn keeping_times(p: &Path, f: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let m = fs::symlink_metadata(p)?;
    f()?;
    set_times_at(p, (m.atime(), m.atime_nsec()), (m.mtime(), m.mtime_nsec()))
}

/// One entry of a [`snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySnap {
    pub kind: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    /// Regular files and special files only: listing a directory or reading a symlink moves
    /// its atime, whoever does it.
    pub atime: Option<(i64, i64)>,
    pub link_target: Option<Vec<u8>>,
    /// FNV-1a of the contents, regular files only.
    pub content: Option<u64>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl EntrySnap {
    pub fn is_file(&self) -> bool {
        self.kind == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.kind == libc::S_IFDIR
    }
    pub fn is_socket(&self) -> bool {
        self.kind == libc::S_IFSOCK
    }
}

/// Everything about every entry below (and including) `root`, keyed by relative path, read
/// without moving file atimes.
pub fn snapshot(root: &Path) -> io::Result<BTreeMap<Vec<u8>, EntrySnap>> {
    let mut out = BTreeMap::new();
    snap_walk(root, Vec::new(), &mut out)?;
    Ok(out)
}

fn snap_walk(root: &Path, rel: Vec<u8>, out: &mut BTreeMap<Vec<u8>, EntrySnap>) -> io::Result<()> {
    let p = abs(root, &rel);
    let m = fs::symlink_metadata(&p).map_err(io_ctx("stat", &p))?;
    let t = m.file_type();
    let content = if t.is_file() {
        let mut f = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOATIME)
            .open(&p)
        {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => fs::File::open(&p),
            r => r,
        }
        .map_err(io_ctx("open", &p))?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            for &b in &buf[..n] {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
        Some(h)
    } else {
        None
    };
    let xattrs = if t.is_symlink() {
        BTreeMap::new()
    } else {
        crate::compare::user_xattrs(&p).map_err(io_ctx("read xattrs of", &p))?
    };
    out.insert(
        rel.clone(),
        EntrySnap {
            kind: m.mode() & libc::S_IFMT,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
            size: if t.is_dir() { 0 } else { m.len() },
            rdev: m.rdev(),
            ino: m.ino(),
            nlink: m.nlink(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            atime: (!t.is_dir() && !t.is_symlink()).then(|| (m.atime(), m.atime_nsec())),
            link_target: if t.is_symlink() {
                Some(fs::read_link(&p)?.into_os_string().into_encoded_bytes())
            } else {
                None
            },
            content,
            xattrs,
        },
    );
    if t.is_dir() {
        let mut names: Vec<_> = fs::read_dir(&p)
            .map_err(io_ctx("list", &p))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()?;
        names.sort();
        for n in names {
            snap_walk(root, join(&rel, n.as_bytes()), out)?;
        }
    }
    Ok(())
}

/// What changed between two snapshots: (path, what), in path order.
pub fn snapshot_diff(
    before: &BTreeMap<Vec<u8>, EntrySnap>,
    after: &BTreeMap<Vec<u8>, EntrySnap>,
) -> Vec<(Vec<u8>, String)> {
    let mut out = Vec::new();
    for (rel, b) in before {
        match after.get(rel) {
            None => out.push((rel.clone(), "removed".to_owned())),
            Some(a) if a != b => {
                let mut what = Vec::new();
                macro_rules! cmp {
                    ($f:ident) => {
                        if a.$f != b.$f {
                            what.push(format!("{} {:?} -> {:?}", stringify!($f), b.$f, a.$f));
                        }
                    };
                }
                cmp!(kind);
                cmp!(mode);
                cmp!(uid);
                cmp!(gid);
                cmp!(size);
                cmp!(rdev);
                cmp!(ino);
                cmp!(nlink);
                cmp!(mtime);
                cmp!(ctime);
                cmp!(atime);
                cmp!(link_target);
                cmp!(content);
                if a.xattrs != b.xattrs {
                    what.push("xattrs".to_owned());
                }
                out.push((rel.clone(), what.join(", ")));
            }
            Some(_) => {}
        }
    }
    for rel in after.keys().filter(|k| !before.contains_key(*k)) {
        out.push((rel.clone(), "added".to_owned()));
    }
    out
}
