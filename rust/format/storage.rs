//! The on-disk format shared by every index kind, and buffers that are either owned or mmapped.
//!
//! ```text
//! header (64 bytes, little-endian)
//!   0  magic   b"RANKFNL\0"
//!   8  u32     format version
//!  12  u32     kind (1 flat, 2 hnsw, 3 ivf, 4 multi-vector, 5 bm25)
//!  16  u32     dim
//!  20  u32     metric code
//!  24  u32     dtype code of the main vectors (1 f32, 2 f16, 3 i8, 4 u8)
//!  28  u32     number of sections
//!  32  u64     count (vectors or documents)
//!  40  [u8;20] reserved (zero)
//!  60  u32     CRC-32 of bytes 0..60 and the section table
//! section table: one 32-byte entry per section
//!   tag [u8;8], offset u64, length u64, CRC-32 u32, reserved u32
//! sections, each starting on a 64-byte boundary (so they can be used in place from an mmap)
//! ```
//! Files are written to a temporary name, fsynced and renamed over the target, so a crash
//! leaves either the old file or the new one.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use memmap2::Mmap;

use crate::kernels::metric::Metric;
use crate::util::error::{Error, Result};

/// First bytes of every rankfunnel index file.
pub const MAGIC: [u8; 8] = *b"RANKFNL\0";
/// The newest format version this build writes and reads. Version 2 stores the u8 codes of an
/// int8 IVFIndex in the quad layout (version 1 files are converted when loaded); version 3 adds
/// an IVFIndex's coarse quantizer setting and centroid graph (older files rebuild the graph).
pub const VERSION: u32 = 3;
const HEADER: usize = 64;
const ENTRY: usize = 32;
const ALIGN: usize = 64;

/// Which index a file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// [`crate::FlatIndex`].
    Flat = 1,
    /// HNSW graph index.
    Hnsw = 2,
    /// Inverted-file index.
    Ivf = 3,
    /// Multi-vector (late interaction) index.
    MultiVector = 4,
    /// Lexical BM25 index (dim 0; see [`crate::index::bm25`]).
    Bm25 = 5,
}

impl Kind {
    /// Decode a kind code.
    pub fn from_code(c: u32) -> Option<Kind> {
        match c {
            1 => Some(Kind::Flat),
            2 => Some(Kind::Hnsw),
            3 => Some(Kind::Ivf),
            4 => Some(Kind::MultiVector),
            5 => Some(Kind::Bm25),
            _ => None,
        }
    }

    /// Human name, as used in error messages and `rf.load`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Flat => "FlatIndex",
            Kind::Hnsw => "HNSWIndex",
            Kind::Ivf => "IVFIndex",
            Kind::MultiVector => "MultiVectorIndex",
            Kind::Bm25 => "BM25Index",
        }
    }
}

/// Element type of the main vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    /// 32-bit float.
    F32 = 1,
    /// 16-bit float.
    F16 = 2,
    /// Signed 8-bit integer.
    I8 = 3,
    /// Unsigned 8-bit integer.
    U8 = 4,
}

/// What the fixed header says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Header {
    /// Index kind.
    pub kind: Kind,
    /// Vector dimension.
    pub dim: usize,
    /// Metric.
    pub metric: Metric,
    /// Element type of the main vectors.
    pub dtype: Dtype,
    /// Number of vectors or documents.
    pub count: u64,
}

/// Plain-old-data element types that can be viewed straight from file bytes.
///
/// # Safety
/// Implementors must have no padding and accept every bit pattern.
pub unsafe trait Pod: Copy + Send + Sync + 'static {}
// SAFETY (all impls below): primitive integers and IEEE floats have no padding bytes, and every
// bit pattern of their size is a valid value (a float's NaN patterns included).
unsafe impl Pod for f32 {}
// SAFETY: see above.
unsafe impl Pod for i64 {}
// SAFETY: see above.
unsafe impl Pod for u64 {}
// SAFETY: see above.
unsafe impl Pod for u32 {}
// SAFETY: see above.
unsafe impl Pod for u16 {}
// SAFETY: see above.
unsafe impl Pod for u8 {}
// SAFETY: see above.
unsafe impl Pod for i8 {}

