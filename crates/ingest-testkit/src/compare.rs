//! An independent recursive comparison of two trees, written with `std::fs` and
//! `symlink_metadata` only, so that a bug in the engine's own walk or verify pass cannot hide
//! itself in the tests that judge it.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

/// One thing that can differ between a source entry and its copy. Checks are grouped this
/// way so that a benchmark can ask which of them a peer tool is supposed to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Aspect {
    /// In the source, not in the destination.
    Missing,
    /// In the destination, not in the source.
    Extra,
    /// Different kind of entry (or device number).
    Type,
    Size,
    Content,
    /// Permission bits including setuid, setgid and sticky.
    Mode,
    Owner,
    /// Mtime of regular files and special files, to the nanosecond.
    Mtime,
    DirMtime,
    SymlinkMtime,
    Atime,
    SymlinkTarget,
    /// User extended attributes (`user.*`).
    Xattr,
    /// Names that share an inode in the source must share one in the destination, and only
    /// those; and no destination entry may share its inode with a path outside the destination
    /// tree (writing it in place would change that other path). Every kind but directories.
    HardLink,
    /// A sparse source file's copy must not allocate much more than the source does.
    Sparse,
    /// The comparison itself could not read something.
    Error,
}

impl Aspect {
    pub fn name(self) -> &'static str {
        match self {
            Aspect::Missing => "missing",
            Aspect::Extra => "extra",
            Aspect::Type => "type",
            Aspect::Size => "size",
            Aspect::Content => "content",
            Aspect::Mode => "mode",
            Aspect::Owner => "owner",
            Aspect::Mtime => "mtime",
            Aspect::DirMtime => "dir_mtime",
            Aspect::SymlinkMtime => "symlink_mtime",
            Aspect::Atime => "atime",
            Aspect::SymlinkTarget => "symlink_target",
            Aspect::Xattr => "xattr",
            Aspect::HardLink => "hard_link",
            Aspect::Sparse => "sparse",
            Aspect::Error => "error",
        }
    }

    /// Aspects every copy must get right whatever it promises: what is there and what is in it.
    pub fn is_basic(self) -> bool {
        matches!(
            self,
            Aspect::Missing
                | Aspect::Extra
                | Aspect::Type
                | Aspect::Size
                | Aspect::Content
                | Aspect::Error
        )
    }
}

impl std::fmt::Display for Aspect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which optional aspects to check. Missing, extra, type, size, symlink targets and read errors
/// are always checked; `content` is a full byte comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompareOptions {
    pub content: bool,
    pub mode: bool,
    pub owner: bool,
    pub mtime: bool,
    pub dir_mtime: bool,
    pub symlink_mtime: bool,
    pub atime: bool,
    pub xattrs: bool,
    pub hard_links: bool,
    pub sparse: bool,
    /// Compare the two roots' own metadata too (a copy into an existing directory may not own
    /// its root's mode and times).
    pub root_metadata: bool,
}

impl CompareOptions {
    /// Everything a faithful copy keeps, except atime (every reader without `O_NOATIME` moves
    /// it) and owner (only root can keep it; turn on when running as root).
    pub fn all() -> Self {
        CompareOptions {
            content: true,
            mode: true,
            owner: false,
            mtime: true,
            dir_mtime: true,
            symlink_mtime: true,
            atime: false,
            xattrs: true,
            hard_links: true,
            sparse: true,
            root_metadata: true,
        }
    }

    /// Only names, kinds, sizes, contents and symlink targets.
    pub fn content_only() -> Self {
        CompareOptions {
            content: true,
            mode: false,
            owner: false,
            mtime: false,
            dir_mtime: false,
            symlink_mtime: false,
            atime: false,
            xattrs: false,
            hard_links: false,
            sparse: false,
            root_metadata: false,
        }
    }

    fn checks(&self, a: Aspect) -> bool {
        match a {
            Aspect::Content => self.content,
            Aspect::Mode => self.mode,
            Aspect::Owner => self.owner,
            Aspect::Mtime => self.mtime,
            Aspect::DirMtime => self.dir_mtime,
            Aspect::SymlinkMtime => self.symlink_mtime,
            Aspect::Atime => self.atime,
            Aspect::Xattr => self.xattrs,
            Aspect::HardLink => self.hard_links,
            Aspect::Sparse => self.sparse,
            Aspect::Missing
            | Aspect::Extra
            | Aspect::Type
            | Aspect::Size
            | Aspect::SymlinkTarget
            | Aspect::Error => true,
        }
    }
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self::all()
    }
}

