//! Where copies of secret bytes sit in a running process: reads `/proc/PID/smaps`
//! (each mapping's range, permissions, name and `VmFlags`, where `lo` means
//! mlock'ed) and `/proc/PID/mem`, and reports every place a needle occurs and
//! whether every page under it is locked.
//!
//! tests/key_memory.rs checks an attachment process with it; a soak runner can call
//! [`scan`] on any process (scripts/soak/memscan.py is the same scan without a Rust
//! build). Reading another process's memory needs ptrace access to it: the same
//! user under `kernel.yama.ptrace_scope` 0 for an ordinary process, CAP_SYS_PTRACE
//! (root) for a non-dumpable one such as `ebsim`; without it [`scan`] returns the
//! `PermissionDenied` error the kernel gave.
//!
//! The scan reads a live process, so it sees a moment: a copy made and wiped between
//! two reads is missed. Mappings that follow each other in memory are searched as
//! one run, so a copy that straddles a locked and an unlocked mapping (mlock splits a
//! mapping in two) is found, and counted as unlocked.

use std::collections::BTreeSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One line of `/proc/PID/maps` with its `VmFlags`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// `rwxp` as the kernel prints it.
    pub perms: String,
    /// The path or `[heap]`, `[stack]`, …; for an anonymous mapping holding a
    /// thread's stack pointer, `[stack:TID name]`; else empty.
    pub name: String,
    /// `VmFlags` has `lo`: the pages are mlock'ed.
    pub locked: bool,
}

impl Mapping {
    pub fn readable(&self) -> bool {
        self.perms.starts_with('r')
    }
}

/// One occurrence of a needle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    /// The needle's label, as given to [`scan`].
    pub needle: String,
    pub addr: u64,
    /// The mapping the copy starts in.
    pub mapping: Mapping,
    /// Every mapping under the copy is locked.
    pub locked: bool,
}

impl std::fmt::Display for Hit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = &self.mapping;
        write!(
            f,
            "{} at {:#x} in {:x}-{:x} {} {} ({})",
            self.needle,
            self.addr,
            m.start,
            m.end,
            m.perms,
            if m.name.is_empty() {
                "[anonymous]"
            } else {
                &m.name
            },
            if self.locked { "locked" } else { "NOT locked" }
        )
    }
}

/// What one scan saw.
#[derive(Debug, Default)]
pub struct Report {
    pub mappings: Vec<Mapping>,
    pub hits: Vec<Hit>,
    pub bytes_read: u64,
    /// Readable mappings the kernel would not let us read, and why.
    pub unreadable: Vec<(Mapping, String)>,
}

impl Report {
    /// Copies in memory that can be swapped out.
    pub fn unlocked(&self) -> Vec<&Hit> {
        self.hits.iter().filter(|h| !h.locked).collect()
    }

    pub fn locked(&self) -> Vec<&Hit> {
        self.hits.iter().filter(|h| h.locked).collect()
    }
}

/// Parses `/proc/PID/smaps` text.
pub fn parse_smaps(text: &str) -> Vec<Mapping> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(m) = out.last_mut() {
                m.locked = flags.split_whitespace().any(|f| f == "lo");
            }
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(range) = fields.next() else { continue };
        let Some((a, b)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        let perms = fields.next().unwrap_or_default().to_string();
        // offset, device, inode, then the name (which may contain spaces).
        let name = line
            .splitn(6, char::is_whitespace)
            .nth(5)
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push(Mapping {
            start,
            end,
            perms,
            name,
            locked: false,
        });
    }
    out
}

/// Each thread's stack pointer, from `/proc/PID/task/TID/syscall` (threads blocked
/// in a system call report it; running ones say `running`): `(tid, comm, sp)`.
pub fn thread_stack_pointers(pid: u32) -> Vec<(u32, String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(tid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        let syscall = std::fs::read_to_string(e.path().join("syscall")).unwrap_or_default();
        let fields: Vec<&str> = syscall.split_whitespace().collect();
        // "nr a1 a2 a3 a4 a5 a6 sp pc"
        if fields.len() == 9
            && let Some(sp) = fields[7]
                .strip_prefix("0x")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
        {
            out.push((tid, comm.trim().to_string(), sp));
        }
    }
    out
}

