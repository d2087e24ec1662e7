//! Deterministic tree generators: the same dataset, seed and scale give a byte-identical tree
//! with the same names, modes and nanosecond times, so benchmark runs and test failures can be
//! reproduced and cached datasets can be keyed by these three values alone.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timespec, Timestamps, Uid, XattrFlags};
use serde::{Deserialize, Serialize};

use crate::rng::Rng;

/// Bump whenever any generator's output changes, so that caches keyed by it are rebuilt.
pub const GENERATOR_VERSION: u32 = 1;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dataset {
    /// A few thousand small files: a second or two to copy.
    Demo,
    /// 100,000 files of 4–16 KiB: an uneven depth-4 tree holding 80,000 and one flat
    /// directory holding 20,000.
    Small,
    /// 16 files of 256 MiB.
    Large,
    /// Many small files, some medium, a few large and one sparse file.
    Mixed,
    /// Every file kind and metadata item the engine must keep.
    Kinds,
}

impl Dataset {
    pub const ALL: [Dataset; 5] = [
        Dataset::Demo,
        Dataset::Small,
        Dataset::Large,
        Dataset::Mixed,
        Dataset::Kinds,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Demo => "demo",
            Dataset::Small => "small",
            Dataset::Large => "large",
            Dataset::Mixed => "mixed",
            Dataset::Kinds => "kinds",
        }
    }
}

impl std::fmt::Display for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Dataset {
    type Err = GenError;
    fn from_str(s: &str) -> Result<Self, GenError> {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| GenError::UnknownDataset(s.to_owned()))
    }
}

#[derive(Clone, Debug)]
pub struct GenOptions {
    pub seed: u64,
    /// Multiplies file counts and the sizes of the large files (those of a MiB or more), so
    /// tests can make tiny versions of every dataset. `kinds` is small already and ignores it.
    pub scale: f64,
}

impl Default for GenOptions {
    fn default() -> Self {
        GenOptions {
            seed: 0x005E_ED0F_1E57,
            scale: 1.0,
        }
    }
}

/// What a generator wrote. `files` counts names of regular files (each hard link once).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenSummary {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub special: u64,
    pub hard_links: u64,
    /// Apparent size of the regular files (each inode once).
    pub bytes: u64,
}

impl GenSummary {
    /// Entries that are not directories: what "files per second" counts.
    pub fn non_dirs(&self) -> u64 {
        self.files + self.symlinks + self.special
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("unknown dataset {0:?}: valid are demo, small, large, mixed, kinds")]
    UnknownDataset(String),
    #[error("scale {0} is not valid: it must be a finite number above 0")]
    BadScale(f64),
    #[error(
        "{0} is not an empty directory: the generator writes only into a new or empty directory"
    )]
    NotEmpty(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Writes `dataset` into `root`, which must not exist or be an empty directory.
pub fn generate(dataset: Dataset, root: &Path, opts: &GenOptions) -> Result<GenSummary, GenError> {
    if !(opts.scale.is_finite() && opts.scale > 0.0) {
        return Err(GenError::BadScale(opts.scale));
    }
    match fs::read_dir(root) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(GenError::NotEmpty(show(root)));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(root).map_err(io_err("create directory", root))?
        }
        Err(e) => return Err(io_err("read directory", root)(e)),
    }
    let mut t = Tree::new(root, opts);
    t.dir(b"", 0o755)?;
    match dataset {
        Dataset::Demo => demo(&mut t)?,
        Dataset::Small => small(&mut t)?,
        Dataset::Large => large(&mut t)?,
        Dataset::Mixed => mixed(&mut t)?,
        Dataset::Kinds => kinds(&mut t)?,
    }
    t.finish()
}

fn demo(t: &mut Tree) -> Result<(), GenError> {
    let dirs = t.uneven_tree(b"", 3, 4)?;
    let n = t.count(3000);
    t.spread_files(&dirs, n, 1, |r| log_uniform(r, 1, 64 * KIB))
}

fn small(t: &mut Tree) -> Result<(), GenError> {
    let total = t.count(100_000);
    let flat = t.count(20_000).min(total);
    let tree = t.uneven_tree(b"tree", 4, 6)?;
    t.spread_files(&tree, total - flat, 1, |r| r.range(4 * KIB, 16 * KIB))?;
    t.dir(b"flat", 0o755)?;
    for i in 0..flat {
        let size = t.rng.range(4 * KIB, 16 * KIB);
        t.file(
            format!("flat/f{i:05}.dat").as_bytes(),
            size,
            0o644,
            (2 << 32) + i,
        )?;
    }
    Ok(())
}

