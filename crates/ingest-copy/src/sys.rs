//! Thin wrappers over the directory-fd-relative system calls the engine uses.
//!
//! Every lookup is relative to an open directory: on NFS each path component walked is a
//! round trip, so the engine opens a directory once and does everything inside it by name.

use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use crate::fault::{self, Point, Target};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Timespec, Timestamps};

/// The kinds of entries the engine knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDev,
    BlockDev,
}

impl Kind {
    fn from_mode(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDev,
            FileType::BlockDevice => Kind::BlockDev,
            FileType::Unknown => Kind::File,
        }
    }

    /// The type a directory entry claims, when the file system tells (`DT_UNKNOWN` does not).
    pub fn from_dirent(t: FileType) -> Option<Kind> {
        match t {
            FileType::Unknown => None,
            t => Some(Kind::from_mode(t.as_raw_mode())),
        }
    }
}

/// The metadata the engine copies and compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits including setuid, setgid and sticky.
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    /// 512-byte blocks allocated.
    pub blocks: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    /// Status change time: moves on any write or metadata change, and cannot be set by a
    /// user, so it catches a rewrite that put size and mtime back.
    pub ctime: (i64, i64),
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub rdev: u64,
}

impl Meta {
    // The field types of `struct stat` differ between architectures; the casts are for the others.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            kind: Kind::from_mode(st.st_mode as u32),
            perm: st.st_mode as u32 & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: (st.st_atime as i64, st.st_atime_nsec as i64),
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }

    /// Holes likely: fewer blocks allocated than the size needs.
    pub fn looks_sparse(&self) -> bool {
        self.kind == Kind::File && self.blocks.saturating_mul(512) < self.size
    }

    pub fn timestamps(&self) -> Timestamps {
        let ts = |(s, ns): (i64, i64)| Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        };
        Timestamps {
            last_access: ts(self.atime),
            last_modification: ts(self.mtime),
        }
    }
}