/// Mappings the kernel lets no one read through `/proc/PID/mem`.
fn special(m: &Mapping) -> bool {
    m.name.starts_with("[vvar") || m.name == "[vsyscall]"
}

/// Searches every readable mapping of `pid` for each `(label, bytes)` needle (each
/// at least 15 bytes long). `Err` if `/proc/PID/smaps` or `/proc/PID/mem` cannot be
/// opened (no such process, or no ptrace access).
pub fn scan(pid: u32, needles: &[(&str, &[u8])]) -> io::Result<Report> {
    assert!(
        needles.iter().all(|(_, n)| n.len() >= 15),
        "needles are at least 15 bytes (one aligned 8-byte word lies within them)"
    );
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mem = File::open(format!("/proc/{pid}/mem"))?;
    let mut mappings = parse_smaps(&smaps);
    if mappings.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("process {pid} has no memory mappings (it has exited)"),
        ));
    }
    for (tid, comm, sp) in thread_stack_pointers(pid) {
        if let Some(m) = mappings
            .iter_mut()
            .find(|m| m.start <= sp && sp < m.end && (m.name.is_empty() || m.name == "[stack]"))
        {
            m.name = format!("[stack:{tid} {comm}]");
        }
    }
    // Probe: a process we may not trace has smaps we can read only partly and a mem
    // file that refuses every read.
    if let Some(m) = mappings.iter().find(|m| m.readable() && !special(m)) {
        let mut probe = [0u8; 1];
        mem.read_at(&mut probe, m.start)?;
    }
    let finder = Finder::new(needles);
    let overlap = needles.iter().map(|(_, n)| n.len()).max().unwrap_or(0) - 1;
    let mut report = Report::default();
    let mut seen = BTreeSet::new();
    // The tail of the previous chunk and where it starts, when it is contiguous.
    let mut carry: Vec<u8> = Vec::new();
    let mut carry_at = 0u64;
    const CHUNK: u64 = 4 << 20;
    for m in &mappings {
        if !m.readable() || special(m) {
            carry.clear();
            continue;
        }
        if carry_at + carry.len() as u64 != m.start {
            carry.clear();
        }
        let mut at = m.start;
        while at < m.end {
            let len = crate::num::usize_of(CHUNK.min(m.end - at));
            let mut buf = std::mem::take(&mut carry);
            let base = at - buf.len() as u64;
            let old = buf.len();
            buf.resize(old + len, 0);
            match read_fully(&mem, &mut buf[old..], at) {
                Ok(()) => {}
                Err(e) => {
                    report.unreadable.push((m.clone(), e.to_string()));
                    break;
                }
            }
            report.bytes_read += len as u64;
            for (i, off) in finder.find(&buf) {
                let addr = base + off as u64;
                if seen.insert((i, addr)) {
                    let end = addr + needles[i].1.len() as u64;
                    let under: Vec<&Mapping> = mappings
                        .iter()
                        .filter(|x| x.start < end && addr < x.end)
                        .collect();
                    report.hits.push(Hit {
                        needle: needles[i].0.to_string(),
                        addr,
                        mapping: (*under.first().expect("a hit lies in a mapping")).clone(),
                        locked: under.iter().all(|x| x.locked),
                    });
                }
            }
            let keep = overlap.min(buf.len());
            carry = buf.split_off(buf.len() - keep);
            carry_at = base + buf.len() as u64;
            at += len as u64;
        }
    }
    report.mappings = mappings;
    Ok(report)
}

fn read_fully(f: &File, mut buf: &mut [u8], mut at: u64) -> io::Result<()> {
    while !buf.is_empty() {
        match f.read_at(buf, at)? {
            0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            n => {
                buf = &mut buf[n..];
                at += n as u64;
            }
        }
    }
    Ok(())
}