fn large(t: &mut Tree) -> Result<(), GenError> {
    let size = t.bytes(256 * MIB);
    for i in 0..16 {
        t.file(
            format!("large{i:02}.bin").as_bytes(),
            size,
            0o644,
            (3 << 32) + i,
        )?;
    }
    Ok(())
}

fn mixed(t: &mut Tree) -> Result<(), GenError> {
    let dirs = t.uneven_tree(b"small", 3, 5)?;
    let n = t.count(20_000);
    t.spread_files(&dirs, n, 4, |r| r.range(0, 32 * KIB))?;
    t.dir(b"medium", 0o755)?;
    for i in 0..t.count(200) {
        let size = t.rng.range(256 * KIB, 8 * MIB);
        t.file(
            format!("medium/m{i:04}.bin").as_bytes(),
            size,
            0o644,
            (5 << 32) + i,
        )?;
    }
    t.dir(b"large", 0o755)?;
    for i in 0..3 {
        let drawn = t.rng.range(96 * MIB, 192 * MIB);
        let size = t.bytes(drawn);
        t.file(
            format!("large/l{i}.bin").as_bytes(),
            size,
            0o644,
            (6 << 32) + i,
        )?;
    }
    t.dir(b"sparse", 0o755)?;
    let apparent = t.bytes(1024 * MIB).max(64 * KIB);
    let extent = (apparent / 64).clamp(4 * KIB, MIB);
    // Eight 1 MiB data extents spread over 1 GiB, and a hole at the end.
    let extents: Vec<(u64, u64)> = (0..8)
        .map(|k| (k * (apparent / 9) / 4096 * 4096, extent))
        .collect();
    t.sparse(b"sparse/disk.img", apparent, &extents, 7 << 32)
}