/// The bytes of a slice of plain data (little-endian hosts only, see [`IndexFile::open`]).
pub fn as_bytes<T: Pod>(v: &[T]) -> &[u8] {
    // SAFETY: T is Pod, so every byte is initialised; the length is exact.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

/// A read-only array that lives either in memory or in an mmapped file; writes copy it first.
pub enum Buf<T: Pod> {
    /// Heap memory.
    Owned(Vec<T>),
    /// A range of a read-only file mapping.
    Mapped {
        /// The mapping, shared with other sections of the same file.
        map: Arc<Mapping>,
        /// Byte offset of the first element.
        offset: usize,
        /// Number of elements.
        len: usize,
        /// Element type.
        _t: PhantomData<T>,
    },
}

impl<T: Pod> Buf<T> {
    /// The elements.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            Buf::Mapped { map, offset, len, .. } => {
                // SAFETY: `IndexFile::buf` checked bounds and alignment; the map is read-only and
                // lives as long as `self`.
                unsafe { std::slice::from_raw_parts(map.map.as_ptr().add(*offset) as *const T, *len) }
            }
        }
    }

    /// Mutable access, copying a mapped buffer into memory first.
    pub fn to_mut(&mut self) -> &mut Vec<T> {
        if let Buf::Mapped { .. } = self {
            *self = Buf::Owned(self.as_slice().to_vec());
        }
        match self {
            Buf::Owned(v) => v,
            Buf::Mapped { .. } => unreachable!(),
        }
    }

    /// Elements that fit past the current ones without reallocating (0 for a mapping, which an
    /// edit copies first).
    pub fn room(&self) -> usize {
        match self {
            Buf::Owned(v) => v.capacity() - v.len(),
            Buf::Mapped { .. } => 0,
        }
    }

    /// A heap copy with room for `len` elements in all ([`crate::util::vectors::with_room`]), or `None`
    /// when this buffer is in memory with that room already. Built aside while readers share
    /// this one, then swapped in, so that filling it needs no reallocation under a lock.
    pub fn with_room(&self, len: usize) -> Option<Buf<T>> {
        (self.is_mapped() || self.room() < len.saturating_sub(self.as_slice().len()))
            .then(|| Buf::Owned(crate::util::vectors::with_room(self.as_slice(), len)))
    }

    /// True when the data is read from a file mapping.
    pub fn is_mapped(&self) -> bool {
        matches!(self, Buf::Mapped { .. })
    }

    /// The file mapping this buffer reads, if any.
    pub fn mapping(&self) -> Option<&Mapping> {
        match self {
            Buf::Owned(_) => None,
            Buf::Mapped { map, .. } => Some(map),
        }
    }

    /// Bytes of heap memory held (0 for a mapping).
    pub fn heap_bytes(&self) -> usize {
        match self {
            Buf::Owned(v) => v.capacity() * std::mem::size_of::<T>(),
            Buf::Mapped { .. } => 0,
        }
    }
}

impl<T: Pod> Default for Buf<T> {
    fn default() -> Self {
        Buf::Owned(Vec::new())
    }
}

/// Collects sections and writes a file atomically.
pub struct Writer<'a> {
    header: Header,
    sections: Vec<([u8; 8], &'a [u8])>,
}

fn tag_bytes(tag: &str) -> [u8; 8] {
    let mut t = [0u8; 8];
    let b = tag.as_bytes();
    assert!(b.len() <= 8, "section tag too long");
    t[..b.len()].copy_from_slice(b);
    t
}

fn align_up(x: usize) -> usize {
    x.div_ceil(ALIGN) * ALIGN
}

