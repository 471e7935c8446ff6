//! An open volume image (docs/FORMAT.md): header selection and updates, and the
//! block API every front end (in-process, FUSE, NBD) shares.
//!
//! I/O goes through `pread`/`pwrite` at explicit offsets, so any number of threads
//! may use one [`Image`] at once. Writes that cover only part of a 4096-byte unit
//! read, decrypt, patch, re-encrypt and write the whole unit; a striped lock table
//! makes such a read-modify-write exclusive against every other write touching the
//! same unit, while whole-unit writes only share their stripes.

use super::header::{
    Cipher, DATA_OFFSET, DATA_UNIT, Header, HeaderError, MacKey, Parsed, SLOT, ZERO_UNIT_IS_HOLE,
};
use crate::crypto::secret::SecretBytes;
use crate::crypto::xts::Xts;
use crate::error::{Error, ErrorKind, Field, Result};
use crate::num::usize_of;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

const U: usize = usize_of(DATA_UNIT);
const STRIPES: usize = 64;
/// Bytes written per call when zeros must be written rather than punched.
const ZERO_CHUNK: usize = 1 << 20;

/// One run of the allocation map: `length` bytes at volume offset `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// False for a hole: the range reads as zeros and stores nothing.
    pub allocated: bool,
}

/// Where the plaintext data key comes from when an encrypted image is opened: KMS
/// Decrypt of the header's wrapped key (the EC2 layer), or a key a test holds.
pub type Unlock<'a> = dyn FnMut(&Header) -> Result<SecretBytes> + 'a;

/// An open, exclusively locked volume image.
pub struct Image {
    file: File,
    path: PathBuf,
    /// Fixed at open (the header names it and never changes it); kept apart from
    /// the header's lock so error paths that hold that lock can still name it.
    volume_id: String,
    header: Mutex<Header>,
    size: AtomicU64,
    data_key: Option<SecretBytes>,
    xts: Option<Xts>,
    stripes: Box<[RwLock<()>]>,
    /// Changed-block tracking (None for images opened without it).
    cbt: Option<super::cbt::Cbt>,
    /// Every write holds this shared; a snapshot's cut holds it exclusively.
    cut: RwLock<()>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("path", &self.path)
            .field("size", &self.size())
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

fn image_error(id: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::ImageCorrupt, format!("{id}: {what}")).with(Field::VolumeId, id)
}

fn image_error_of(kind: ErrorKind, id: &str, what: impl std::fmt::Display) -> Error {
    Error::new(kind, format!("{id}: {what}")).with(Field::VolumeId, id)
}

thread_local! {
    /// Per-thread scratch for read-modify-write and unaligned reads: front ends
    /// serve each request on one thread, so after the first request of a given size
    /// the I/O path allocates nothing (a loop device over FUSE must not wait on
    /// memory reclaim that may need that very loop device).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on a scratch buffer of `len` bytes (contents unspecified).
fn with_scratch<T>(len: usize, f: impl FnOnce(&mut [u8]) -> T) -> T {
    SCRATCH.with(|s| match s.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0);
            }
            f(&mut buf[..len])
        }
        // Re-entered (cannot happen on the I/O path): use a fresh buffer.
        Err(_) => f(&mut vec![0u8; len]),
    })
}

/// True if a stored unit is a hole (all zero, FORMAT.md §4). Looks at the first
/// 16 bytes first: a ciphertext unit starts with 16 zero bytes with probability
/// 2⁻¹²⁸, so written units are told apart without a pass over the whole unit.
/// Writes a new image file at `path` (which must not exist): a sparse file of
/// `DATA_OFFSET + size` bytes with both header copies, fsynced. `data_key` is the
/// plaintext data key of an encrypted volume (it keys the header MAC).
pub fn create_file(path: &Path, header: &Header, data_key: Option<&SecretBytes>) -> Result<()> {
    let mac_key = data_key.map(|k| MacKey::derive(k.expose(), &header.volume_id));
    let bytes = header
        .encode(mac_key.as_ref())
        .map_err(|e| image_error_of(ErrorKind::VolumeImage, &header.volume_id, e))?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("cannot create {}", path.display()), e))?;
    let io = |e| Error::io(format!("cannot write {}", path.display()), e);
    file.set_len(DATA_OFFSET + header.size).map_err(io)?;
    file.write_all_at(&bytes, 0).map_err(io)?;
    file.write_all_at(&bytes, SLOT as u64).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