/// One difference: the path relative to the roots (escaped: `\xNN` for bytes that are not
/// UTF-8, `\n` for a newline, `.` for the root), what differs, and how.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub path: String,
    pub aspect: Aspect,
    pub detail: String,
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.aspect, self.detail)
    }
}

/// Compares the tree at `dst` with the tree at `src`. Every difference is a value, including a
/// failure to read either side; the list is in walk order (names sorted bytewise).
pub fn compare(src: &Path, dst: &Path, opts: &CompareOptions) -> Vec<Difference> {
    let mut w = Walk {
        opts,
        out: Vec::new(),
        links: Vec::new(),
        dst_inodes: HashMap::new(),
        buf_a: vec![0; BUF],
        buf_b: vec![0; BUF],
    };
    match (fs::symlink_metadata(src), fs::symlink_metadata(dst)) {
        (Ok(s), Ok(d)) => {
            if !s.is_dir() || !d.is_dir() {
                w.push(
                    &[],
                    Aspect::Type,
                    format!(
                        "roots must be directories: source {}, destination {}",
                        kind(&s),
                        kind(&d)
                    ),
                );
            } else {
                if opts.root_metadata {
                    w.entry_metadata(&[], src, dst, &s, &d);
                }
                w.dir(&mut Vec::new(), src, dst);
            }
        }
        (s, d) => {
            for (side, r) in [("source", s), ("destination", d)] {
                if let Err(e) = r {
                    w.push(&[], Aspect::Error, format!("cannot stat {side} root: {e}"));
                }
            }
        }
    }
    w.check_links();
    w.out
}

const BUF: usize = 256 * 1024;

/// (device, inode) of a name.
type InodeKey = (u64, u64);

struct Walk<'a> {
    opts: &'a CompareOptions,
    out: Vec<Difference>,
    /// Non-directories linked more than once on either side: (path, source inode, destination inode).
    links: Vec<(Vec<u8>, InodeKey, InodeKey)>,
    /// Destination non-directories linked more than once: inode -> (link count, names seen in
    /// the destination tree, first name seen).
    dst_inodes: HashMap<InodeKey, (u64, u64, Vec<u8>)>,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
}

/// A relative path as differences show it: escaped, `.` for the root.
pub fn show(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_owned()
    } else {
        ingest_path::escape(rel, true)
    }
}

/// A path for messages: escaped like the differences' paths.
pub fn show_path(p: &Path) -> String {
    ingest_path::escape(p.as_os_str().as_bytes(), true)
}

/// The raw bytes of a difference's path (the reverse of its escaping; `.` is the root).
pub fn path_bytes(shown: &str) -> Vec<u8> {
    if shown == "." {
        Vec::new()
    } else {
        ingest_path::unescape(shown).unwrap_or_else(|_| shown.as_bytes().to_vec())
    }
}

fn kind(m: &Metadata) -> String {
    let t = m.file_type();
    let (maj, min) = (libc::major(m.rdev()), libc::minor(m.rdev()));
    if t.is_dir() {
        "directory".into()
    } else if t.is_symlink() {
        "symlink".into()
    } else if t.is_file() {
        "regular file".into()
    } else if t.is_fifo() {
        "fifo".into()
    } else if t.is_socket() {
        "socket".into()
    } else if t.is_char_device() {
        format!("char device {maj}:{min}")
    } else if t.is_block_device() {
        format!("block device {maj}:{min}")
    } else {
        "unknown kind".into()
    }
}

