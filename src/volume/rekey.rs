//! Re-keying a volume in place: the engine behind `ebsim ec2 rekey-volume`
//! (docs/FORMAT.md §9). The service that owns the volume makes the new data key
//! and unwraps it; this module moves the units and keeps the journal.
//!
//! Every allocated unit is decrypted and re-encrypted, in chunks. Modelled on
//! LUKS2's online re-encryption with journal resilience: the header records the
//! new wrapped key and a boundary (units below it are under the new key); before a
//! chunk is overwritten its old ciphertext's signatures go to a journal file
//! (`vol-….rekey`, fsynced), then the chunk is rewritten and fsynced, then the
//! boundary moves (both header copies, fsynced). A kill at any moment leaves either
//! the chunk whole under the old key, or its old units recognisable from the
//! journal for the boundary the header still names — a rerun re-encrypts just
//! those and carries on. The last step writes a header that names only the new
//! key, authenticated under the new data key.
//!
//! Crash points (`crate::fault`): `rekey:started`, `rekey:after-journal`,
//! `rekey:after-data`, `rekey:after-boundary`, `rekey:before-final-header`,
//! `rekey:after-final-header`.

use super::DATA_UNIT;
use super::header::Rekey;
use super::image::Image;
use super::units;
use crate::crypto::secret::SecretBytes;
use crate::crypto::xts::Xts;
use crate::error::{Error, ErrorKind, Result};
use crate::num::usize_of;
use sha2::Digest;
use std::path::{Path, PathBuf};

const JOURNAL_MAGIC: &[u8; 8] = b"EBSIMRKJ";
/// Units per chunk by default (64 MiB; a re-key holds two chunks in memory, the
/// one being written and the next, read ahead). Each chunk costs
/// four device flushes (journal, data, two header copies), so the chunk must be
/// large for the flushes not to dominate: on the project's machine 16 MiB chunks
/// took ~12 s for 4 GiB, 64 MiB ~10 s, 256 MiB ~9 s.
const CHUNK_UNITS: u64 = 16384;

/// A chunk read and re-encrypted in memory, not yet written.
struct Prepared {
    start: u64,
    end: u64,
    /// The chunk's units, the old ones now under the new key.
    buf: Vec<u8>,
    /// The old units' signatures, for a journal to write before `buf` (None for
    /// the chunk a rerun resumes: its journal is on disk already).
    journal: Option<Vec<[u8; SIG]>>,
}

/// The journal file of the image at `image`: beside it, `vol-….rekey`.
pub fn journal_path(image: &Path) -> PathBuf {
    image.with_extension("rekey")
}

/// Opens (creating, mode 0600) the journal file that every chunk's journal
/// overwrites in place. A new file's directory entry is fsynced here, once, so
/// each chunk then costs one `fdatasync` of the journal instead of a temporary
/// file, its fsync, a rename and a directory fsync.
fn open_journal(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Error::io(
                format!("cannot open the re-key journal {}", path.display()),
                e,
            )
        })?;
    if !existed {
        crate::fsutil::fsync_dir(path.parent().expect("images live in a directory"))?;
    }
    Ok(file)
}

/// Writes the journal for the chunk at `boundary` — magic, boundary, unit count,
/// each old unit's signature, and the SHA-256 of all that — over the previous
/// one, and `fdatasync`s it. Overwriting in place is safe: a kill mid-write leaves
/// bytes whose SHA-256 does not match (or the previous chunk's boundary), which
/// reads as "no journal", and that is the truth for this chunk, whose units are
/// only rewritten after this function returns.
fn write_journal(
    file: &std::fs::File,
    path: &Path,
    boundary: u64,
    sums: &[[u8; SIG]],
) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = Vec::with_capacity(24 + SIG * sums.len() + 32);
    buf.extend_from_slice(JOURNAL_MAGIC);
    buf.extend_from_slice(&boundary.to_le_bytes());
    buf.extend_from_slice(&(sums.len() as u64).to_le_bytes());
    for s in sums {
        buf.extend_from_slice(s);
    }
    let check = sha2::Sha256::digest(&buf);
    buf.extend_from_slice(&check);
    let io = |e| {
        Error::io(
            format!("cannot write the re-key journal {}", path.display()),
            e,
        )
    };
    file.write_all_at(&buf, 0).map_err(io)?;
    file.set_len(buf.len() as u64).map_err(io)?;
    file.sync_data().map_err(io)
}