/// What went wrong with one entry: the operation and the OS error.
pub(crate) type OpResult<T> = Result<T, (&'static str, io::Error)>;

/// Names the operation an `io::Result` came from.
pub(crate) trait Op<T> {
    fn op(self, name: &'static str) -> OpResult<T>;
}

impl<T> Op<T> for io::Result<T> {
    fn op(self, name: &'static str) -> OpResult<T> {
        self.map_err(|e| (name, e))
    }
}

pub(crate) fn cstr(bytes: &[u8]) -> std::ffi::CString {
    // Names come from the kernel or from a RelPath, neither of which can hold NUL.
    std::ffi::CString::new(bytes).expect("file names hold no NUL byte")
}

pub fn to_io(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

pub fn errno(e: &io::Error) -> Option<rustix::io::Errno> {
    e.raw_os_error().map(rustix::io::Errno::from_raw_os_error)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`: `Ok(None)` when the entry does not exist.
pub fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Meta>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(Meta::from_stat(&st))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(to_io(e)),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    rustix::fs::fstat(fd)
        .map(|st| Meta::from_stat(&st))
        .map_err(to_io)
}

/// Opens a directory by name, never following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(to_io)
}

/// The same directory through a new open file description. Not `dup`: a dup shares the
/// directory's read offset, so two threads listing one directory (two name ranges of a root
/// split into scopes) through dups would each see only part of its entries.
pub fn reopen_dir(dir: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    open_dir_at(dir, c".")
}

/// Opens a source file for reading without touching its atime where the kernel lets us
/// (`O_NOATIME` needs ownership or CAP_FOWNER; after the first refusal we stop asking).
pub fn open_source_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    noatime: &AtomicBool,
) -> io::Result<OwnedFd> {
    fault::hit(
        Point::OpenSource,
        Target {
            source_entry: Some((dir, name)),
            ..Target::default()
        },
    )?;
    let base = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    if noatime.load(Relaxed) {
        match rustix::fs::openat(dir, name, base | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => noatime.store(false, Relaxed),
            r => return r.map_err(to_io),
        }
    }
    rustix::fs::openat(dir, name, base, Mode::empty()).map_err(to_io)
}

/// Opens (creating if needed, with `mode` less the umask) a destination file for writing in
/// place. `truncate` empties it.
/// Never follows a symlink at the final component.
pub fn open_dest_file(
    dir: BorrowedFd<'_>,
    name: &CStr,
    truncate: bool,
    mode: u32,
) -> io::Result<OwnedFd> {
    fault::hit(Point::Create, Target::default())?;
    let mut flags =
        OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
    if truncate {
        flags |= OFlags::TRUNC;
    }
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode)).map_err(to_io)
}

/// Creates `name` for writing only if no entry has that name (`O_EXCL`: one round trip on NFS
/// and FUSE, where a look first and a create are two); `AlreadyExists` when one has.
pub fn create_new_file(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> io::Result<OwnedFd> {
    fault::hit(Point::Create, Target::default())?;
    let flags = OFlags::WRONLY
        | OFlags::CREATE
        | OFlags::EXCL
        | OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NOCTTY;
    rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(mode)).map_err(to_io)
}

pub fn open_read(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(to_io)
}

/// Opens a file for reading with `O_DIRECT`, so that reads go to the file system (on NFS, to
/// the server) and never come from this client's page cache. `EINVAL`: the file system does
/// not do direct I/O.
pub fn open_read_direct(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECT | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(to_io)
}

/// Drops a file's cached pages (`POSIX_FADV_DONTNEED`), so that the next reads fetch the data
/// again where direct I/O is refused.
pub fn drop_cached(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::DontNeed).map_err(to_io)
}

/// One `pread`, retried on `EINTR` (direct reads must stay aligned, so no short-read loop here).
pub fn pread_once(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    loop {
        match rustix::io::pread(fd, &mut *buf, off) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.map_err(to_io),
        }
    }
}

/// Lists a directory into `out` (names without `.` and `..`, with the type when the file system
/// gives it), reading with a caller-owned buffer so no second descriptor is opened.
pub fn list_dir(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    mut out: impl FnMut(&CStr, Option<Kind>),
) -> io::Result<()> {
    // Descriptors made by dup share their offset: a root listed once before must start over.
    rustix::fs::seek(fd, rustix::fs::SeekFrom::Start(0)).map_err(to_io)?;
    let mut raw = RawDir::new(fd, buf);
    while let Some(entry) = raw.next() {
        let entry = entry.map_err(to_io)?;
        let name = entry.file_name();
        let b = name.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        out(name, Kind::from_dirent(entry.file_type()));
    }
    Ok(())
}

/// Creates a directory; an existing directory is fine, anything else in its place is an error.
/// Returns true when it was created.
pub fn ensure_dir(dir: BorrowedFd<'_>, name: &CStr, perm: u32) -> io::Result<bool> {
    fault::hit(Point::Mkdir, Target::default())?;
    match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(perm)) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::EXIST) => match stat_at(dir, name)? {
            Some(m) if m.kind == Kind::Dir => Ok(false),
            _ => Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a non-directory is in the way",
            )),
        },
        Err(e) => Err(to_io(e)),
    }
}

pub fn unlink_at(dir: BorrowedFd<'_>, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    rustix::fs::unlinkat(dir, name, flags).map_err(to_io)
}

pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    rustix::fs::readlinkat(dir, name, Vec::new())
        .map(|c| c.into_bytes())
        .map_err(to_io)
}

pub fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    rustix::fs::symlinkat(target, dir, name).map_err(to_io)
}

pub fn link_at(
    old_dir: BorrowedFd<'_>,
    old: &[u8],
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> io::Result<()> {
    rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty()).map_err(to_io)
}

pub fn mknod_at(dir: BorrowedFd<'_>, name: &CStr, meta: &Meta) -> io::Result<()> {
    let ft = match meta.kind {
        Kind::Fifo => FileType::Fifo,
        Kind::CharDev => FileType::CharacterDevice,
        Kind::BlockDev => FileType::BlockDevice,
        // A socket file is only a name and an inode (nothing listens on the copy), and Linux
        // lets anyone make one with mknod.
        Kind::Socket => FileType::Socket,
        _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
    };
    rustix::fs::mknodat(
        dir,
        name,
        ft,
        Mode::from_raw_mode(meta.perm & 0o777),
        meta.rdev,
    )
    .map_err(to_io)
}

/// Owner, then mode (chown clears setuid/setgid), then times: the order that leaves each right.
pub fn set_meta_fd(
    fd: BorrowedFd<'_>,
    m: &Meta,
    owner: bool,
    mode: bool,
    times: bool,
) -> io::Result<()> {
    fault::hit(Point::SetMeta, Target::default())?;
    if owner {
        rustix::fs::fchown(
            fd,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
        )
        .map_err(to_io)?;
    }
    if mode {
        rustix::fs::fchmod(fd, Mode::from_raw_mode(m.perm)).map_err(to_io)?;
    }
    if times {
        rustix::fs::futimens(fd, &m.timestamps()).map_err(to_io)?;
    }
    Ok(())
}

/// Metadata of an entry that cannot be opened (symlinks, specials), by name, never following links.
pub fn set_meta_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    m: &Meta,
    owner: bool,
    mode: bool,
    times: bool,
) -> io::Result<()> {
    fault::hit(Point::SetMeta, Target::default())?;
    if owner {
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(m.uid)),
            Some(rustix::fs::Gid::from_raw(m.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(to_io)?;
    }
    // Symlinks have no mode of their own on Linux.
    if mode && m.kind != Kind::Symlink {
        rustix::fs::chmodat(dir, name, Mode::from_raw_mode(m.perm), AtFlags::empty())
            .map_err(to_io)?;
    }
    if times {
        rustix::fs::utimensat(dir, name, &m.timestamps(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(to_io)?;
    }
    Ok(())
}

/// Moves an entry's mtime (and atime) to now: a file whose final write-back failed after its
/// metadata was set must not keep the source's mtime, or a re-run would take it as finished.
pub fn touch_now_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: rustix::fs::UTIME_NOW,
    };
    rustix::fs::utimensat(
        dir,
        name,
        &Timestamps {
            last_access: now,
            last_modification: now,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(to_io)
}

pub fn set_len(fd: BorrowedFd<'_>, len: u64) -> io::Result<()> {
    rustix::fs::ftruncate(fd, len).map_err(to_io)
}

/// The next data region at or after `off` (`None` past the last one), by SEEK_DATA/SEEK_HOLE.
pub fn next_data(fd: BorrowedFd<'_>, off: u64) -> io::Result<Option<(u64, u64)>> {
    use rustix::fs::SeekFrom;
    let start = match rustix::fs::seek(fd, SeekFrom::Data(off)) {
        Ok(s) => s,
        Err(rustix::io::Errno::NXIO) => return Ok(None),
        Err(e) => return Err(to_io(e)),
    };
    let end = rustix::fs::seek(fd, SeekFrom::Hole(start)).map_err(to_io)?;
    Ok(Some((start, end)))
}

/// Copies `[off, off + len)` from `src` to the same offsets of `dst`: `copy_file_range` where
/// the kernel can (it may even share blocks), else pread/pwrite through `buf`. Returns bytes copied.
pub fn copy_range(
    src: BorrowedFd<'_>,
    dst: BorrowedFd<'_>,
    off: u64,
    len: u64,
    buf: &mut Vec<u8>,
    use_cfr: &AtomicBool,
) -> io::Result<u64> {
    let end = off + len;
    let mut pos = off;
    if use_cfr.load(Relaxed) {
        while pos < end {
            let (mut i, mut o) = (pos, pos);
            let want = (end - pos).min(1 << 30) as usize;
            let from = Target {
                source_fd: Some(src),
                ..Target::default()
            };
            fault::hit(Point::Read, from)?;
            fault::hit(Point::Write, Target::default())?;
            match rustix::fs::copy_file_range(src, Some(&mut i), dst, Some(&mut o), want) {
                Ok(0) => break, // the source shrank under us; the caller sees a short copy
                Ok(n) => pos += n as u64,
                Err(
                    rustix::io::Errno::XDEV
                    | rustix::io::Errno::NOSYS
                    | rustix::io::Errno::OPNOTSUPP
                    | rustix::io::Errno::INVAL,
                ) if pos == off => {
                    // Not supported between these two file systems: fall back for good.
                    use_cfr.store(false, Relaxed);
                    break;
                }
                Err(e) => return Err(to_io(e)),
            }
        }
        if use_cfr.load(Relaxed) {
            return Ok(pos - off);
        }
    }
    if buf.len() < (1 << 20) {
        buf.resize(1 << 20, 0);
    }
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let from = Target {
            source_fd: Some(src),
            ..Target::default()
        };
        fault::hit(Point::Read, from)?;
        let n = pread_full(src, &mut buf[..want], pos)?;
        if n == 0 {
            break;
        }
        fault::hit(Point::Write, Target::default())?;
        pwrite_all(dst, &buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(pos - off)
}

/// Reads until `buf` is full or end of file.
pub fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match rustix::io::pread(fd, &mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(to_io(e)),
        }
    }
    Ok(done)
}

fn pwrite_all(fd: BorrowedFd<'_>, mut buf: &[u8], mut off: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match rustix::io::pwrite(fd, buf, off) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                buf = &buf[n..];
                off += n as u64;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(to_io(e)),
        }
    }
    Ok(())
}

/// `user.*` extended attributes as (name, value) pairs, sorted.
pub type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The kinds of extended attributes the engine copies, each switched on by its own option and
/// switched off on its own when the destination does not take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrClass {
    /// `user.*`: any user's own attributes.
    User,
    /// `system.posix_acl_access`, `system.posix_acl_default`, `system.nfs4_acl`.
    Acl,
    /// `security.*` (capabilities, labels): only root may set them.
    Security,
}

impl XattrClass {
    pub fn of(name: &[u8]) -> Option<XattrClass> {
        if name.starts_with(b"user.") {
            Some(XattrClass::User)
        } else if matches!(
            name,
            b"system.posix_acl_access" | b"system.posix_acl_default" | b"system.nfs4_acl"
        ) {
            Some(XattrClass::Acl)
        } else if name.starts_with(b"security.") {
            Some(XattrClass::Security)
        } else {
            None
        }
    }
}

/// The extended attributes of an open file whose names `keep` accepts, sorted by name.
pub fn xattrs(fd: BorrowedFd<'_>, keep: impl Fn(&[u8]) -> bool) -> io::Result<Xattrs> {
    Ok(xattrs_if_supported(fd, keep)?.unwrap_or_default())
}

/// Like [`xattrs`], but `None` when the file system has no extended attributes at all.
pub fn xattrs_if_supported(
    fd: BorrowedFd<'_>,
    keep: impl Fn(&[u8]) -> bool,
) -> io::Result<Option<Xattrs>> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::flistxattr(fd, &mut names[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(None),
            Err(e) => return Err(to_io(e)),
        }
    };
    let mut out = Vec::new();
    for name in names[..n]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty() && keep(n))
    {
        let mut value = vec![0u8; 4096];
        let len = loop {
            match rustix::fs::fgetxattr(fd, name, &mut value[..]) {
                Ok(len) => break Some(len),
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(rustix::io::Errno::NODATA) => break None, // removed since listed
                Err(e) => return Err(to_io(e)),
            }
        };
        if let Some(len) = len {
            value.truncate(len);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(Some(out))
}

pub fn set_xattr(fd: BorrowedFd<'_>, name: &[u8], value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(fd, name, value, rustix::fs::XattrFlags::empty()).map_err(to_io)
}

pub fn remove_xattr(fd: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    rustix::fs::fremovexattr(fd, name).map_err(to_io)
}

/// Closes a file written to, returning what close(2) says: NFS reports a failed write-back
/// (ENOSPC, EDQUOT, EIO) at close, and dropping an `OwnedFd` would throw that away.
pub fn close_checked(fd: OwnedFd) -> io::Result<()> {
    fault::hit(Point::Close, Target::default())?;
    // SAFETY: `into_raw_fd` gives up ownership, so the descriptor is closed exactly once, here.
    let r = unsafe { libc::close(fd.into_raw_fd()) };
    if r == 0 {
        return Ok(());
    }
    match io::Error::last_os_error() {
        // The descriptor is gone either way; EINTR on Linux means it was closed.
        e if e.raw_os_error() == Some(libc::EINTR) => Ok(()),
        e => Err(e),
    }
}

/// Flushes a file's data and metadata to stable storage (`--fsync`).
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    rustix::fs::fsync(fd).map_err(to_io)
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Lets the process hold as many open descriptors as its hard limit allows: every directory
/// in progress keeps one descriptor per side.
pub fn raise_fd_limit() {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if let Some(max) = lim.maximum {
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(max),
                maximum: Some(max),
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// Entries read through `fd` from its current offset (no rewind).
    fn read_on(fd: BorrowedFd<'_>) -> usize {
        let mut buf = vec![MaybeUninit::uninit(); 4096];
        let mut raw = RawDir::new(fd, &mut buf);
        let mut n = 0;
        while let Some(e) = raw.next() {
            let e = e.unwrap();
            if !matches!(e.file_name().to_bytes(), b"." | b"..") {
                n += 1;
            }
        }
        n
    }

    #[test]
    fn a_reopened_directory_has_its_own_offset_where_a_dup_shares_it() {
        let t = tempfile::tempdir().unwrap();
        for i in 0..300 {
            std::fs::write(t.path().join(format!("entry-{i:04}")), b"").unwrap();
        }
        let open = || {
            rustix::fs::open(
                t.path(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .unwrap()
        };
        let a = open();
        let own = reopen_dir(a.as_fd()).unwrap();
        let shared = a.try_clone().unwrap();
        assert_eq!(read_on(a.as_fd()), 300);
        // Reading `a` to its end moved the dup along with it, not the reopened one.
        assert_eq!(read_on(own.as_fd()), 300);
        assert_eq!(read_on(shared.as_fd()), 0);
    }
}