/// Reads and parses both header copies without opening the image for I/O (no lock,
/// no key): for inspection and tests.
pub fn read_copies(path: &Path) -> Result<[std::result::Result<Parsed, HeaderError>; 2]> {
    let file =
        File::open(path).map_err(|e| Error::io(format!("cannot open {}", path.display()), e))?;
    Ok(read_slots(&file))
}

fn read_slots(file: &File) -> [std::result::Result<Parsed, HeaderError>; 2] {
    let mut slots = vec![0u8; 2 * SLOT];
    let mut got = 0;
    while got < slots.len() {
        match file.read_at(&mut slots[got..], got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    let (a, b) = slots.split_at(SLOT);
    let parse = |s: &[u8], start: usize| {
        if got < start + super::header::MIN_LEN {
            Err(HeaderError::Malformed(
                "missing (the file is too short)".into(),
            ))
        } else {
            Header::parse(&s[..(got - start).min(SLOT)])
        }
    };
    [parse(a, 0), parse(b, SLOT)]
}

impl Image {
    /// Opens `path`, the image of `volume_id`: takes an exclusive lock (refusing a
    /// second opener), picks the newest valid header copy (FORMAT.md §2), obtains
    /// the data key through `unlock` for an encrypted volume and authenticates the
    /// header with it. Nothing is written.
    pub fn open(path: &Path, volume_id: &str, unlock: &mut Unlock<'_>) -> Result<Image> {
        let opened = Self::open_unscrubbed(path, volume_id, unlock);
        // KMS Decrypt (through `unlock`), the MAC key's HKDF and the key schedule ran
        // in frames below this one: zeroize them, whatever the outcome. Everything
        // secret that outlives them is on locked pages (src/crypto/stack.rs).
        crate::crypto::stack::scrub();
        opened
    }

    #[inline(never)]
    fn open_unscrubbed(path: &Path, volume_id: &str, unlock: &mut Unlock<'_>) -> Result<Image> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    image_error_of(
                        ErrorKind::ImageMissing,
                        volume_id,
                        format!("the image file {} is missing", path.display()),
                    )
                    .with(Field::File, path.display())
                } else {
                    Error::io(format!("cannot open {}", path.display()), e)
                }
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::new(
                    ErrorKind::VolumeInUse,
                    format!(
                        "{volume_id} is already attached (its image is locked by another attachment)"
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e));
            }
        }
        let copies = read_slots(&file);
        let mut candidates: Vec<(usize, &Parsed)> = copies
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.as_ref().ok().map(|p| (i, p)))
            .collect();
        // Newest first; copy A wins a tie.
        candidates.sort_by_key(|(i, p)| (std::cmp::Reverse(p.header.sequence), *i));
        if candidates.is_empty() {
            if let Some(Err(e @ HeaderError::Unsupported(_))) = copies
                .iter()
                .find(|c| matches!(c, Err(HeaderError::Unsupported(_))))
            {
                return Err(image_error_of(ErrorKind::ImageUnsupported, volume_id, e));
            }
            let why = |c: &std::result::Result<Parsed, HeaderError>| match c {
                Err(e) => e.to_string(),
                Ok(_) => "valid".into(),
            };
            return Err(image_error(
                volume_id,
                format!(
                    "no valid header: copy A: {}; copy B: {}",
                    why(&copies[0]),
                    why(&copies[1])
                ),
            ));
        }
        let mut first_error: Option<Error> = None;
        let mut tried: Option<(Vec<u8>, SecretBytes)> = None;
        for (_, parsed) in candidates {
            let h = &parsed.header;
            if h.volume_id != volume_id {
                first_error.get_or_insert_with(|| {
                    image_error(
                        volume_id,
                        format!(
                            "the image header belongs to {} in {}",
                            h.volume_id, h.region
                        ),
                    )
                });
                continue;
            }
            let key = match h.cipher {
                Cipher::None => None,
                Cipher::AesXtsPlain64 => {
                    let reuse = tried.take().filter(|(w, _)| *w == h.wrapped_key);
                    match reuse {
                        Some((_, k)) => Some(k),
                        None => match unlock(h) {
                            Ok(k) => Some(k),
                            Err(e) => {
                                first_error.get_or_insert(e);
                                continue;
                            }
                        },
                    }
                }
            };
            let mac_key = key.as_ref().map(|k| MacKey::derive(k.expose(), volume_id));
            if let Err(e) = parsed.verify(mac_key.as_ref()) {
                first_error.get_or_insert_with(|| image_error(volume_id, e));
                if let Some(k) = key {
                    tried = Some((h.wrapped_key.clone(), k));
                }
                continue;
            }
            let len = file
                .metadata()
                .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
                .len();
            let want = DATA_OFFSET + h.size;
            if len < want {
                return Err(image_error_of(
                    ErrorKind::ImageTruncated,
                    volume_id,
                    format!("the image is truncated: {len} bytes, expected {want}"),
                )
                .with(Field::File, path.display()));
            }
            let xts = match &key {
                Some(k) => Some(
                    Xts::new(k.expose())
                        .map_err(|e| image_error_of(ErrorKind::VolumeImage, volume_id, e))?,
                ),
                None => None,
            };
            let cbt = super::cbt::Cbt::open(path, h.size)?;
            return Ok(Image {
                size: AtomicU64::new(h.size),
                header: Mutex::new(h.clone()),
                file,
                path: path.to_path_buf(),
                volume_id: volume_id.to_string(),
                data_key: key,
                xts,
                stripes: (0..STRIPES).map(|_| RwLock::new(())).collect(),
                cbt: Some(cbt),
                cut: RwLock::new(()),
            });
        }
        Err(first_error.expect("every candidate recorded why it failed"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Volume size in bytes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn is_encrypted(&self) -> bool {
        self.xts.is_some()
    }

    /// True if the key schedule's pages are mlock'ed.
    pub fn key_is_locked(&self) -> bool {
        self.xts.as_ref().is_none_or(|x| x.is_locked())
    }

    /// The header in use (the newest valid copy).
    pub fn header(&self) -> Header {
        self.header.lock().expect("header lock").clone()
    }

    /// The volume this image belongs to. Takes no lock: error paths run while the
    /// header lock is held (grow, header updates).
    pub fn volume_id(&self) -> &str {
        &self.volume_id
    }

    fn check_range(&self, what: &str, offset: u64, len: u64) -> Result<()> {
        let size = self.size();
        match offset.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "{}: {what} of {len} bytes at offset {offset} is past the end of the volume ({size} bytes)",
                    self.volume_id()
                ),
            )
            .with(Field::VolumeId, self.volume_id())
            .with(Field::Offset, offset)
            .with(Field::Length, len)),
        }
    }

    fn io_error(&self, what: &str, offset: u64, e: std::io::Error) -> Error {
        Error::io(
            format!(
                "{}: {what} at offset {offset} of {}",
                self.volume_id(),
                self.path.display()
            ),
            e,
        )
    }

    /// Decrypts, in place, every stored unit of `buf` that is not a hole.
    fn decrypt_units(&self, first_unit: u64, buf: &mut [u8]) {
        if let Some(xts) = &self.xts {
            super::units::decrypt(xts, first_unit, buf);
        }
    }

    /// Reads whole units starting at `first_unit` into `buf` (plaintext).
    fn read_units(&self, first_unit: u64, buf: &mut [u8]) -> Result<()> {
        let at = DATA_OFFSET + first_unit * DATA_UNIT;
        self.file
            .read_exact_at(buf, at)
            .map_err(|e| self.io_error("read", first_unit * DATA_UNIT, e))?;
        self.decrypt_units(first_unit, buf);
        Ok(())
    }

    /// Reads `buf.len()` bytes at volume offset `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range("read", offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.xts.is_none() {
            return self
                .file
                .read_exact_at(buf, DATA_OFFSET + offset)
                .map_err(|e| self.io_error("read", offset, e));
        }
        let first = offset / DATA_UNIT;
        if offset.is_multiple_of(DATA_UNIT) && buf.len().is_multiple_of(U) {
            return self.read_units(first, buf);
        }
        let end = (offset + buf.len() as u64).div_ceil(DATA_UNIT);
        with_scratch(usize_of((end - first) * DATA_UNIT), |tmp| {
            self.read_units(first, tmp)?;
            let skip = usize_of(offset - first * DATA_UNIT);
            buf.copy_from_slice(&tmp[skip..skip + buf.len()]);
            Ok(())
        })
    }

    /// Takes the stripe locks for units `start..end`: exclusive for the units in
    /// `exclusive` (partial units being read-modified-written), shared otherwise.
    /// Stripes are always taken in ascending order, so lockers never deadlock.
    fn lock_units(&self, start: u64, end: u64, exclusive: &[u64]) -> Vec<StripeGuard<'_>> {
        let mut mode = [None::<bool>; STRIPES];
        let span = end - start;
        for u in start..start + span.min(STRIPES as u64) {
            mode[usize_of(u % STRIPES as u64)] = Some(false);
        }
        for u in exclusive {
            mode[usize_of(u % STRIPES as u64)] = Some(true);
        }
        mode.iter()
            .enumerate()
            .filter_map(|(i, m)| {
                m.map(|excl| {
                    if excl {
                        StripeGuard::W(self.stripes[i].write().expect("stripe"))
                    } else {
                        StripeGuard::R(self.stripes[i].read().expect("stripe"))
                    }
                })
            })
            .collect()
    }

    /// Writes `data` at volume offset `offset`; with `fua`, it is durable on return.
    pub fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        self.check_range("write", offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let _cut = self.cut.read().expect("cut lock");
        self.mark(offset, data.len() as u64)?;
        self.write_inner(offset, data, fua)
    }

    fn mark(&self, offset: u64, len: u64) -> Result<()> {
        match &self.cbt {
            Some(c) => c.mark(offset, len),
            None => Ok(()),
        }
    }

    /// [`Image::write`] once the range is checked, the cut lock held and the blocks
    /// marked changed.
    fn write_inner(&self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        match &self.xts {
            None => self
                .file
                .write_all_at(data, DATA_OFFSET + offset)
                .map_err(|e| self.io_error("write", offset, e))?,
            Some(xts) => {
                let end = offset + data.len() as u64;
                let first = offset / DATA_UNIT;
                let last = end.div_ceil(DATA_UNIT);
                let head = usize_of(offset % DATA_UNIT);
                let tail_partial = !end.is_multiple_of(DATA_UNIT);
                let mut partial = Vec::with_capacity(2);
                if head != 0 {
                    partial.push(first);
                }
                if tail_partial && (last - 1 != first || head == 0) {
                    partial.push(last - 1);
                }
                let _guards = self.lock_units(first, last, &partial);
                // Every byte of the scratch is set below: partial units are read
                // whole, the rest is the caller's data.
                with_scratch(usize_of((last - first) * DATA_UNIT), |tmp| {
                    if partial.is_empty() {
                        // Whole units: encrypt straight from the caller's data.
                        xts.encrypt_to(first, data, tmp).expect("whole units");
                    } else {
                        for &u in &partial {
                            let at = usize_of((u - first) * DATA_UNIT);
                            self.read_units(u, &mut tmp[at..at + U])?;
                        }
                        tmp[head..head + data.len()].copy_from_slice(data);
                        xts.encrypt(first, tmp).expect("whole units");
                    }
                    self.file
                        .write_all_at(tmp, DATA_OFFSET + first * DATA_UNIT)
                        .map_err(|e| self.io_error("write", offset, e))
                })?;
            }
        }
        if fua { self.flush() } else { Ok(()) }
    }

    /// Makes every completed write durable (fdatasync of the image).
    pub fn flush(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| self.io_error("flush", 0, e))
    }

    /// Discards `len` bytes at `offset`: they read as zeros afterwards, and whole
    /// units become holes.
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len, true)
    }

    /// Makes `len` bytes at `offset` read as zeros. With `punch`, whole units become
    /// holes (FORMAT.md §4); without it (NBD's NO_HOLE) they stay allocated, holding
    /// encrypted zeros.
    pub fn write_zeroes(&self, offset: u64, len: u64, punch: bool) -> Result<()> {
        self.check_range("write-zeroes", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let _cut = self.cut.read().expect("cut lock");
        self.mark(offset, len)?;
        let end = offset + len;
        let first_full = offset.div_ceil(DATA_UNIT);
        let last_full = end / DATA_UNIT;
        if first_full >= last_full {
            return self.write_inner(offset, &vec![0u8; usize_of(len)], false);
        }
        if !offset.is_multiple_of(DATA_UNIT) {
            self.write_inner(
                offset,
                &vec![0u8; usize_of(first_full * DATA_UNIT - offset)],
                false,
            )?;
        }
        if !end.is_multiple_of(DATA_UNIT) {
            self.write_inner(
                last_full * DATA_UNIT,
                &vec![0u8; usize_of(end - last_full * DATA_UNIT)],
                false,
            )?;
        }
        let _guards = self.lock_units(first_full, last_full, &[]);
        let start = DATA_OFFSET + first_full * DATA_UNIT;
        let bytes = (last_full - first_full) * DATA_UNIT;
        if punch && self.punch(start, bytes)? {
            return Ok(());
        }
        // Write zeros: literal zero bytes are holes by the ZERO_UNIT_IS_HOLE rule;
        // NO_HOLE on an encrypted volume stores the encryption of zeros instead.
        let mut unit = first_full;
        let mut buf = vec![0u8; ZERO_CHUNK];
        while unit < last_full {
            let n = (last_full - unit).min((ZERO_CHUNK / U) as u64);
            let chunk = &mut buf[..usize_of(n) * U];
            chunk.fill(0);
            if !punch && let Some(xts) = &self.xts {
                xts.encrypt(unit, chunk).expect("whole units");
            }
            self.file
                .write_all_at(chunk, DATA_OFFSET + unit * DATA_UNIT)
                .map_err(|e| self.io_error("write-zeroes", unit * DATA_UNIT, e))?;
            unit += n;
        }
        Ok(())
    }

    /// NBD's WRITE_ZEROES with FAST_ZERO: zeroes the range only if that is faster
    /// than writing it, which means punching whole units out of the image. Returns
    /// false, with nothing changed, when the filesystem cannot punch holes. The
    /// partial units at the edges (at most two) are written.
    pub fn write_zeroes_fast(&self, offset: u64, len: u64) -> Result<bool> {
        self.check_range("write-zeroes", offset, len)?;
        let end = offset + len;
        let first_full = offset.div_ceil(DATA_UNIT);
        let last_full = end / DATA_UNIT;
        if first_full < last_full {
            let _cut = self.cut.read().expect("cut lock");
            let _guards = self.lock_units(first_full, last_full, &[]);
            // Marked first: a crash after the punch must not hide it from the next
            // snapshot (a needless mark only copies one block more).
            self.mark(first_full * DATA_UNIT, (last_full - first_full) * DATA_UNIT)?;
            let start = DATA_OFFSET + first_full * DATA_UNIT;
            if !self.punch(start, (last_full - first_full) * DATA_UNIT)? {
                return Ok(false);
            }
        }
        // The edges (and a range inside one unit): small writes of zeros.
        let full_start = (first_full * DATA_UNIT).min(end);
        let full_end = (last_full * DATA_UNIT).max(full_start);
        if offset < full_start {
            self.write(offset, &vec![0u8; usize_of(full_start - offset)], false)?;
        }
        if full_end < end {
            let from = full_end.max(offset);
            self.write(from, &vec![0u8; usize_of(end - from)], false)?;
        }
        Ok(true)
    }

    /// Starts reading `len` bytes at `offset` into the page cache (NBD's CACHE): a
    /// hint, so errors are not reported.
    pub fn prefetch(&self, offset: u64, len: u64) {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        let _ = posix_fadvise(
            &self.file,
            (DATA_OFFSET + offset) as i64,
            len as i64,
            PosixFadviseAdvice::POSIX_FADV_WILLNEED,
        );
    }

    /// Punches a hole; false if the filesystem cannot.
    fn punch(&self, at: u64, len: u64) -> Result<bool> {
        use nix::fcntl::{FallocateFlags, fallocate};
        match fallocate(
            &self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            at as i64,
            len as i64,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => Ok(false),
            Err(e) => Err(self.io_error("punch hole", at - DATA_OFFSET, e.into())),
        }
    }

    /// Which parts of `len` bytes at `offset` hold data (FORMAT.md §4), from the
    /// image file's extent map. Adjacent runs of the same kind are merged.
    pub fn allocation(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        use nix::unistd::{Whence, lseek};
        self.check_range("allocation query", offset, len)?;
        let mut out: Vec<Extent> = Vec::new();
        let mut push = |start: u64, end: u64, allocated: bool| {
            if end <= start {
                return;
            }
            match out.last_mut() {
                Some(last) if last.allocated == allocated && last.offset + last.length == start => {
                    last.length += end - start
                }
                _ => out.push(Extent {
                    offset: start,
                    length: end - start,
                    allocated,
                }),
            }
        };
        let end = DATA_OFFSET + offset + len;
        let mut pos = DATA_OFFSET + offset;
        while pos < end {
            let data = match lseek(&self.file, pos as i64, Whence::SeekData) {
                Ok(d) => (d as u64).min(end),
                Err(nix::errno::Errno::ENXIO) => end,
                Err(nix::errno::Errno::EINVAL | nix::errno::Errno::EOPNOTSUPP) => {
                    push(pos - DATA_OFFSET, end - DATA_OFFSET, true);
                    break;
                }
                Err(e) => {
                    return Err(self.io_error("allocation query", pos - DATA_OFFSET, e.into()));
                }
            };
            push(pos - DATA_OFFSET, data - DATA_OFFSET, false);
            if data >= end {
                break;
            }
            let hole = match lseek(&self.file, data as i64, Whence::SeekHole) {
                Ok(h) => (h as u64).min(end),
                Err(e) => {
                    return Err(self.io_error("allocation query", data - DATA_OFFSET, e.into()));
                }
            };
            push(data - DATA_OFFSET, hole - DATA_OFFSET, true);
            pos = hole;
        }
        Ok(out)
    }

    /// A copy of the plaintext data key (locked memory), for an encrypted image.
    pub fn data_key(&self) -> Option<SecretBytes> {
        self.data_key.as_ref().map(SecretBytes::duplicate)
    }

    /// The cipher of an encrypted image (for the re-key, which moves its units to
    /// another one).
    pub(super) fn xts(&self) -> Option<&Xts> {
        self.xts.as_ref()
    }

    /// Decrypts, in place, stored units (as [`Image::read_stored`] returns them) that
    /// are not holes; for an unencrypted volume it does nothing.
    pub fn decrypt_stored(&self, first_unit: u64, buf: &mut [u8]) {
        self.decrypt_units(first_unit, buf)
    }

    /// Replaces the header (both copies, FORMAT.md §2), authenticated with the data
    /// key `key` (the current one, or the new one when a re-key completes). The
    /// caller keeps the sequence number increasing.
    pub fn set_header(&self, next: Header, key: &SecretBytes) -> Result<()> {
        let mut cur = self.header.lock().expect("header lock");
        let mac_key = MacKey::derive(key.expose(), &next.volume_id);
        let bytes = next
            .encode(Some(&mac_key))
            .map_err(|e| image_error_of(ErrorKind::VolumeImage, &next.volume_id, e))?;
        let mut slot = vec![0u8; SLOT];
        slot[..bytes.len()].copy_from_slice(&bytes);
        for at in [0, SLOT as u64] {
            self.file
                .write_all_at(&slot, at)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| self.io_error("header update", at, e))?;
        }
        *cur = next;
        Ok(())
    }

    /// What changed since the last snapshot (FORMAT.md §8).
    pub fn changes(&self) -> super::cbt::Changes {
        match &self.cbt {
            Some(c) => c.changes(),
            None => super::cbt::Changes {
                base: None,
                blocks: Vec::new(),
            },
        }
    }

    /// Starts a new tracking epoch after snapshot `base`.
    pub fn reset_tracking(&self, base: Option<&str>) -> Result<()> {
        match (&self.cbt, base) {
            (Some(c), Some(b)) => c.reset(b, self.size()),
            (Some(c), None) => c.grow(0, self.size()),
            (None, _) => Ok(()),
        }
    }

    /// Holds every write until the guard drops: the instant of a snapshot's cut.
    /// Completed writes are flushed first.
    pub fn hold_writes(&self) -> Result<std::sync::RwLockWriteGuard<'_, ()>> {
        let g = self.cut.write().expect("cut lock");
        self.flush()?;
        Ok(g)
    }

    /// Reads stored bytes (ciphertext for an encrypted volume) of whole units.
    pub fn read_stored(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range("stored read", offset, buf.len() as u64)?;
        self.file
            .read_exact_at(buf, DATA_OFFSET + offset)
            .map_err(|e| self.io_error("stored read", offset, e))
    }

    /// Writes stored bytes as they are (ciphertext under this volume's data key, or
    /// a hole's zeros): restoring a snapshot taken under the same data key.
    pub fn write_stored(&self, offset: u64, buf: &[u8]) -> Result<()> {
        self.check_range("stored write", offset, buf.len() as u64)?;
        if !offset.is_multiple_of(DATA_UNIT) || !(buf.len() as u64).is_multiple_of(DATA_UNIT) {
            return Err(Error::new(
                ErrorKind::OutOfRange,
                format!(
                    "stored writes are whole 4096-byte units, not {} bytes at {offset}",
                    buf.len()
                ),
            )
            .with(Field::VolumeId, self.volume_id())
            .with(Field::Offset, offset)
            .with(Field::Length, buf.len()));
        }
        let _cut = self.cut.read().expect("cut lock");
        self.mark(offset, buf.len() as u64)?;
        self.file
            .write_all_at(buf, DATA_OFFSET + offset)
            .map_err(|e| self.io_error("stored write", offset, e))
    }

    /// Grows the volume to `new_size` bytes (a multiple of 4096, not smaller than
    /// now): the file first, then both header copies (FORMAT.md §2).
    pub fn grow(&self, new_size: u64) -> Result<()> {
        let mut header = self.header.lock().expect("header lock");
        if new_size < header.size || !new_size.is_multiple_of(DATA_UNIT) {
            return Err(Error::new(
                ErrorKind::InvalidParameterValue,
                format!(
                    "{}: the new size {new_size} must be a multiple of 4096 and at least the current size {}",
                    header.volume_id, header.size
                ),
            ));
        }
        self.file
            .set_len(DATA_OFFSET + new_size)
            .and_then(|()| self.file.sync_all())
            .map_err(|e| self.io_error("grow", new_size, e))?;
        crate::fault::point("grow:after-set-len");
        let _cut = self.cut.read().expect("cut lock");
        if let Some(c) = &self.cbt {
            c.grow(header.size, new_size)?;
        }
        let mut next = header.clone();
        next.size = new_size;
        next.sequence += 1;
        next.incompat_features |= ZERO_UNIT_IS_HOLE;
        self.write_header(&next)?;
        *header = next;
        self.size.store(new_size, Ordering::Release);
        Ok(())
    }

    /// Writes `h` to copy A, fsyncs, then to copy B, and fsyncs (FORMAT.md §2).
    fn write_header(&self, h: &Header) -> Result<()> {
        let mac_key = self
            .data_key
            .as_ref()
            .map(|k| MacKey::derive(k.expose(), &h.volume_id));
        let bytes = h
            .encode(mac_key.as_ref())
            .map_err(|e| image_error_of(ErrorKind::VolumeImage, &h.volume_id, e))?;
        let mut slot = vec![0u8; SLOT];
        slot[..bytes.len()].copy_from_slice(&bytes);
        for at in [0, SLOT as u64] {
            self.file
                .write_all_at(&slot, at)
                .and_then(|()| self.file.sync_data())
                .map_err(|e| self.io_error("header update", at, e))?;
            if at == 0 {
                crate::fault::point("grow:after-header-a");
            }
        }
        Ok(())
    }
}

enum StripeGuard<'a> {
    R(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    W(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}