/// Every kind of entry and metadata item a faithful copy keeps.
fn kinds(t: &mut Tree) -> Result<(), GenError> {
    let root = rustix::process::geteuid().is_root();
    t.dir(b"regular", 0o755)?;
    t.file(b"regular/plain.txt", 100, 0o644, 1)?;
    t.file(b"regular/empty", 0, 0o644, 2)?;
    t.file(b"regular/one-byte", 1, 0o644, 3)?;
    // Spans several of any copier's buffers, with an odd tail.
    t.file(b"regular/multi-buffer.bin", 3 * MIB + 4097, 0o644, 4)?;

    t.dir(b"sparse", 0o755)?;
    t.sparse(
        b"sparse/holes.img",
        16 * MIB,
        &[
            (0, 4 * KIB),
            (5 * MIB, 64 * KIB),
            (16 * MIB - 4 * KIB, 4 * KIB),
        ],
        5,
    )?;
    // Data then a hole to the end: the size must come from the length, not the last write.
    t.sparse(b"sparse/tail-hole.img", 8 * MIB, &[(0, 8 * KIB)], 6)?;

    t.dir(b"links", 0o755)?;
    t.symlink(b"links/relative", b"../regular/plain.txt")?;
    t.symlink(b"links/absolute", b"/etc/hostname")?;
    t.symlink(b"links/dangling", b"does/not/exist")?;
    t.symlink(b"links/to-dir", b"../regular")?;
    t.symlink(b"links/odd-target", b"tar\nget with \xff bytes")?;

    t.dir(b"hard", 0o755)?;
    t.dir(b"hard/a", 0o755)?;
    t.dir(b"hard/b", 0o755)?;
    t.file(b"hard/a/pair", 5000, 0o644, 7)?;
    t.hard_link(b"hard/a/pair", b"hard/b/pair-link")?;
    t.file(b"hard/a/triple", 10, 0o600, 8)?;
    t.hard_link(b"hard/a/triple", b"hard/b/triple-2")?;
    t.hard_link(b"hard/a/triple", b"hard/triple-3")?;

    t.dir(b"special", 0o755)?;
    t.fifo(b"special/fifo", 0o640)?;
    if root {
        t.device(b"special/char-null", FileType::CharacterDevice, 1, 3)?;
        t.device(b"special/block-loop", FileType::BlockDevice, 7, 200)?;
    }

    t.dir(b"modes", 0o755)?;
    t.dir(b"modes/setgid-dir", 0o2775)?;
    t.dir(b"modes/sticky-dir", 0o1777)?;
    t.file(b"modes/sticky-dir/inside", 3, 0o644, 9)?;
    t.dir(b"modes/read-only-dir", 0o555)?;
    t.file(b"modes/read-only-dir/inside", 3, 0o444, 10)?;
    t.file(b"modes/exec", 64, 0o755, 11)?;
    t.file(b"modes/private", 64, 0o600, 12)?;
    t.file(b"modes/none", 64, 0o000, 13)?;
    t.file(b"modes/setgid-file", 64, 0o2755, 14)?;
    if root {
        // Set after the owner below: a chown clears setuid, so a copier must chown first.
        t.file(b"modes/setuid-file", 64, 0o4755, 15)?;
        t.dir(b"owners", 0o755)?;
        t.file(b"owners/odd", 16, 0o644, 16)?;
        t.chown(b"owners/odd", 12345, 54321)?;
        t.dir(b"owners/odd-dir", 0o750)?;
        t.chown(b"owners/odd-dir", 4242, 4343)?;
        t.symlink(b"owners/odd-link", b"odd")?;
        t.chown(b"owners/odd-link", 777, 888)?;
        t.chown(b"modes/setuid-file", 1000, 1000)?;
        t.chmod(b"modes/setuid-file", 0o4755)?;
    }

    t.dir(b"times", 0o755)?;
    t.file(b"times/epoch-plus-1ns", 1, 0o644, 17)?;
    t.set_times(b"times/epoch-plus-1ns", (0, 1), (1, 1))?;
    t.file(b"times/max-ns", 1, 0o644, 18)?;
    t.set_times(
        b"times/max-ns",
        (1_700_000_000, 999_999_999),
        (1_700_000_001, 999_999_999),
    )?;

    t.dir(b"xattr", 0o755)?;
    t.file(b"xattr/file", 32, 0o644, 19)?;
    t.xattr(b"xattr/file", "user.alpha", b"one")?;
    t.xattr(b"xattr/file", "user.binary", b"\x00\xff\x01 bytes\n")?;
    t.xattr(b"xattr/file", "user.empty", b"")?;
    t.xattr(b"xattr", "user.on-dir", b"dir value")?;

    t.dir(b"names", 0o755)?;
    let names: [&[u8]; 12] = [
        b"non-utf8-\xff\xfe",
        b"line\nbreak",
        b"with space",
        b"back\\slash",
        "ünïcødé-日本語-🙂".as_bytes(),
        b"-leading-dash",
        b" leading-space",
        b"trailing-space ",
        b"*glob?[x]",
        b"quote'\"",
        b"tab\there",
        b"dollar$HOME",
    ];
    for (i, name) in names.iter().enumerate() {
        let mut rel = b"names/".to_vec();
        rel.extend_from_slice(name);
        t.file(&rel, 20 + i as u64, 0o644, 100 + i as u64)?;
    }
    t.dir(b"names/dir \xff\n", 0o755)?;
    t.file(b"names/dir \xff\n/inside \xfe", 7, 0o644, 200)?;

    let mut deep = b"deep".to_vec();
    t.dir(&deep, 0o755)?;
    for c in b"abcdefgh" {
        deep.extend_from_slice(&[b'/', *c]);
        t.dir(&deep, 0o755)?;
    }
    deep.extend_from_slice(b"/leaf");
    t.file(&deep, 123, 0o644, 300)
}

/// Log-uniform size in `lo..=hi`: many small, few big, as real trees are.
fn log_uniform(r: &mut Rng, lo: u64, hi: u64) -> u64 {
    let (l, h) = ((lo.max(1)) as f64, hi as f64);
    ((l.ln() + r.unit() * (h.ln() - l.ln())).exp() as u64).clamp(lo, hi)
}

fn show(p: &Path) -> String {
    ingest_path::escape(p.as_os_str().as_bytes(), true)
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> GenError + 'a {
    move |source| GenError::Io {
        op,
        path: show(path),
        source,
    }
}

/// Writes entries, draws their times, and sets directory modes and times last (creating a child
/// changes its directory's mtime, and a read-only directory must still take its children).
struct Tree {
    root: PathBuf,
    seed: u64,
    scale: f64,
    rng: Rng,
    dirs: Vec<(Vec<u8>, u32)>,
    buf: Vec<u8>,
    summary: GenSummary,
}

