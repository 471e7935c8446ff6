//! The FUSE front end: one directory holding one file, the attached volume's raw
//! device, served from [`crate::volume::Image`].
//!
//! Settings from shared/reference/blockdev.md §2.3, because fuser's defaults
//! serialise direct I/O: several event-loop threads each with its own `/dev/fuse`
//! fd (`clone_fd`), `FUSE_ASYNC_DIO` (without it the kernel keeps one read and one
//! write in flight per direct-I/O file handle, i.e. a loop device runs at queue
//! depth 1), `FOPEN_DIRECT_IO` + `FOPEN_PARALLEL_DIRECT_WRITES` (no page cache of
//! ours under the loop device's, and no inode lock around writes), 1 MiB
//! `max_write`, and a raised `max_background`. Every request is encrypted or
//! decrypted on the thread that received it; buffers are bounded by `max_write`.

use crate::num::usize_of;
use crate::volume::Image;
use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, INodeNo, InitFlags,
    KernelConfig, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, WriteFlags,
};
use std::ffi::{OsStr, OsString};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

thread_local! {
    /// Each event-loop thread's read buffer (at most `MAX_IO`), reused so the I/O
    /// path does not allocate.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

const ROOT: INodeNo = INodeNo(1);
const FILE: INodeNo = INodeNo(2);
const TTL: Duration = Duration::from_secs(1);
/// Largest read or write request (the kernel caps it at 1 MiB before Linux 6.13).
pub const MAX_IO: u32 = 1 << 20;
/// Event-loop threads serving the mount.
pub const THREADS: usize = 4;

/// The filesystem: `/` and `/<name>`, the volume.
pub struct VolumeFs {
    image: Arc<Image>,
    name: OsString,
    uid: u32,
    gid: u32,
    since: SystemTime,
    open: Arc<AtomicU64>,
}

impl VolumeFs {
    /// `name` is the file's name (the volume id); `open` counts open handles of it.
    pub fn new(image: Arc<Image>, name: &str, open: Arc<AtomicU64>) -> Self {
        VolumeFs {
            image,
            name: name.into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            since: SystemTime::now(),
            open,
        }
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o700, 0, 2),
            FILE => (FileType::RegularFile, 0o600, self.image.size(), 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.since,
            mtime: self.since,
            ctime: self.since,
            crtime: self.since,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    /// The mount configuration described in the module documentation.
    pub fn config(fsname: &str) -> Config {
        let mut c = Config::default();
        c.mount_options = vec![
            MountOption::FSName(fsname.into()),
            MountOption::Subtype("ebsim".into()),
            MountOption::RW,
            MountOption::NoAtime,
            MountOption::DefaultPermissions,
        ];
        c.n_threads = Some(THREADS);
        c.clone_fd = true;
        c
    }
}

/// errno for an ebsim error on the I/O path.
fn errno(e: &crate::Error) -> Errno {
    match e.kind() {
        crate::ErrorKind::OutOfRange => Errno::EINVAL,
        _ => Errno::EIO,
    }
}

impl Filesystem for VolumeFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.add_capabilities(InitFlags::FUSE_ASYNC_DIO);
        // O_TRUNC arrives with open (and is ignored there, as a block device
        // ignores it) instead of as a truncation to 0 that cannot be told from
        // ftruncate(fd, 0).
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        let _ = config.set_max_write(MAX_IO);
        let _ = config.set_max_readahead(MAX_IO);
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match (parent, self.attr(FILE)) {
            (ROOT, Some(a)) if name == self.name => reply.entry(&TTL, &a, fuser::Generation(0)),
            _ => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // A device has a fixed size and owner. As a block device does, a
        // truncation to its size or beyond is ignored (the size stays); a shrink
        // is refused, and the attachment's log says which volume refused it.
        let Some(a) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(s) = size
            && s < a.size
        {
            tracing::warn!(
                "{}: refused a truncation to {s} bytes; the volume's size is {} bytes (grow it with ebsim ec2 modify-volume; it cannot shrink)",
                self.name.to_string_lossy(),
                a.size
            );
            return reply.error(Errno::EPERM);
        }
        if mode.is_some() || uid.is_some() || gid.is_some() {
            return reply.error(Errno::EPERM);
        }
        reply.attr(&TTL, &a)
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if ino != FILE {
            return reply.error(Errno::EISDIR);
        }
        self.open.fetch_add(1, Ordering::SeqCst);
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_DIRECT_IO | FopenFlags::FOPEN_PARALLEL_DIRECT_WRITES,
        )
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let end = (offset.saturating_add(u64::from(size))).min(self.image.size());
        if offset >= end {
            return reply.data(&[]);
        }
        let n = usize_of(end - offset);
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            if buf.len() < n {
                buf.resize(n, 0);
            }
            match self.image.read(offset, &mut buf[..n]) {
                Ok(()) => reply.data(&buf[..n]),
                Err(e) => {
                    tracing::warn!("fuse: {e}");
                    reply.error(errno(&e))
                }
            }
        })
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let size = self.image.size();
        if offset >= size && !data.is_empty() {
            return reply.error(Errno::ENOSPC);
        }
        // A write running past the end stores what fits, as a block device does.
        let n = data.len().min(usize_of(size - offset));
        let sync = flags.0 & (libc_o_dsync() | libc_o_sync()) != 0;
        match self.image.write(offset, &data[..n], sync) {
            // n ≤ data.len(), and the kernel sends at most max_write (a u32) bytes.
            Ok(()) => reply.written(u32::try_from(n).expect("a FUSE write fits u32")),
            Err(e) => {
                tracing::warn!("fuse: {e}");
                reply.error(errno(&e))
            }
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) promises no durability; fsync does.
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        if ino == FILE {
            self.open.fetch_sub(1, Ordering::SeqCst);
        }
        reply.ok()
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.image.flush() {
            Ok(()) => reply.ok(),
            Err(e) => {
                tracing::warn!("fuse: {e}");
                reply.error(Errno::EIO)
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, OsStr::new(".")),
            (ROOT, FileType::Directory, OsStr::new("..")),
            (FILE, FileType::RegularFile, self.name.as_os_str()),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(usize_of(offset)) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let blocks = self.image.size() / 4096;
        reply.statfs(blocks, 0, 0, 2, 0, 4096, 255, 4096)
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        const KEEP_SIZE: i32 = 0x01;
        const PUNCH_HOLE: i32 = 0x02;
        const ZERO_RANGE: i32 = 0x10;
        let size = self.image.size();
        let in_range = offset.checked_add(length).is_some_and(|e| e <= size);
        let r = match mode {
            m if m == PUNCH_HOLE | KEEP_SIZE && in_range => self.image.trim(offset, length),
            m if (m & !KEEP_SIZE) == ZERO_RANGE && in_range => {
                self.image.write_zeroes(offset, length, false)
            }
            // Preallocation inside the device: every unit is already addressable.
            0 | KEEP_SIZE if in_range => Ok(()),
            0 | KEEP_SIZE | ZERO_RANGE => return reply.error(Errno::EFBIG),
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        const SEEK_DATA: i32 = 3;
        const SEEK_HOLE: i32 = 4;
        let size = self.image.size();
        let Ok(off) = u64::try_from(offset) else {
            return reply.error(Errno::EINVAL);
        };
        if off >= size {
            return reply.error(Errno::ENXIO);
        }
        let want_data = match whence {
            SEEK_DATA => true,
            SEEK_HOLE => false,
            _ => return reply.error(Errno::EINVAL),
        };
        match self.image.allocation(off, size - off) {
            Ok(map) => {
                let found = map
                    .iter()
                    .find(|e| e.allocated == want_data)
                    .map(|e| e.offset);
                match (found, want_data) {
                    (Some(o), _) => reply.offset(o.max(off) as i64),
                    (None, true) => reply.error(Errno::ENXIO),
                    (None, false) => reply.offset(size as i64),
                }
            }
            Err(e) => reply.error(errno(&e)),
        }
    }
}

fn libc_o_dsync() -> i32 {
    nix::fcntl::OFlag::O_DSYNC.bits()
}

fn libc_o_sync() -> i32 {
    nix::fcntl::OFlag::O_SYNC.bits()
}