/// The journal's per-unit signatures, if it is whole and belongs to `boundary`.
fn read_journal(path: &Path, boundary: u64) -> Option<Vec<[u8; SIG]>> {
    let b = std::fs::read(path).ok()?;
    if b.len() < 56 || &b[..8] != JOURNAL_MAGIC {
        return None;
    }
    let (body, check) = b.split_at(b.len() - 32);
    if sha2::Sha256::digest(body)[..] != *check {
        return None;
    }
    let at = u64::from_le_bytes(body[8..16].try_into().ok()?);
    let n = usize::try_from(u64::from_le_bytes(body[16..24].try_into().ok()?)).ok()?;
    let sums = body.get(24..24 + SIG * n)?;
    (at == boundary && body.len() == 24 + SIG * n).then(|| {
        sums.chunks_exact(SIG)
            .map(|c| c.try_into().expect("SIG bytes"))
            .collect()
    })
}

/// Bytes of a unit's signature in the journal.
const SIG: usize = 16;

fn unit_sum(unit: &[u8]) -> [u8; SIG] {
    unit[..SIG]
        .try_into()
        .expect("a unit is longer than its signature")
}

/// Starts a re-key of `image` (encrypted, no re-key in progress) to the data key
/// `wrapped_key`, which KMS key `kms_key_arn` wraps: the header names it with the
/// boundary at 0, and a journal left by an earlier re-key is removed.
pub fn begin(image: &Image, kms_key_arn: String, wrapped_key: Vec<u8>) -> Result<()> {
    let old_key = current_key(image)?;
    let mut next = image.header();
    next.sequence += 1;
    next.rekey = Some(Rekey {
        kms_key_arn,
        wrapped_key,
        boundary: 0,
    });
    image.set_header(next, &old_key)?;
    let _ = std::fs::remove_file(journal_path(image.path()));
    crate::fault::point("rekey:started");
    Ok(())
}

