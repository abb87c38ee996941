//! STL decoding (binary and ASCII, validated and bounded) and encoding.
//!
//! Detection: a file whose size is exactly `84 + 50 × count` (count read from bytes 80..84) is
//! binary even when its header starts with `solid`, as CAD exports often do. Otherwise a file
//! that starts with `solid` (any case, after an optional UTF-8 byte-order mark) and looks like
//! text is ASCII. Otherwise a file of whole records whose count is below them (exporters that
//! stream write 0 and never go back) is binary, read by its size; anything else is treated as
//! a broken binary file and reported as such.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::{HealError, Mesh, RepairOptions};

/// Input encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// 80-byte header, `u32` count, 50-byte records.
    Binary,
    /// `solid … facet normal … endsolid` text.
    Ascii,
}

impl Format {
    /// `"binary"` or `"ascii"`.
    pub fn name(self) -> &'static str {
        match self {
            Format::Binary => "binary",
            Format::Ascii => "ascii",
        }
    }
}

/// A parsed but not yet welded STL: three positions per facet.
#[derive(Debug, Clone)]
pub struct Soup {
    /// `3 × facets` corner positions, in file order (finite, `-0.0` normalised to `0.0`).
    pub positions: Vec<[f32; 3]>,
    /// Detected encoding.
    pub format: Format,
    /// Input size in bytes.
    pub bytes: u64,
    /// Stored normals that were zero, non-finite or disagreed with the vertex order.
    pub wrong_normals: u64,
    /// The facet count a binary header declared when it was below the whole records the file
    /// holds (those were all read); `None` when the count was right, and for ASCII.
    pub header_facets: Option<u64>,
    /// Seconds spent parsing.
    pub seconds: f64,
}

impl Soup {
    /// Number of facets.
    pub fn facets(&self) -> u64 {
        (self.positions.len() / 3) as u64
    }
}

/// One 50-byte binary record, byte arrays only so it can be cast from any `&[u8]`.
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct RawFacet {
    normal: [[u8; 4]; 3],
    vertices: [[[u8; 4]; 3]; 3],
    attribute: [u8; 2],
}

const HEADER: usize = 84;
const RECORD: usize = 50;

/// Facets decoded per block when a binary file is streamed (3.2 MB of records).
const STREAM_FACETS: usize = 1 << 16;