/// Finds needles of 15 bytes or more at any offset while looking at one aligned
/// 8-byte word in eight: every occurrence covers a whole aligned word, which is one
/// of the needle's eight 8-byte windows. A 64 Ki-bit filter on the word's low 16
/// bits leaves a full comparison for about one word in several thousand (the scan
/// runs in unoptimized test builds too, over hundreds of MiB).
struct Finder<'a> {
    needles: Vec<&'a [u8]>,
    filter: Vec<u64>,
    /// (word value, needle index, offset of the word in the needle)
    words: Vec<(u64, usize, usize)>,
}

impl<'a> Finder<'a> {
    fn new(needles: &[(&str, &'a [u8])]) -> Self {
        let mut filter = vec![0u64; 1024];
        let mut words = Vec::new();
        for (i, (_, n)) in needles.iter().enumerate() {
            for k in 0..8 {
                let w = u64::from_le_bytes(n[k..k + 8].try_into().expect("8 bytes"));
                filter[(w & 0xffff) as usize / 64] |= 1 << (w & 63);
                words.push((w, i, k));
            }
        }
        Finder {
            needles: needles.iter().map(|(_, n)| *n).collect(),
            filter,
            words,
        }
    }

    /// `(needle index, offset)` of every occurrence in `buf`.
    fn find(&self, buf: &[u8]) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (j, c) in buf.chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            if self.filter[(w & 0xffff) as usize / 64] & (1 << (w & 63)) == 0 {
                continue;
            }
            let at = 8 * j;
            for &(value, i, k) in &self.words {
                let n = self.needles[i];
                if value == w && at >= k && buf.get(at - k..at - k + n.len()) == Some(n) {
                    out.push((i, at - k));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_needles_at_every_offset_once() {
        let needle: Vec<u8> = (1..=32u8).collect();
        let f = Finder::new(&[("n", &needle)]);
        for off in 0..24 {
            let mut hay = vec![0u8; 128];
            hay[off..off + 32].copy_from_slice(&needle);
            assert_eq!(f.find(&hay), vec![(0, off)], "offset {off}");
        }
        assert!(f.find(&needle[..31]).is_empty());
    }

    #[test]
    fn smaps_lines_give_ranges_names_and_the_lock_flag() {
        let text = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Size:                132 kB
VmFlags: rd wr mr mw me ac sd
7f1e2c000000-7f1e2c001000 rw-p 00000000 00:00 0 
VmFlags: rd wr mr mw me lo ac sd
7f1e2d000000-7f1e2d100000 r--p 00001000 08:01 1234   /usr/lib/a b.so
VmFlags: rd mr mw me sd
";
        let m = parse_smaps(text);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].start, m[0].end), (0x55d0c0a00000, 0x55d0c0a21000));
        assert_eq!(m[0].name, "[heap]");
        assert!(!m[0].locked && m[1].locked && !m[2].locked);
        assert_eq!(m[1].name, "");
        assert_eq!(m[2].name, "/usr/lib/a b.so");
        assert!(m[2].readable() && m[2].perms == "r--p");
    }

    #[test]
    fn scans_this_process_and_sees_a_locked_secret_as_locked() {
        let s = crate::crypto::SecretBytes::random(64);
        let needle = s.expose().to_vec();
        let r = match scan(std::process::id(), &[("secret", &needle)]) {
            Ok(r) => r,
            Err(e) => {
                crate::test_skip::skip(&format!("cannot read this process's memory: {e}"));
                return;
            }
        };
        let addr = s.expose().as_ptr() as u64;
        let hit = r
            .hits
            .iter()
            .find(|h| h.addr == addr)
            .expect("the secret's page");
        assert_eq!(hit.locked, s.is_locked());
        // `needle` itself is an unlocked heap copy.
        let copy = needle.as_ptr() as u64;
        assert!(r.hits.iter().any(|h| h.addr == copy && !h.locked));
    }
}