impl<'a> Writer<'a> {
    /// A writer for a file with this header.
    pub fn new(header: Header) -> Writer<'a> {
        Writer { header, sections: Vec::new() }
    }

    /// Add a section of plain data under a tag of at most 8 ASCII bytes.
    pub fn add<T: Pod>(&mut self, tag: &str, data: &'a [T]) {
        self.sections.push((tag_bytes(tag), as_bytes(data)));
    }

    /// Write the file to `path` atomically (temporary file, fsync, rename, fsync of the folder).
    pub fn write_atomic(&self, path: &Path) -> Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path
            .file_name()
            .ok_or_else(|| Error::InvalidArgument(format!("{} is not a file path", path.display())))?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = dir.join(format!(
            ".{}.tmp-{}-{}",
            name.to_string_lossy(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = self.write_to(&tmp).and_then(|_| {
            fs::rename(&tmp, path)?;
            if let Ok(d) = File::open(&dir) {
                let _ = d.sync_all();
            }
            Ok(())
        });
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn write_to(&self, tmp: &Path) -> Result<()> {
        let h = &self.header;
        let n = self.sections.len();
        let mut offset = align_up(HEADER + ENTRY * n);
        let mut table = Vec::with_capacity(ENTRY * n);
        for (tag, data) in &self.sections {
            table.extend_from_slice(tag);
            table.extend_from_slice(&(offset as u64).to_le_bytes());
            table.extend_from_slice(&(data.len() as u64).to_le_bytes());
            table.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
            table.extend_from_slice(&0u32.to_le_bytes());
            offset = align_up(offset + data.len());
        }
        let mut head = Vec::with_capacity(HEADER);
        head.extend_from_slice(&MAGIC);
        for v in [VERSION, h.kind as u32, h.dim as u32, h.metric.code(), h.dtype as u32, n as u32] {
            head.extend_from_slice(&v.to_le_bytes());
        }
        head.extend_from_slice(&h.count.to_le_bytes());
        head.resize(60, 0);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&head);
        crc.update(&table);
        head.extend_from_slice(&crc.finalize().to_le_bytes());

        let mut f = std::io::BufWriter::with_capacity(1 << 20, File::create(tmp)?);
        f.write_all(&head)?;
        f.write_all(&table)?;
        let mut pos = HEADER + table.len();
        for (_, data) in &self.sections {
            let start = align_up(pos);
            f.write_all(&vec![0u8; start - pos])?;
            f.write_all(data)?;
            pos = start + data.len();
        }
        let f = f.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    }
}

/// A read-only mapping of an index file, with what the file looked like when it was mapped.
///
/// A mapping assumes the file is not changed while it is mapped (files are replaced by rename,
/// which leaves a mapping of the old file intact). [`Mapping::check`] detects a truncation or an
/// in-place edit cheaply (one `fstat`), so a search can refuse instead of reading pages that are
/// gone (SIGBUS) or data that changed under the index.
pub struct Mapping {
    map: Mmap,
    file: File,
    path: PathBuf,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

impl Mapping {
    fn new(file: File, path: &Path) -> Result<Mapping> {
        let meta = file.metadata()?;
        // SAFETY: mapped read-only; the format is verified before use, and `check` is called
        // before each use by a search or a fetch to catch a file changed since (see above).
        let map = unsafe { Mmap::map(&file)? };
        Ok(Mapping { map, file, path: path.to_path_buf(), len: meta.len(), modified: meta.modified().ok() })
    }

    /// Error when the mapped file was truncated or modified in place since it was mapped.
    pub fn check(&self) -> Result<()> {
        let meta = self.file.metadata()?;
        let what = if meta.len() < self.len {
            "was truncated"
        } else if meta.len() != self.len || meta.modified().ok() != self.modified {
            "was modified"
        } else {
            return Ok(());
        };
        Err(Error::InvalidArgument(format!(
            "the mapped file {} {what} while the index was loaded with mmap=True; load it again \
             (replace index files by renaming a new file over them, as save does)",
            self.path.display()
        )))
    }
}

enum Backing {
    Map(Arc<Mapping>),
    Heap(Vec<u8>),
}

struct Entry {
    tag: [u8; 8],
    offset: usize,
    len: usize,
}

/// An opened, verified index file.
pub struct IndexFile {
    header: Header,
    version: u32,
    backing: Backing,
    entries: Vec<Entry>,
    path: PathBuf,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

impl IndexFile {
    /// Open and verify `path` (magic, version, bounds, every checksum). With `mmap` the
    /// sections stay in the page cache and [`IndexFile::buf`] hands out mapped buffers.
    pub fn open(path: &Path, mmap: bool) -> Result<IndexFile> {
        if cfg!(target_endian = "big") {
            return Err(Error::InvalidArgument("index files need a little-endian machine".into()));
        }
        let corrupt = |m: String| Error::CorruptFile(format!("{}: {m}", path.display()));
        let mut file = File::open(path)?;
        let size = file.metadata()?.len() as usize;
        if size < HEADER {
            let mut b = vec![0u8; size];
            file.read_exact(&mut b)?;
            if !MAGIC.starts_with(&b[..b.len().min(8)]) || b.is_empty() {
                return Err(corrupt("not a rankfunnel index file (bad magic)".into()));
            }
            return Err(corrupt(format!("truncated: {size} bytes, the header alone is {HEADER}")));
        }
        let backing = if mmap {
            // SAFETY: mapped read-only; the format is verified before use. Like every mmap user
            // we assume nobody truncates the file while it is open.
            Backing::Map(Arc::new(Mapping::new(file, path)?))
        } else {
            let mut b = Vec::with_capacity(size);
            file.read_to_end(&mut b)?;
            Backing::Heap(b)
        };
        let bytes: &[u8] = match &backing {
            Backing::Map(m) => &m.map,
            Backing::Heap(v) => v,
        };
        if bytes[..8] != MAGIC {
            return Err(corrupt("not a rankfunnel index file (bad magic)".into()));
        }
        let version = u32_at(bytes, 8);
        if version > VERSION {
            return Err(Error::UnsupportedVersion { found: version, supported: VERSION });
        }
        if version == 0 {
            return Err(corrupt("format version 0 is invalid".into()));
        }
        let nsec = u32_at(bytes, 28) as usize;
        if nsec > 1024 || HEADER + ENTRY * nsec > bytes.len() {
            return Err(corrupt("truncated or damaged section table".into()));
        }
        let table = &bytes[HEADER..HEADER + ENTRY * nsec];
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes[..60]);
        crc.update(table);
        if crc.finalize() != u32_at(bytes, 60) {
            return Err(corrupt("header checksum mismatch".into()));
        }
        let kind = Kind::from_code(u32_at(bytes, 12)).ok_or_else(|| corrupt("unknown index kind".into()))?;
        let metric = Metric::from_code(u32_at(bytes, 20)).ok_or_else(|| corrupt("unknown metric".into()))?;
        let dtype = match u32_at(bytes, 24) {
            1 => Dtype::F32,
            2 => Dtype::F16,
            3 => Dtype::I8,
            4 => Dtype::U8,
            _ => return Err(corrupt("unknown dtype".into())),
        };
        let header =
            Header { kind, dim: u32_at(bytes, 16) as usize, metric, dtype, count: u64_at(bytes, 32) };
        let mut entries = Vec::with_capacity(nsec);
        for e in table.chunks_exact(ENTRY) {
            let offset = u64_at(e, 8) as usize;
            let len = u64_at(e, 16) as usize;
            let end = offset.checked_add(len).ok_or_else(|| corrupt("bad section bounds".into()))?;
            if !offset.is_multiple_of(ALIGN) || end > bytes.len() {
                return Err(corrupt(format!(
                    "truncated: a section ends at byte {end} but the file has {} bytes",
                    bytes.len()
                )));
            }
            if crc32fast::hash(&bytes[offset..end]) != u32_at(e, 24) {
                let tag = String::from_utf8_lossy(&e[..8]).trim_end_matches('\0').to_string();
                return Err(corrupt(format!("checksum mismatch in section {tag:?}")));
            }
            entries.push(Entry { tag: e[..8].try_into().unwrap(), offset, len });
        }
        // Every byte is accounted for: the gaps between sections are zero padding and the file
        // ends where the last section does (so any flipped or appended byte is caught).
        let mut spans: Vec<(usize, usize)> = entries.iter().map(|e| (e.offset, e.offset + e.len)).collect();
        spans.sort_unstable();
        let mut pos = HEADER + ENTRY * nsec;
        for (start, end) in spans {
            if start < pos || bytes[pos..start].iter().any(|&b| b != 0) {
                return Err(corrupt("damaged padding or overlapping sections".into()));
            }
            pos = end;
        }
        if pos != bytes.len() {
            return Err(corrupt(format!("{} unexpected bytes after the last section", bytes.len() - pos)));
        }
        Ok(IndexFile { header, version, backing, entries, path: path.to_path_buf() })
    }

    /// The fixed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The format version the file was written with (1..=[`VERSION`]).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// An error about this file's contents.
    pub fn corrupt(&self, m: &str) -> Error {
        Error::CorruptFile(format!("{}: {m}", self.path.display()))
    }

    fn entry(&self, tag: &str) -> Result<&Entry> {
        let t = tag_bytes(tag);
        self.entries
            .iter()
            .find(|e| e.tag == t)
            .ok_or_else(|| self.corrupt(&format!("missing section {tag:?}")))
    }

    /// True when the file has a section `tag`.
    pub fn has(&self, tag: &str) -> bool {
        let t = tag_bytes(tag);
        self.entries.iter().any(|e| e.tag == t)
    }

    /// The raw bytes of a section.
    pub fn bytes(&self, tag: &str) -> Result<&[u8]> {
        let e = self.entry(tag)?;
        let all: &[u8] = match &self.backing {
            Backing::Map(m) => &m.map,
            Backing::Heap(v) => v,
        };
        Ok(&all[e.offset..e.offset + e.len])
    }

    /// A section as `T` elements: mapped in place when the file was opened with mmap, else copied.
    pub fn buf<T: Pod>(&self, tag: &str) -> Result<Buf<T>> {
        let e = self.entry(tag)?;
        let size = std::mem::size_of::<T>();
        if e.len % size != 0 {
            return Err(self.corrupt(&format!("section {tag:?} is not a whole number of elements")));
        }
        let len = e.len / size;
        match &self.backing {
            Backing::Map(m)
                if (m.map.as_ptr() as usize + e.offset).is_multiple_of(std::mem::align_of::<T>()) =>
            {
                Ok(Buf::Mapped { map: m.clone(), offset: e.offset, len, _t: PhantomData })
            }
            _ => {
                let b = self.bytes(tag)?;
                let mut v: Vec<T> = Vec::with_capacity(len);
                crate::util::pages::advise(&v);
                // SAFETY: T is Pod; we copy exactly len * size bytes into the reserved capacity.
                unsafe {
                    std::ptr::copy_nonoverlapping(b.as_ptr(), v.as_mut_ptr() as *mut u8, len * size);
                    v.set_len(len);
                }
                Ok(Buf::Owned(v))
            }
        }
    }

    /// A section copied into a `Vec`.
    pub fn vec<T: Pod>(&self, tag: &str) -> Result<Vec<T>> {
        Ok(match self.buf::<T>(tag)? {
            Buf::Owned(v) => v,
            m => m.as_slice().to_vec(),
        })
    }
}