/// Read and parse a file, refusing it before reading when it is over the size cap.
///
/// A binary file is streamed: blocks of records are read into one reused buffer and decoded in
/// parallel straight into the corner positions, so the file is never held in memory whole.
/// Anything else (ASCII, or a broken binary file whose error names the offset) is read whole
/// and handed to [`parse`].
pub fn parse_file(path: &Path, options: &RepairOptions) -> Result<Soup, HealError> {
    let t = Instant::now();
    let io = |source| HealError::Io {
        path: path.display().to_string(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > options.max_file_bytes {
        return Err(HealError::TooLarge {
            size,
            limit: options.max_file_bytes,
        });
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(HEADER);
    (&mut file)
        .take(HEADER as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let count = match declared_count(&head) {
        Some(c) if HEADER as u64 + RECORD as u64 * c == size && c > 0 => c,
        _ => {
            // Not a consistent binary file: parse (or diagnose) it from memory.
            let mut bytes = head;
            bytes.reserve_exact(usize::try_from(size).unwrap_or(0).saturating_sub(HEADER));
            file.take(options.max_file_bytes.saturating_sub(HEADER as u64))
                .read_to_end(&mut bytes)
                .map_err(io)?;
            return parse(&bytes, options);
        }
    };
    check_facets(count, options)?;
    // Below 2^31 / 3 after `check_facets`.
    let count = count as usize;
    // The positions take 36 bytes per 50-byte record: bounded by the file's size.
    let mut positions = vec![[0.0f32; 3]; count * 3];
    // A second thread reads the next block while this one's is decoded (in parallel): two
    // buffers go back and forth, as in `write_binary`.
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    for _ in 0..2 {
        // Cannot fail: the channel has room for both and its receiver is alive.
        let _ = free_tx.send(vec![0u8; RECORD * STREAM_FACETS.min(count)]);
    }
    let mut wrong = 0;
    std::thread::scope(|scope| -> Result<(), HealError> {
        scope.spawn(move || {
            let mut left = count;
            while left > 0 {
                // The decoder stopped (an error): nothing more to read.
                let Ok(mut buf) = free_rx.recv() else { return };
                let n = left.min(STREAM_FACETS);
                left -= n;
                buf.truncate(RECORD * n);
                let read = file.read_exact(&mut buf).map(|()| buf);
                let failed = read.is_err();
                if full_tx.send(read).is_err() || failed {
                    return;
                }
            }
        });
        // Owned here, so that an early return drops them and ends a reader waiting on them.
        let (full_rx, free_tx) = (full_rx, free_tx);
        for (block, out) in positions.chunks_mut(3 * STREAM_FACETS).enumerate() {
            // The reader stops early only after sending its error.
            let b = full_rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::ErrorKind::UnexpectedEof.into()))
                .map_err(io)?;
            let first = block * STREAM_FACETS;
            let decoded = decode_records(bytemuck::cast_slice(&b), out, first);
            // The reader may have finished: then the buffer is not needed.
            let _ = free_tx.send(b);
            wrong += decoded?;
        }
        Ok(())
    })?;
    Ok(Soup {
        positions,
        format: Format::Binary,
        bytes: size,
        wrong_normals: wrong,
        header_facets: None,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// Parse binary or ASCII STL.
pub fn parse(bytes: &[u8], options: &RepairOptions) -> Result<Soup, HealError> {
    let t = Instant::now();
    let len = bytes.len() as u64;
    if len == 0 {
        return Err(HealError::Empty);
    }
    if len > options.max_file_bytes {
        return Err(HealError::TooLarge {
            size: len,
            limit: options.max_file_bytes,
        });
    }
    let declared = declared_count(bytes);
    let binary_fits = declared.is_some_and(|c| HEADER as u64 + RECORD as u64 * c == len);
    // Whole records past the header, when the size is a whole number of them.
    let records = len
        .checked_sub(HEADER as u64)
        .filter(|r| r % RECORD as u64 == 0)
        .map(|r| r / RECORD as u64);
    let (format, positions, wrong_normals, header_facets) = if binary_fits {
        let (p, w) = parse_binary(bytes, options)?;
        (Format::Binary, p, w, None)
    } else if looks_ascii(bytes) {
        let (p, w) = parse_ascii(bytes, options)?;
        (Format::Ascii, p, w, None)
    } else if let (Some(d), Some(r)) = (declared, records)
        && d < r
    {
        // The header's count is short of the records (a streaming exporter's 0): every
        // record is read. A count above them stays an error: a cut file is never a model.
        let (p, w) = parse_binary(bytes, options)?;
        (Format::Binary, p, w, Some(d))
    } else {
        return Err(binary_size_error(bytes));
    };
    Ok(Soup {
        positions,
        format,
        bytes: len,
        wrong_normals,
        header_facets,
        seconds: t.elapsed().as_secs_f64(),
    })
}

fn declared_count(bytes: &[u8]) -> Option<u64> {
    let c: [u8; 4] = bytes.get(80..84)?.try_into().ok()?;
    Some(u64::from(u32::from_le_bytes(c)))
}

/// A UTF-8 byte-order mark, which some Windows tools write before the text.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Where the text starts: after a byte-order mark, if there is one.
fn text_start(bytes: &[u8]) -> usize {
    if bytes.starts_with(BOM) { BOM.len() } else { 0 }
}

/// Starts with `solid` in any case (after an optional byte-order mark and whitespace) and the
/// first KiB is text.
fn looks_ascii(bytes: &[u8]) -> bool {
    let bytes = &bytes[text_start(bytes)..];
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let rest = &bytes[start..];
    if !rest
        .get(..5)
        .is_some_and(|w| w.eq_ignore_ascii_case(b"solid"))
    {
        return false;
    }
    rest.iter()
        .take(1024)
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// The error for a file that is neither a consistent binary STL nor ASCII.
fn binary_size_error(bytes: &[u8]) -> HealError {
    let len = bytes.len() as u64;
    let Some(declared) = declared_count(bytes) else {
        return HealError::TruncatedHeader { len };
    };
    let expected = HEADER as u64 + RECORD as u64 * declared;
    if declared == 0 && len == HEADER as u64 {
        return HealError::NoFacets;
    }
    if expected > len {
        let facet = (len - HEADER as u64) / RECORD as u64;
        HealError::Truncated {
            declared,
            expected,
            actual: len,
            facet,
            offset: HEADER as u64 + facet * RECORD as u64,
        }
    } else {
        HealError::TrailingData {
            declared,
            expected,
            actual: len,
            extra: len - expected,
            offset: expected,
        }
    }
}

fn parse_binary(bytes: &[u8], options: &RepairOptions) -> Result<(Vec<[f32; 3]>, u64), HealError> {
    let count = (bytes.len() - HEADER) / RECORD;
    if count == 0 {
        return Err(HealError::NoFacets);
    }
    check_facets(count as u64, options)?;
    let mut positions = vec![[0.0f32; 3]; count * 3];
    let wrong = decode_records(bytemuck::cast_slice(&bytes[HEADER..]), &mut positions, 0)?;
    Ok((positions, wrong))
}

/// Decode binary records (facet `first` onwards) into `out` (three corners each), in
/// parallel: returns how many stored normals are wrong, or the first facet with a non-finite
/// coordinate.
fn decode_records(
    records: &[RawFacet],
    out: &mut [[f32; 3]],
    first: usize,
) -> Result<u64, HealError> {
    const PART: usize = 4096;
    // `+ 0.0` turns -0.0 into 0.0, so the two weld together exactly.
    let f = |b: [u8; 4]| f32::from_le_bytes(b) + 0.0;
    let (wrong, bad) = out
        .par_chunks_mut(3 * PART)
        .zip(records.par_chunks(PART))
        .enumerate()
        .map(|(part, (out, recs))| {
            let mut wrong = 0u64;
            let mut bad = None;
            for (k, (o, r)) in out.chunks_exact_mut(3).zip(recs).enumerate() {
                let mut finite = true;
                for (dst, src) in o.iter_mut().zip(&r.vertices) {
                    *dst = [f(src[0]), f(src[1]), f(src[2])];
                    finite &= dst.iter().all(|x| x.is_finite());
                }
                if !finite && bad.is_none() {
                    bad = Some(part * PART + k);
                }
                let n = [f(r.normal[0]), f(r.normal[1]), f(r.normal[2])];
                wrong += u64::from(!normal_agrees(n, o));
            }
            (wrong, bad)
        })
        .reduce(
            || (0, None),
            |a, b| {
                let bad = match (a.1, b.1) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
                (a.0 + b.0, bad)
            },
        );
    match bad {
        Some(k) => {
            let facet = first + k;
            Err(HealError::NonFinite {
                facet: facet as u64,
                offset: (HEADER + facet * RECORD) as u64,
            })
        }
        None => Ok(wrong),
    }
}

fn check_facets(count: u64, options: &RepairOptions) -> Result<(), HealError> {
    // Half-edge ids must fit in 31 bits.
    let hard = (i32::MAX as u64) / 3;
    let limit = options.max_facets.min(hard);
    if count > limit {
        return Err(HealError::TooManyFacets {
            facets: count,
            limit,
        });
    }
    Ok(())
}

/// Does a stored normal point the way the vertex order says (within 60°)?
fn normal_agrees(n: [f32; 3], v: &[[f32; 3]]) -> bool {
    // Compare with the unnormalised cross product: cos θ > 0.5 ⇔ n·c > 0 and
    // (n·c)² > ¼ |n|² |c|²; no square roots or divisions on this per-facet path.
    let d = |p: [f32; 3], q: [f32; 3]| [0, 1, 2].map(|a| f64::from(p[a]) - f64::from(q[a]));
    let (u, w) = (d(v[1], v[0]), d(v[2], v[0]));
    let c = [
        u[1] * w[2] - u[2] * w[1],
        u[2] * w[0] - u[0] * w[2],
        u[0] * w[1] - u[1] * w[0],
    ];
    let c2 = c[0] * c[0] + c[1] * c[1] + c[2] * c[2];
    // A degenerate facet has no direction to disagree with.
    if c2 == 0.0 || !c2.is_finite() {
        return true;
    }
    let n = n.map(f64::from);
    let n2 = n[0] * n[0] + n[1] * n[1] + n[2] * n[2];
    if n2 == 0.0 || !n2.is_finite() {
        return false;
    }
    let dot = n[0] * c[0] + n[1] * c[1] + n[2] * c[2];
    dot > 0.0 && dot * dot > 0.25 * n2 * c2
}

/// Unit normal of a triangle (zero when degenerate).
pub fn facet_normal(a: [f32; 3], b: [f32; 3], c: [f32; 3]) -> [f32; 3] {
    let d = |p: [f32; 3], q: [f32; 3]| {
        [
            f64::from(p[0]) - f64::from(q[0]),
            f64::from(p[1]) - f64::from(q[1]),
            f64::from(p[2]) - f64::from(q[2]),
        ]
    };
    let u = d(b, a);
    let v = d(c, a);
    let n = [
        u[1] * v[2] - u[2] * v[1],
        u[2] * v[0] - u[0] * v[2],
        u[0] * v[1] - u[1] * v[0],
    ];
    let l = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if l > 0.0 && l.is_finite() {
        [(n[0] / l) as f32, (n[1] / l) as f32, (n[2] / l) as f32]
    } else {
        [0.0; 3]
    }
}

// ---------------------------------------------------------------------------------------------
// ASCII

/// Parse state carried across chunk borders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctx {
    /// Inside `solid … endsolid`, between facets.
    InSolid,
    /// After `endsolid`: only `solid` or the end of the file may follow.
    Outside,
}

struct AsciiChunk {
    positions: Vec<[f32; 3]>,
    wrong: u64,
    end: usize,
    ctx: Ctx,
}

struct Tokens<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Tokens<'a> {
    fn next(&mut self) -> Option<(usize, &'a [u8])> {
        let b = self.b;
        let mut i = self.pos;
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            self.pos = i;
            return None;
        }
        let s = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        self.pos = i;
        Some((s, &b[s..i]))
    }

    fn skip_ws(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn skip_line(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
            self.pos += 1;
        }
    }
}

fn ascii_err(bytes: &[u8], offset: usize, problem: String) -> HealError {
    let offset = offset.min(bytes.len());
    let line = bytes[..offset].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
    HealError::Ascii {
        line,
        offset: offset as u64,
        problem,
    }
}

fn show(tok: &[u8]) -> String {
    let s: String = String::from_utf8_lossy(&tok[..tok.len().min(32)]).into();
    format!("`{s}`")
}

/// Parse facets and `solid`/`endsolid` lines from `start` until reaching `stop` at an item
/// border. `start` is at a `facet` keyword (or at the beginning for the first chunk).
fn parse_ascii_chunk(
    bytes: &[u8],
    start: usize,
    stop: usize,
    mut ctx: Ctx,
) -> Result<AsciiChunk, HealError> {
    let mut t = Tokens {
        b: bytes,
        pos: start,
    };
    let mut positions = Vec::with_capacity((stop - start) / 60 * 3 + 3);
    let mut wrong = 0u64;
    let eof = |what: &str, at: usize| {
        ascii_err(
            bytes,
            bytes.len(),
            format!("file ends inside {what} (started at byte offset {at}); the file is cut off"),
        )
    };
    loop {
        t.skip_ws();
        if t.pos >= stop {
            break;
        }
        let Some((off, tok)) = t.next() else { break };
        match (Keyword::of(tok), ctx) {
            (Some(Keyword::Facet), Ctx::InSolid) => {
                let facet_at = off;
                let expect = |t: &mut Tokens<'_>, kw: &[u8]| -> Result<(), HealError> {
                    match t.next() {
                        Some((_, x)) if x.eq_ignore_ascii_case(kw) => Ok(()),
                        Some((o, x)) => Err(ascii_err(
                            bytes,
                            o,
                            format!(
                                "expected `{}`, found {} (facet at byte offset {facet_at})",
                                String::from_utf8_lossy(kw),
                                show(x)
                            ),
                        )),
                        None => Err(eof("a facet", facet_at)),
                    }
                };
                let num = |t: &mut Tokens<'_>| -> Result<f32, HealError> {
                    match t.next() {
                        Some((o, x)) => std::str::from_utf8(x)
                            .ok()
                            .and_then(|s| s.parse::<f32>().ok())
                            .map(|v| v + 0.0)
                            .ok_or_else(|| {
                                ascii_err(bytes, o, format!("expected a number, found {}", show(x)))
                            }),
                        None => Err(eof("a facet", facet_at)),
                    }
                };
                // The normal is recomputed, so it is read leniently: it may be missing, or
                // be what a C runtime printed for NaN (`1.#QNAN`, `-1.#IND`): unknown.
                let mut n = [f32::NAN; 3];
                let mut outer = false;
                match t.next() {
                    Some((_, x)) if x.eq_ignore_ascii_case(b"normal") => {
                        for c in &mut n {
                            match t.next() {
                                Some((_, x)) if x.eq_ignore_ascii_case(b"outer") => {
                                    outer = true;
                                    break;
                                }
                                Some((_, x)) => *c = lenient_number(x),
                                None => return Err(eof("a facet", facet_at)),
                            }
                        }
                    }
                    Some((_, x)) if x.eq_ignore_ascii_case(b"outer") => outer = true,
                    Some((o, x)) => {
                        return Err(ascii_err(
                            bytes,
                            o,
                            format!(
                                "expected `normal` or `outer`, found {} (facet at byte offset \
                                 {facet_at})",
                                show(x)
                            ),
                        ));
                    }
                    None => return Err(eof("a facet", facet_at)),
                }
                if !outer {
                    expect(&mut t, b"outer")?;
                }
                expect(&mut t, b"loop")?;
                let mut v = [[0.0f32; 3]; 3];
                for corner in &mut v {
                    expect(&mut t, b"vertex")?;
                    *corner = [num(&mut t)?, num(&mut t)?, num(&mut t)?];
                }
                expect(&mut t, b"endloop")?;
                expect(&mut t, b"endfacet")?;
                if v.iter().flatten().any(|x| !x.is_finite()) {
                    return Err(HealError::NonFinite {
                        facet: (positions.len() / 3) as u64,
                        offset: facet_at as u64,
                    });
                }
                wrong += u64::from(!normal_agrees(n, &v));
                positions.extend_from_slice(&v);
            }
            (Some(Keyword::Endsolid), Ctx::InSolid) => {
                t.skip_line();
                ctx = Ctx::Outside;
            }
            (Some(Keyword::Solid), Ctx::Outside) => {
                t.skip_line();
                ctx = Ctx::InSolid;
            }
            (_, Ctx::InSolid) => {
                return Err(ascii_err(
                    bytes,
                    off,
                    format!("expected `facet` or `endsolid`, found {}", show(tok)),
                ));
            }
            (_, Ctx::Outside) => {
                return Err(ascii_err(
                    bytes,
                    off,
                    format!(
                        "expected `solid` or the end of the file, found {}",
                        show(tok)
                    ),
                ));
            }
        }
    }
    Ok(AsciiChunk {
        positions,
        wrong,
        end: t.pos,
        ctx,
    })
}

/// The keywords that start an item (matched in any case: some writers use capitals).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keyword {
    Facet,
    Endsolid,
    Solid,
}