fn list(dir: &Path) -> io::Result<Vec<OsString>> {
    let mut names = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<Vec<_>>>()?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

fn ns(sec: i64, nsec: i64) -> String {
    format!("{sec}.{nsec:09}")
}

impl Walk<'_> {
    fn push(&mut self, rel: &[u8], aspect: Aspect, detail: String) {
        if self.opts.checks(aspect) {
            self.out.push(Difference {
                path: show(rel),
                aspect,
                detail,
            });
        }
    }

    fn dir(&mut self, rel: &mut Vec<u8>, src: &Path, dst: &Path) {
        let (s_names, d_names) = match (list(src), list(dst)) {
            (Ok(s), Ok(d)) => (s, d),
            (s, d) => {
                for (side, r) in [("source", s), ("destination", d)] {
                    if let Err(e) = r {
                        self.push(
                            rel,
                            Aspect::Error,
                            format!("cannot list {side} directory: {e}"),
                        );
                    }
                }
                return;
            }
        };
        let d_set: BTreeMap<&[u8], ()> = d_names.iter().map(|n| (n.as_bytes(), ())).collect();
        let s_set: BTreeMap<&[u8], ()> = s_names.iter().map(|n| (n.as_bytes(), ())).collect();
        let base = rel.len();
        for name in &s_names {
            if !rel.is_empty() {
                rel.push(b'/');
            }
            rel.extend_from_slice(name.as_bytes());
            let (sp, dp) = (src.join(name), dst.join(name));
            if d_set.contains_key(name.as_bytes()) {
                self.entry(rel, &sp, &dp);
            } else {
                let what = fs::symlink_metadata(&sp)
                    .map(|m| kind(&m))
                    .unwrap_or_else(|e| format!("unreadable: {e}"));
                self.push(
                    rel,
                    Aspect::Missing,
                    format!("source {what} not in destination"),
                );
            }
            rel.truncate(base);
        }
        for name in d_names.iter().filter(|n| !s_set.contains_key(n.as_bytes())) {
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(name.as_bytes());
            let what = match fs::symlink_metadata(dst.join(name)) {
                Ok(m) => {
                    self.note_extra(&r, &dst.join(name), &m);
                    kind(&m)
                }
                Err(e) => format!("unreadable: {e}"),
            };
            self.push(
                &r,
                Aspect::Extra,
                format!("destination {what} not in source"),
            );
        }
    }

    fn entry(&mut self, rel: &mut Vec<u8>, sp: &Path, dp: &Path) {
        let (s, d) = match (fs::symlink_metadata(sp), fs::symlink_metadata(dp)) {
            (Ok(s), Ok(d)) => (s, d),
            (s, d) => {
                for (side, r) in [("source", s), ("destination", d)] {
                    if let Err(e) = r {
                        self.push(rel, Aspect::Error, format!("cannot stat {side}: {e}"));
                    }
                }
                return;
            }
        };
        self.note_dst(rel, &d);
        let (sk, dk) = (kind(&s), kind(&d));
        if sk != dk {
            self.push(
                rel,
                Aspect::Type,
                format!("source is a {sk}, destination a {dk}"),
            );
            return;
        }
        self.entry_metadata(rel, sp, dp, &s, &d);
        let t = s.file_type();
        if !t.is_dir() && (s.nlink() > 1 || d.nlink() > 1) {
            self.links
                .push((rel.to_vec(), (s.dev(), s.ino()), (d.dev(), d.ino())));
        }
        if t.is_dir() {
            self.dir(rel, sp, dp);
        } else if t.is_symlink() {
            match (fs::read_link(sp), fs::read_link(dp)) {
                (Ok(a), Ok(b)) if a == b => {}
                (Ok(a), Ok(b)) => self.push(
                    rel,
                    Aspect::SymlinkTarget,
                    format!(
                        "source -> {}, destination -> {}",
                        show(a.as_os_str().as_bytes()),
                        show(b.as_os_str().as_bytes())
                    ),
                ),
                (a, b) => {
                    let e = a
                        .err()
                        .or(b.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    self.push(rel, Aspect::Error, format!("cannot read symlink: {e}"));
                }
            }
        } else if t.is_file() {
            self.regular(rel, sp, dp, &s, &d);
        }
    }

    /// Metadata shared by every kind: mode, owner, times, xattrs.
    fn entry_metadata(&mut self, rel: &[u8], sp: &Path, dp: &Path, s: &Metadata, d: &Metadata) {
        let t = s.file_type();
        if !t.is_symlink() && s.mode() & 0o7777 != d.mode() & 0o7777 {
            self.push(
                rel,
                Aspect::Mode,
                format!(
                    "source {:04o}, destination {:04o}",
                    s.mode() & 0o7777,
                    d.mode() & 0o7777
                ),
            );
        }
        if (s.uid(), s.gid()) != (d.uid(), d.gid()) {
            self.push(
                rel,
                Aspect::Owner,
                format!(
                    "source {}:{}, destination {}:{}",
                    s.uid(),
                    s.gid(),
                    d.uid(),
                    d.gid()
                ),
            );
        }
        let mtime_aspect = if t.is_dir() {
            Aspect::DirMtime
        } else if t.is_symlink() {
            Aspect::SymlinkMtime
        } else {
            Aspect::Mtime
        };
        if (s.mtime(), s.mtime_nsec()) != (d.mtime(), d.mtime_nsec()) {
            self.push(
                rel,
                mtime_aspect,
                format!(
                    "source {}, destination {}",
                    ns(s.mtime(), s.mtime_nsec()),
                    ns(d.mtime(), d.mtime_nsec())
                ),
            );
        }
        // Directories and symlinks are left out: listing a directory or reading a link
        // (`readlink` has no O_NOATIME) moves its atime under relatime, so the comparison
        // itself would make the difference it then reports.
        if !t.is_dir()
            && !t.is_symlink()
            && (s.atime(), s.atime_nsec()) != (d.atime(), d.atime_nsec())
        {
            self.push(
                rel,
                Aspect::Atime,
                format!(
                    "source {}, destination {}",
                    ns(s.atime(), s.atime_nsec()),
                    ns(d.atime(), d.atime_nsec())
                ),
            );
        }
        if self.opts.xattrs && !t.is_symlink() {
            match (user_xattrs(sp), user_xattrs(dp)) {
                (Ok(a), Ok(b)) => {
                    if a != b {
                        self.push(rel, Aspect::Xattr, xattr_diff(&a, &b));
                    }
                }
                (a, b) => {
                    let e = a
                        .err()
                        .or(b.err())
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    self.push(rel, Aspect::Error, format!("cannot read xattrs: {e}"));
                }
            }
        }
    }

    fn regular(&mut self, rel: &[u8], sp: &Path, dp: &Path, s: &Metadata, d: &Metadata) {
        if s.len() != d.len() {
            self.push(
                rel,
                Aspect::Size,
                format!("source {} bytes, destination {} bytes", s.len(), d.len()),
            );
            return;
        }
        if self.opts.content {
            match self.first_difference(sp, dp) {
                Ok(None) => {}
                Ok(Some(at)) => self.push(
                    rel,
                    Aspect::Content,
                    format!("first differing byte at offset {at}"),
                ),
                Err(e) => self.push(rel, Aspect::Error, format!("cannot read contents: {e}")),
            }
        }
        // Holes: the source allocates less than its length; the copy may round up to blocks
        // but must not fill in most of the holes.
        let (s_alloc, d_alloc) = (s.blocks() * 512, d.blocks() * 512);
        let holes = s.len().saturating_sub(s_alloc);
        if holes >= 1 << 20 && d_alloc > s_alloc + (s_alloc / 4).max(holes / 2) {
            self.push(
                rel,
                Aspect::Sparse,
                format!(
                    "source allocates {s_alloc} of {} bytes, destination {d_alloc}",
                    s.len()
                ),
            );
        }
    }

    /// Offset of the first differing byte, reading both sides without moving their atimes.
    fn first_difference(&mut self, sp: &Path, dp: &Path) -> io::Result<Option<u64>> {
        let (mut a, mut b) = (open_noatime(sp)?, open_noatime(dp)?);
        let mut off = 0u64;
        loop {
            let n = read_full(&mut a, &mut self.buf_a)?;
            let m = read_full(&mut b, &mut self.buf_b)?;
            if let Some(i) = self.buf_a[..n.min(m)]
                .iter()
                .zip(&self.buf_b[..n.min(m)])
                .position(|(x, y)| x != y)
            {
                return Ok(Some(off + i as u64));
            }
            if n != m {
                // One side changed length while being read.
                return Ok(Some(off + n.min(m) as u64));
            }
            if n == 0 {
                return Ok(None);
            }
            off += n as u64;
        }
    }

    /// Counts a destination name of a multi-linked non-directory.
    fn note_dst(&mut self, rel: &[u8], d: &Metadata) {
        if !d.is_dir() && d.nlink() > 1 {
            let e = self
                .dst_inodes
                .entry((d.dev(), d.ino()))
                .or_insert_with(|| (d.nlink(), 0, rel.to_vec()));
            e.1 += 1;
        }
    }

    /// Counts the names of an extra destination entry (and of everything below an extra
    /// directory), so that a link between an extra name and a compared one is not taken for a
    /// link out of the tree.
    fn note_extra(&mut self, rel: &[u8], path: &Path, m: &Metadata) {
        if !self.opts.hard_links {
            return;
        }
        self.note_dst(rel, m);
        if m.is_dir()
            && let Ok(names) = list(path)
        {
            for n in names {
                let p = path.join(&n);
                let mut r = rel.to_vec();
                r.push(b'/');
                r.extend_from_slice(n.as_bytes());
                if let Ok(m) = fs::symlink_metadata(&p) {
                    self.note_extra(&r, &p, &m);
                }
            }
        }
    }

    /// Names sharing an inode in the source must share one in the destination, and the reverse;
    /// and a destination inode must have no names outside the destination tree.
    fn check_links(&mut self) {
        if !self.opts.hard_links {
            return;
        }
        let mut outside: Vec<(Vec<u8>, String)> = self
            .dst_inodes
            .values()
            .filter(|(nlink, seen, _)| nlink > seen)
            .map(|(nlink, seen, rel)| {
                (
                    rel.clone(),
                    format!(
                        "destination inode has {nlink} links but {seen} name(s) in the destination tree: it shares its data with a path outside the copy"
                    ),
                )
            })
            .collect();
        let mut by_src: HashMap<InodeKey, Vec<usize>> = HashMap::new();
        let mut by_dst: HashMap<InodeKey, Vec<usize>> = HashMap::new();
        for (i, (_, s, d)) in self.links.iter().enumerate() {
            by_src.entry(*s).or_default().push(i);
            by_dst.entry(*d).or_default().push(i);
        }
        let mut found: Vec<(Vec<u8>, String)> = Vec::new();
        for group in by_src.values() {
            let first = &self.links[group[0]];
            for &i in &group[1..] {
                if self.links[i].2 != first.2 {
                    found.push((
                        self.links[i].0.clone(),
                        format!(
                            "linked to {} in source, a separate file in destination",
                            show(&first.0)
                        ),
                    ));
                }
            }
        }
        for group in by_dst.values() {
            let first = &self.links[group[0]];
            for &i in &group[1..] {
                if self.links[i].1 != first.1 {
                    found.push((
                        self.links[i].0.clone(),
                        format!(
                            "linked to {} in destination, a separate file in source",
                            show(&first.0)
                        ),
                    ));
                }
            }
        }
        found.append(&mut outside);
        found.sort();
        for (rel, detail) in found {
            self.push(&rel, Aspect::HardLink, detail);
        }
    }
}

fn open_noatime(p: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(p)
    {
        // O_NOATIME needs ownership of the file (or CAP_FOWNER).
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(p),
        r => r,
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The `user.*` attributes of a path (not following symlinks), sorted by name.
pub fn user_xattrs(p: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let size = match rustix::fs::llistxattr_query(p) {
        Ok(n) => n,
        Err(rustix::io::Errno::OPNOTSUPP) => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::llistxattr(p, &mut names[..])?;
    for name in names[..n]
        .split(|&b| b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let name_os = OsStr::from_bytes(name);
        let len = rustix::fs::lgetxattr_query(p, name_os)?;
        let mut value = vec![0u8; len];
        let got = rustix::fs::lgetxattr(p, name_os, &mut value[..])?;
        value.truncate(got);
        out.insert(name.to_vec(), value);
    }
    Ok(out)
}

fn xattr_diff(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> String {
    let mut parts = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => parts.push(format!("{} missing", show(k))),
            Some(w) if w != v => parts.push(format!("{} differs", show(k))),
            _ => {}
        }
    }
    for k in b.keys().filter(|k| !a.contains_key(*k)) {
        parts.push(format!("{} extra", show(k)));
    }
    parts.join(", ")
}

/// Counts differences per aspect, for summaries.
pub fn count_by_aspect(diffs: &[Difference]) -> BTreeMap<Aspect, usize> {
    let mut m = BTreeMap::new();
    for d in diffs {
        *m.entry(d.aspect).or_default() += 1;
    }
    m
}

/// Joins `rel` (raw bytes) onto `root`: a helper for tests that name entries by their bytes.
pub fn join_bytes(root: &Path, rel: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(rel))
}