/// Carries the re-key the header of `image` names (begun by [`begin`], or cut
/// short by a kill) to its end; `new_key` is the plaintext of the header's new
/// wrapped key. Ends with a header that names only the new key, tracking reset
/// (the next snapshot is full), the image closed and the journal gone.
/// `progress(done, total)` (units) is called after every chunk. Returns the
/// KMS key ARN the volume is now under.
pub fn finish(image: Image, new_key: &SecretBytes, progress: &dyn Fn(u64, u64)) -> Result<String> {
    let volume_id = image.volume_id().to_string();
    let old_key = current_key(&image)?;
    let old_xts = image.xts().expect("encrypted images have a cipher");
    let journal = journal_path(image.path());
    let new_xts = Xts::new(new_key.expose())
        .map_err(|e| Error::new(ErrorKind::VolumeImage, format!("{volume_id}: {e}")))?;
    let units = image.size() / DATA_UNIT;
    let chunk = std::env::var("EBSIM_REKEY_CHUNK_UNITS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|c: &u64| *c > 0)
        .unwrap_or(CHUNK_UNITS);
    let mut boundary = match &image.header().rekey {
        Some(r) => r.boundary,
        None => {
            return Err(Error::new(
                ErrorKind::Internal,
                format!("{volume_id}: no re-key is in progress"),
            ));
        }
    };
    // The chunk a kill cut short: its journal says which units are still old.
    let resumed = read_journal(&journal, boundary);
    let journal_file = open_journal(&journal)?;
    let allocated: Vec<(u64, u64)> = image
        .allocation(0, image.size())?
        .into_iter()
        .filter(|e| e.allocated)
        .map(|e| {
            (
                e.offset / DATA_UNIT,
                (e.offset + e.length).div_ceil(DATA_UNIT),
            )
        })
        .collect();
    // The chunk after `from`: holes are skipped (they are holes under any key).
    let next_chunk = |from: u64| -> Option<(u64, u64)> {
        allocated
            .iter()
            .find(|(_, end)| *end > from)
            .map(|(start, _)| (*start).max(from))
            .map(|start| (start, (start + chunk).min(units)))
    };
    // Reads a chunk, notes which units are old (from the resumed journal, or
    // all of them, keeping their signatures for a new journal) and re-encrypts
    // the old ones in memory. Nothing is written: this can run for the next
    // chunk while the current one is written and flushed, on units no step
    // of the current chunk touches.
    let prepare = |start: u64, end: u64, old_sums: Option<Vec<[u8; SIG]>>| -> Result<Prepared> {
        let mut buf = vec![0u8; usize_of((end - start) * DATA_UNIT)];
        image.read_stored(start * DATA_UNIT, &mut buf)?;
        let (is_old, journal) = match old_sums {
            Some(sums) => (
                buf.chunks_exact(units::UNIT)
                    .zip(&sums)
                    .map(|(u, s)| unit_sum(u) == *s)
                    .collect(),
                None,
            ),
            None => {
                let sums: Vec<[u8; SIG]> = buf.chunks_exact(units::UNIT).map(unit_sum).collect();
                (vec![true; sums.len()], Some(sums))
            }
        };
        {
            use rayon::prelude::*;
            buf.par_chunks_mut(units::UNIT)
                .enumerate()
                .filter(|(i, _)| is_old[*i])
                .for_each(|(i, unit)| units::reencrypt(old_xts, &new_xts, start + i as u64, unit));
        }
        Ok(Prepared {
            start,
            end,
            buf,
            journal,
        })
    };
    let mut next = match resumed {
        // The chunk a kill cut short, at the boundary the header names.
        Some(sums) => Some(prepare(
            boundary,
            (boundary + sums.len() as u64).min(units),
            Some(sums),
        )?),
        None => next_chunk(boundary)
            .map(|(start, end)| prepare(start, end, None))
            .transpose()?,
    };
    // Per chunk, in this order: boundary over a skipped hole; journal of the old
    // signatures (fdatasync); the chunk's new ciphertext (fdatasync); boundary
    // past the chunk (both header copies). The next chunk is read and
    // re-encrypted meanwhile, so the device is not idle while the CPU works.
    while let Some(cur) = next.take() {
        if cur.start > boundary {
            // Moving the boundary over a hole needs no journal.
            move_boundary(&image, &old_key, cur.start)?;
        }
        if let Some(sums) = &cur.journal {
            write_journal(&journal_file, &journal, cur.start, sums)?;
            crate::fault::point("rekey:after-journal");
        }
        let ahead = std::thread::scope(|scope| -> Result<Option<Prepared>> {
            let ahead = scope.spawn(|| {
                next_chunk(cur.end)
                    .map(|(start, end)| prepare(start, end, None))
                    .transpose()
            });
            let written = image
                .write_stored(cur.start * DATA_UNIT, &cur.buf)
                .and_then(|()| image.flush())
                .map(|()| crate::fault::point("rekey:after-data"))
                .and_then(|()| move_boundary(&image, &old_key, cur.end))
                .map(|()| crate::fault::point("rekey:after-boundary"));
            let ahead = ahead.join().expect("the read-ahead does not panic");
            written?;
            ahead
        })?;
        boundary = cur.end;
        progress(boundary, units);
        next = ahead;
    }
    // Done: the header names only the new key, authenticated under it.
    let cur = image.header();
    let r = cur.rekey.clone().expect("in progress");
    let mut fin = cur.clone();
    fin.sequence += 1;
    fin.kms_key_arn = r.kms_key_arn.clone();
    fin.wrapped_key = r.wrapped_key.clone();
    fin.rekey = None;
    crate::fault::point("rekey:before-final-header");
    image.set_header(fin, new_key)?;
    crate::fault::point("rekey:after-final-header");
    image.reset_tracking(None)?;
    drop(image);
    drop(journal_file);
    let _ = std::fs::remove_file(&journal);
    progress(units, units);
    Ok(r.kms_key_arn)
}

/// The data key the image is open with (the old one, during a re-key).
fn current_key(image: &Image) -> Result<SecretBytes> {
    image.data_key().ok_or_else(|| {
        Error::new(
            ErrorKind::IncorrectState,
            format!(
                "{} is not encrypted; it has no key to change",
                image.volume_id()
            ),
        )
    })
}

fn move_boundary(image: &Image, old_key: &SecretBytes, to: u64) -> Result<()> {
    let mut next = image.header();
    next.sequence += 1;
    next.rekey.as_mut().expect("in progress").boundary = to;
    image.set_header(next, old_key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_is_overwritten_in_place_and_a_torn_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vol-1.rekey");
        let file = open_journal(&path).unwrap();
        let long: Vec<[u8; SIG]> = (0..16u8).map(|i| [i; SIG]).collect();
        let short: Vec<[u8; SIG]> = (0..3u8).map(|i| [0x80 | i; SIG]).collect();
        write_journal(&file, &path, 0, &long).unwrap();
        assert_eq!(read_journal(&path, 0), Some(long.clone()));
        assert_eq!(read_journal(&path, 16), None, "another chunk's journal");
        // A shorter journal over a longer one: the file is cut to its length.
        write_journal(&file, &path, 16, &short).unwrap();
        assert_eq!(read_journal(&path, 16), Some(short.clone()));
        assert_eq!(read_journal(&path, 0), None);
        // A kill during the overwrite: the new journal's first bytes over the old
        // one, no truncation. Reads as no journal for either chunk.
        write_journal(&file, &path, 0, &long).unwrap();
        let whole = std::fs::read(&path).unwrap();
        write_journal(&file, &path, 16, &short).unwrap();
        let new = std::fs::read(&path).unwrap();
        let mut torn = whole.clone();
        torn[..new.len() / 2].copy_from_slice(&new[..new.len() / 2]);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(read_journal(&path, 0), None);
        assert_eq!(read_journal(&path, 16), None);
        let mut torn = whole;
        torn[..new.len()].copy_from_slice(&new);
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(read_journal(&path, 0), None);
        assert_eq!(read_journal(&path, 16), None);
        use std::os::unix::fs::MetadataExt;
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
    }
}