impl Keyword {
    fn of(tok: &[u8]) -> Option<Keyword> {
        [
            (b"facet".as_slice(), Keyword::Facet),
            (b"endsolid", Keyword::Endsolid),
            (b"solid", Keyword::Solid),
        ]
        .into_iter()
        .find_map(|(w, k)| tok.eq_ignore_ascii_case(w).then_some(k))
    }
}

/// A stored normal's component: its value, or NaN (unknown) when it is not a number.
fn lenient_number(tok: &[u8]) -> f32 {
    std::str::from_utf8(tok)
        .ok()
        .and_then(|s| s.parse::<f32>().ok())
        .unwrap_or(f32::NAN)
}

/// Next offset `>= from` where a `facet` keyword (any case) starts a token.
fn next_facet(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 6 <= bytes.len() {
        let rel = bytes[i..]
            .windows(5)
            .position(|w| w.eq_ignore_ascii_case(b"facet"))?;
        let at = i + rel;
        let before_ok = at == 0 || bytes[at - 1].is_ascii_whitespace();
        let after_ok = bytes.get(at + 5).is_some_and(|b| b.is_ascii_whitespace());
        if before_ok && after_ok {
            return Some(at);
        }
        i = at + 5;
    }
    None
}

fn parse_ascii(bytes: &[u8], options: &RepairOptions) -> Result<(Vec<[f32; 3]>, u64), HealError> {
    // Header line: `solid [name]`, after an optional byte-order mark.
    let mut t = Tokens {
        b: bytes,
        pos: text_start(bytes),
    };
    match t.next() {
        Some((_, w)) if w.eq_ignore_ascii_case(b"solid") => t.skip_line(),
        Some((o, x)) => {
            return Err(ascii_err(
                bytes,
                o,
                format!("expected `solid`, found {}", show(x)),
            ));
        }
        None => return Err(HealError::Empty),
    }
    let body = t.pos;
    // Chunk borders at `facet` keywords so chunks parse in parallel.
    let parts = if bytes.len() < (1 << 20) {
        1
    } else {
        (rayon::current_num_threads() * 4).max(1)
    };
    let mut starts = vec![body];
    for p in 1..parts {
        let target = (bytes.len() * p / parts).max(*starts.last().unwrap_or(&body) + 1);
        match next_facet(bytes, target) {
            Some(s) if s > *starts.last().unwrap_or(&body) => starts.push(s),
            _ => break,
        }
    }
    let ranges: Vec<(usize, usize)> = starts
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, starts.get(i + 1).copied().unwrap_or(bytes.len())))
        .collect();
    let chunks: Vec<Result<AsciiChunk, HealError>> = ranges
        .par_iter()
        .map(|&(s, e)| parse_ascii_chunk(bytes, s, e, Ctx::InSolid))
        .collect();
    // Chunks must meet exactly (a `facet` word inside a solid's name could fool the split) and
    // every error must be reported as a sequential parse sees it: otherwise parse sequentially.
    let ok = chunks.iter().enumerate().all(|(i, c)| match c {
        Ok(c) => ranges
            .get(i + 1)
            .is_none_or(|&(next, _)| c.end == next && c.ctx == Ctx::InSolid),
        Err(_) => false,
    });
    let chunks: Vec<AsciiChunk> = if ok {
        chunks.into_iter().collect::<Result<_, _>>()?
    } else {
        drop(chunks);
        vec![parse_ascii_chunk(bytes, body, bytes.len(), Ctx::InSolid)?]
    };
    let last = chunks.last();
    if last.is_none_or(|c| c.ctx != Ctx::Outside) {
        return Err(ascii_err(
            bytes,
            bytes.len(),
            "file ends without `endsolid`; the file is cut off".into(),
        ));
    }
    let facets: usize = chunks.iter().map(|c| c.positions.len() / 3).sum();
    if facets == 0 {
        return Err(HealError::EmptyAscii);
    }
    check_facets(facets as u64, options)?;
    let wrong = chunks.iter().map(|c| c.wrong).sum();
    let mut positions = Vec::with_capacity(facets * 3);
    for c in chunks {
        positions.extend_from_slice(&c.positions);
    }
    Ok((positions, wrong))
}