type Stamp = (i64, i64);

impl Tree {
    fn new(root: &Path, opts: &GenOptions) -> Self {
        Tree {
            root: root.to_owned(),
            seed: opts.seed,
            scale: opts.scale,
            rng: Rng::new(opts.seed),
            dirs: Vec::new(),
            buf: vec![0; MIB as usize],
            summary: GenSummary::default(),
        }
    }

    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn count(&self, n: u64) -> u64 {
        ((n as f64 * self.scale).round() as u64).max(1)
    }

    fn bytes(&self, n: u64) -> u64 {
        ((n as f64 * self.scale).round() as u64).max(1)
    }

    /// Times in 2020–2023 with a nanosecond part, atime after mtime.
    fn draw_times(&mut self) -> (Stamp, Stamp) {
        let m = 1_580_000_000 + self.rng.range(0, 100_000_000) as i64;
        let mtime = (m, self.rng.range(0, 999_999_999) as i64);
        let atime = (
            m + self.rng.range(0, 10_000_000) as i64,
            self.rng.range(0, 999_999_999) as i64,
        );
        (atime, mtime)
    }

    fn set_times(&self, rel: &[u8], atime: Stamp, mtime: Stamp) -> Result<(), GenError> {
        let ts = |(s, ns): Stamp| Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        };
        let times = Timestamps {
            last_access: ts(atime),
            last_modification: ts(mtime),
        };
        let p = self.path(rel);
        rustix::fs::utimensat(CWD, &p, &times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err("set times of", &p)(e.into()))
    }

    fn stamp(&mut self, rel: &[u8]) -> Result<(), GenError> {
        let (a, m) = self.draw_times();
        self.set_times(rel, a, m)
    }

    fn chmod(&self, rel: &[u8], mode: u32) -> Result<(), GenError> {
        let p = self.path(rel);
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(io_err("chmod", &p))
    }

    fn chown(&self, rel: &[u8], uid: u32, gid: u32) -> Result<(), GenError> {
        let p = self.path(rel);
        let (u, g) = (Uid::from_raw(uid), Gid::from_raw(gid));
        rustix::fs::chownat(CWD, &p, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_err("chown", &p)(e.into()))
    }

    fn dir(&mut self, rel: &[u8], mode: u32) -> Result<(), GenError> {
        let p = self.path(rel);
        if !rel.is_empty() {
            fs::create_dir(&p).map_err(io_err("create directory", &p))?;
            self.summary.dirs += 1;
        }
        // Writable until finish(), so that a read-only directory can still be filled.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).map_err(io_err("chmod", &p))?;
        self.dirs.push((rel.to_vec(), mode));
        Ok(())
    }

    /// A regular file of `size` pseudo-random bytes from stream `stream` of the seed.
    fn file(&mut self, rel: &[u8], size: u64, mode: u32, stream: u64) -> Result<(), GenError> {
        let p = self.path(rel);
        let mut f = create_new(&p)?;
        let mut r = Rng::derive(self.seed, stream);
        let mut left = size;
        while left > 0 {
            let n = left.min(self.buf.len() as u64) as usize;
            r.fill(&mut self.buf[..n]);
            f.write_all(&self.buf[..n]).map_err(io_err("write", &p))?;
            left -= n as u64;
        }
        drop(f);
        self.summary.files += 1;
        self.summary.bytes += size;
        self.chmod(rel, mode)?;
        self.stamp(rel)
    }

    /// A file of apparent size `size` whose only data are `extents` (offset, length).
    fn sparse(
        &mut self,
        rel: &[u8],
        size: u64,
        extents: &[(u64, u64)],
        stream: u64,
    ) -> Result<(), GenError> {
        let p = self.path(rel);
        let f = create_new(&p)?;
        let mut r = Rng::derive(self.seed, stream);
        for &(off, len) in extents {
            let len = len.min(size.saturating_sub(off)) as usize;
            let mut data = vec![0; len];
            r.fill(&mut data);
            f.write_all_at(&data, off).map_err(io_err("write", &p))?;
        }
        f.set_len(size).map_err(io_err("set length of", &p))?;
        drop(f);
        self.summary.files += 1;
        self.summary.bytes += size;
        self.chmod(rel, 0o644)?;
        self.stamp(rel)
    }

    fn symlink(&mut self, rel: &[u8], target: &[u8]) -> Result<(), GenError> {
        let p = self.path(rel);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
            .map_err(io_err("create symlink", &p))?;
        self.summary.symlinks += 1;
        self.stamp(rel)
    }

    fn hard_link(&mut self, existing: &[u8], rel: &[u8]) -> Result<(), GenError> {
        let p = self.path(rel);
        fs::hard_link(self.path(existing), &p).map_err(io_err("create hard link", &p))?;
        self.summary.files += 1;
        self.summary.hard_links += 1;
        Ok(())
    }

    fn fifo(&mut self, rel: &[u8], mode: u32) -> Result<(), GenError> {
        let p = self.path(rel);
        rustix::fs::mkfifoat(CWD, &p, Mode::from_raw_mode(mode))
            .map_err(|e| io_err("create fifo", &p)(e.into()))?;
        self.summary.special += 1;
        self.chmod(rel, mode)?;
        self.stamp(rel)
    }

    fn device(
        &mut self,
        rel: &[u8],
        kind: FileType,
        major: u32,
        minor: u32,
    ) -> Result<(), GenError> {
        let p = self.path(rel);
        let dev = rustix::fs::makedev(major, minor);
        rustix::fs::mknodat(CWD, &p, kind, Mode::from_raw_mode(0o640), dev)
            .map_err(|e| io_err("create device node", &p)(e.into()))?;
        self.summary.special += 1;
        self.chmod(rel, 0o640)?;
        self.stamp(rel)
    }

    fn xattr(&self, rel: &[u8], name: &str, value: &[u8]) -> Result<(), GenError> {
        let p = self.path(rel);
        rustix::fs::lsetxattr(&p, name, value, XattrFlags::empty())
            .map_err(|e| io_err("set xattr on", &p)(e.into()))
    }

    /// Creates `base` (unless it is the root) and directories below it to `depth` levels, each
    /// with 1..=`max_fanout` children, so that subtrees differ in size as real trees do.
    /// Returns every directory made below `base`.
    fn uneven_tree(
        &mut self,
        base: &[u8],
        depth: u32,
        max_fanout: u64,
    ) -> Result<Vec<Vec<u8>>, GenError> {
        if !base.is_empty() {
            self.dir(base, 0o755)?;
        }
        let mut all = Vec::new();
        let mut level = vec![base.to_vec()];
        for d in 0..depth {
            let mut next = Vec::new();
            for parent in &level {
                let fanout = if d == 0 {
                    max_fanout
                } else {
                    self.rng.range(1, max_fanout)
                };
                for i in 0..fanout {
                    let mut rel = parent.clone();
                    if !rel.is_empty() {
                        rel.push(b'/');
                    }
                    rel.extend_from_slice(format!("d{d}{i:02}").as_bytes());
                    self.dir(&rel, 0o755)?;
                    next.push(rel);
                }
            }
            all.extend(next.iter().cloned());
            level = next;
        }
        Ok(all)
    }

    /// Creates `n` files over `dirs` with skewed weights: a few directories hold most files,
    /// as in real trees.
    fn spread_files(
        &mut self,
        dirs: &[Vec<u8>],
        n: u64,
        stream_base: u64,
        mut size: impl FnMut(&mut Rng) -> u64,
    ) -> Result<(), GenError> {
        let weights: Vec<f64> = dirs
            .iter()
            .map(|_| self.rng.unit().powi(3) + 0.01)
            .collect();
        let total: f64 = weights.iter().sum();
        let mut counts: Vec<u64> = weights
            .iter()
            .map(|w| (n as f64 * w / total) as u64)
            .collect();
        let left = n - counts.iter().sum::<u64>();
        for i in 0..left as usize {
            counts[i % dirs.len()] += 1;
        }
        let mut index = 0u64;
        for (d, &c) in dirs.iter().zip(&counts) {
            for _ in 0..c {
                let mut rel = d.clone();
                rel.extend_from_slice(format!("/f{index:06}.dat").as_bytes());
                let s = size(&mut self.rng);
                self.file(&rel, s, 0o644, (stream_base << 32) + index)?;
                index += 1;
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<GenSummary, GenError> {
        for (rel, mode) in std::mem::take(&mut self.dirs).into_iter().rev() {
            self.chmod(&rel, mode)?;
            self.stamp(&rel)?;
        }
        Ok(self.summary)
    }
}

fn create_new(p: &Path) -> Result<File, GenError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(io_err("create", p))
}