// ---------------------------------------------------------------------------------------------
// Writing

const OUT_HEADER: &[u8] = b"binary STL written by FixMyPrint";

fn encode_records(mesh: &Mesh, tris: &[[u32; 3]], out: &mut [u8]) {
    out.par_chunks_mut(RECORD * 1024)
        .zip(tris.par_chunks(1024))
        .for_each(|(o, ts)| {
            for (rec, t) in o.chunks_exact_mut(RECORD).zip(ts) {
                let v = t.map(|i| mesh.vertices[i as usize]);
                let n = facet_normal(v[0], v[1], v[2]);
                let mut k = 0;
                for x in n.iter().chain(v.iter().flatten()) {
                    rec[k..k + 4].copy_from_slice(&x.to_le_bytes());
                    k += 4;
                }
                rec[48] = 0;
                rec[49] = 0;
            }
        });
}

fn header(count: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..OUT_HEADER.len()].copy_from_slice(OUT_HEADER);
    h[80..84].copy_from_slice(&(count as u32).to_le_bytes());
    h
}

/// Encode a mesh as binary STL with normals computed from the vertex order.
pub fn encode_binary(mesh: &Mesh) -> Vec<u8> {
    let n = mesh.triangles.len();
    let mut out = vec![0u8; HEADER + RECORD * n];
    out[..HEADER].copy_from_slice(&header(n));
    encode_records(mesh, &mesh.triangles, &mut out[HEADER..]);
    out
}

/// Stream a mesh as binary STL; returns the bytes written.
///
/// Blocks of facets are encoded in parallel while a second thread writes the previous block,
/// so encoding and the (single-threaded) write overlap. Two buffers go back and forth.
pub fn write_binary<W: Write + Send>(mesh: &Mesh, mut out: W) -> std::io::Result<u64> {
    const BLOCK: usize = 1 << 16;
    out.write_all(&header(mesh.triangles.len()))?;
    let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<(Vec<u8>, usize)>(1);
    let (free_tx, free_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(2);
    let buf_len = RECORD * BLOCK.min(mesh.triangles.len());
    for _ in 0..2 {
        // Cannot fail: the channel has room for both and its receiver is alive.
        let _ = free_tx.send(vec![0u8; buf_len]);
    }
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> std::io::Result<W> {
            for (buf, len) in full_rx {
                let written = out.write_all(&buf[..len]);
                // The encoder may have stopped already; then the buffer is not needed.
                let _ = free_tx.send(buf);
                written?;
            }
            out.flush()?;
            Ok(out)
        });
        for ts in mesh.triangles.chunks(BLOCK) {
            // A closed channel means the writer stopped on an error: it is reported below.
            let Ok(mut buf) = free_rx.recv() else { break };
            let len = RECORD * ts.len();
            encode_records(mesh, ts, &mut buf[..len]);
            if full_tx.send((buf, len)).is_err() {
                break;
            }
        }
        drop(full_tx);
        match writer.join() {
            Ok(result) => result.map(drop),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })?;
    Ok((HEADER + RECORD * mesh.triangles.len()) as u64)
}

/// Encode raw facets (three positions each) as ASCII STL, with the given stored normals
/// (computed where missing). Numbers are written in the shortest form that reads back exactly.
pub fn encode_ascii(positions: &[[f32; 3]], normals: &[[f32; 3]]) -> Vec<u8> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(positions.len() / 3 * 260 + 64);
    s.push_str("solid fixmyprint\n");
    for (i, v) in positions.chunks_exact(3).enumerate() {
        let n = normals
            .get(i)
            .copied()
            .unwrap_or_else(|| facet_normal(v[0], v[1], v[2]));
        let _ = writeln!(s, "  facet normal {:e} {:e} {:e}", n[0], n[1], n[2]);
        s.push_str("    outer loop\n");
        for p in v {
            let _ = writeln!(s, "      vertex {:e} {:e} {:e}", p[0], p[1], p[2]);
        }
        s.push_str("    endloop\n  endfacet\n");
    }
    s.push_str("endsolid fixmyprint\n");
    s.into_bytes()
}

/// The corner positions of a mesh as triangle soup (three per facet).
pub fn to_soup(mesh: &Mesh) -> Vec<[f32; 3]> {
    mesh.triangles
        .iter()
        .flat_map(|t| t.map(|i| mesh.vertices[i as usize]))
        .collect()
}

/// Encode raw facets (three positions each, plus a stored normal each) as binary STL. Used by
/// the test generator to write triangle soup exactly as given.
pub fn encode_soup(positions: &[[f32; 3]], normals: &[[f32; 3]]) -> Vec<u8> {
    let n = positions.len() / 3;
    let mut out = vec![0u8; HEADER + RECORD * n];
    out[..HEADER].copy_from_slice(&header(n));
    out[HEADER..]
        .par_chunks_mut(RECORD)
        .zip(positions.par_chunks(3))
        .enumerate()
        .for_each(|(i, (rec, v))| {
            let nn = normals
                .get(i)
                .copied()
                .unwrap_or_else(|| facet_normal(v[0], v[1], v[2]));
            let mut k = 0;
            for x in nn.iter().chain(v.iter().flatten()) {
                rec[k..k + 4].copy_from_slice(&x.to_le_bytes());
                k += 4;
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RepairOptions {
        RepairOptions::default()
    }

    #[test]
    fn binary_with_solid_header_is_binary() {
        let mesh = Mesh {
            vertices: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],
            triangles: vec![[0, 1, 2]],
        };
        let mut b = encode_binary(&mesh);
        b[..5].copy_from_slice(b"solid");
        let s = parse(&b, &opts()).unwrap();
        assert_eq!(s.format, Format::Binary);
        assert_eq!(s.facets(), 1);
    }

    #[test]
    fn ascii_roundtrip_and_cut() {
        let mesh = Mesh {
            vertices: vec![[0.0; 3], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            triangles: vec![[0, 2, 1], [0, 1, 3], [1, 2, 3], [0, 3, 2]],
        };
        let a = encode_ascii(&to_soup(&mesh), &[]);
        let s = parse(&a, &opts()).unwrap();
        assert_eq!(s.format, Format::Ascii);
        assert_eq!(s.facets(), 4);
        assert_eq!(s.wrong_normals, 0);
        for cut in [a.len() - 20, a.len() - 25, a.len() / 2, 40] {
            let e = parse(&a[..cut], &opts()).unwrap_err();
            assert!(matches!(e, HealError::Ascii { .. }), "{cut}: {e}");
        }
    }

    /// Streaming a file block by block gives exactly what parsing it from memory gives,
    /// including the first non-finite facet when it sits in a later block.
    #[test]
    fn streamed_file_matches_in_memory_parse() {
        let g =
            crate::generate::model(3, 2 * STREAM_FACETS + 999, &crate::generate::Defects::all());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.stl");
        std::fs::write(&path, &g.stl).unwrap();
        let (a, b) = (
            parse(&g.stl, &opts()).unwrap(),
            parse_file(&path, &opts()).unwrap(),
        );
        assert!(a.facets() > 2 * STREAM_FACETS as u64);
        assert_eq!(a.positions, b.positions);
        assert_eq!(a.wrong_normals, b.wrong_normals);
        assert!(a.wrong_normals > 0);

        let mut bad = g.stl.clone();
        for facet in [2 * STREAM_FACETS + 7, STREAM_FACETS + 3] {
            let at = HEADER + facet * RECORD + 12 + 4;
            bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
        }
        std::fs::write(&path, &bad).unwrap();
        for e in [
            parse(&bad, &opts()).unwrap_err(),
            parse_file(&path, &opts()).unwrap_err(),
        ] {
            match e {
                HealError::NonFinite { facet, offset } => {
                    assert_eq!(facet, STREAM_FACETS as u64 + 3);
                    assert_eq!(offset, (HEADER + (STREAM_FACETS + 3) * RECORD) as u64);
                }
                e => panic!("{e}"),
            }
        }
    }

    /// The cheap stored-normal test agrees with the angle it stands for.
    #[test]
    fn normal_check_is_a_60_degree_cone() {
        let v = [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert!(normal_agrees([0.0, 0.0, 1.0], &v));
        assert!(normal_agrees([0.0, 0.0, 7.0], &v));
        assert!(!normal_agrees([0.0, 0.0, -1.0], &v));
        assert!(!normal_agrees([0.0; 3], &v));
        assert!(!normal_agrees([f32::NAN, 0.0, 1.0], &v));
        let at = |deg: f32| [deg.to_radians().sin(), 0.0, deg.to_radians().cos()];
        assert!(normal_agrees(at(59.0), &v));
        assert!(!normal_agrees(at(61.0), &v));
        // A degenerate facet has no direction to disagree with.
        assert!(normal_agrees(
            [0.0, 0.0, -1.0],
            &[[0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
        ));
    }

    /// The overlapped writer produces exactly the in-memory encoding, and a failing sink
    /// ends it with the sink's error instead of hanging.
    #[test]
    fn streamed_write_matches_encoding_and_reports_errors() {
        let g = crate::generate::model(5, 150_000, &crate::generate::Defects::none());
        let mesh = &g.clean.mesh;
        assert!(mesh.triangles.len() > 2 * (1 << 16));
        let mut out = Vec::new();
        let n = write_binary(mesh, &mut out).unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out, encode_binary(mesh));

        struct Full(usize);
        impl Write for Full {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                if self.0 == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "disk full",
                    ));
                }
                let k = b.len().min(self.0);
                self.0 -= k;
                Ok(k)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        for room in [0, 100, 5_000_000] {
            let e = write_binary(mesh, Full(room)).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::StorageFull, "{room}");
        }
    }
}
