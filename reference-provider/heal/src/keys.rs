//! Shared helpers for the sort-based stages: 32-bit hashes packed with a 32-bit index into a
//! `u64`, sorted in parallel, then processed run by run (a run = equal high 32 bits); and
//! grid cells as ordered keys ([`LexGrid`], [`LexIndex`]) for look-ups made in cell order.

use std::ops::Range;

use rayon::prelude::*;

use crate::Bbox;

/// Finaliser of MurmurHash3: a cheap, well-mixing 32-bit hash.
#[inline]
pub(crate) fn fmix32(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Hash of three 32-bit words.
#[inline]
pub(crate) fn hash3(a: u32, b: u32, c: u32) -> u32 {
    let h = a.wrapping_mul(0x9e37_79b1) ^ fmix32(b.wrapping_add(0x7f4a_7c15)).rotate_left(11);
    fmix32(h ^ c.wrapping_mul(0xc2b2_ae3d).rotate_left(21))
}

/// `x.floor() as i64` (saturating the same way, 0 for NaN) without a call to libm's `floor`,
/// which the baseline x86-64 target has no instruction for: the truncation, one lower for a
/// negative non-integer.
#[inline]
pub(crate) fn floor_i64(x: f64) -> i64 {
    let t = x as i64;
    if (t as f64) > x {
        t.saturating_sub(1)
    } else {
        t
    }
}

/// Pack a hash and an index.
#[inline]
pub(crate) fn pack(hash: u32, index: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(index)
}

/// The hash half of a packed key.
#[inline]
pub(crate) fn hi(k: u64) -> u32 {
    (k >> 32) as u32
}

/// The index half of a packed key.
#[inline]
pub(crate) fn lo(k: u64) -> u32 {
    k as u32
}

/// Bits of the most-significant-digit pass of [`sort`]: 2048 buckets, few enough that the
/// scatter streams, many enough that a bucket of a few million keys fits in L2.
const RADIX_BITS: u32 = 11;

/// Sort keys ascending, in parallel (keys are unique because the index is part of them).
///
/// One most-significant-digit radix pass over the bits that actually vary (`min..=max`)
/// scatters the keys into up to 2048 buckets (per-chunk histograms, every chunk writes its own
/// disjoint sub-slice of each bucket), then every bucket — small enough to stay in cache — is
/// sorted on its own, back into `keys` (the second digit's scatter is the copy back). This
/// replaces a comparison sort over the whole array, whose passes each stream the full array
/// through memory. Needs a second buffer of the same size.
pub(crate) fn sort(keys: &mut Vec<u64>) {
    let n = keys.len();
    if n < 1 << 16 {
        keys.sort_unstable();
        return;
    }
    let (min, max) = keys
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .fold((u64::MAX, 0), |(a, b), &k| (a.min(k), b.max(k)))
        })
        .reduce(|| (u64::MAX, 0), |x, y| (x.0.min(y.0), x.1.max(y.1)));
    let width = 64 - (max - min).leading_zeros();
    let bits = RADIX_BITS.min(width);
    let shift = width - bits;
    let buckets = 1usize << bits;
    let bucket = move |k: u64| ((k - min) >> shift) as usize;

    let (out, bucket_len) = scatter(keys, buckets, bucket, |_, k| k);
    // Sort every bucket from `out` back into `keys` (whose contents were all copied out):
    // the second digit's scatter is the copy back, so no bucket is copied twice and no third
    // buffer is needed.
    let mut parts: Vec<(&[u64], &mut [u64])> = Vec::with_capacity(buckets);
    let mut src: &[u64] = &out;
    let mut dst: &mut [u64] = keys;
    for &len in &bucket_len {
        let (s, rs) = src.split_at(len);
        let (d, rd) = std::mem::take(&mut dst).split_at_mut(len);
        parts.push((s, d));
        src = rs;
        dst = rd;
    }
    parts
        .into_par_iter()
        .for_each_init(Vec::new, |start: &mut Vec<usize>, (src, s)| {
            if src.len() > n / 8 {
                s.copy_from_slice(src);
                s.par_sort_unstable();
            } else if src.len() < 64 || shift == 0 {
                s.copy_from_slice(src);
                s.sort_unstable();
            } else {
                sort_bucket(src, s, min, shift, start);
            }
        });
}

/// The most-significant-digit pass of [`sort`] and [`sort_hashes`]: `key(i, items[i])` for
/// every item, scattered into `buckets` buckets by `bucket(items[i])`, stably (index order
/// within a bucket). Per-chunk histograms give every chunk its own disjoint sub-slice of each
/// bucket, so the chunks scatter in parallel. Returns the keys and every bucket's length.
fn scatter<T: Copy + Sync>(
    items: &[T],
    buckets: usize,
    bucket: impl Fn(T) -> usize + Sync,
    key: impl Fn(usize, T) -> u64 + Sync,
) -> (Vec<u64>, Vec<usize>) {
    let n = items.len();
    let threads = rayon::current_num_threads().max(1);
    let chunk = n.div_ceil(threads * 2).max(1);
    let hists: Vec<Vec<u32>> = items
        .par_chunks(chunk)
        .map(|c| {
            let mut h = vec![0u32; buckets];
            for &x in c {
                h[bucket(x)] += 1;
            }
            h
        })
        .collect();
    // Carve the output into (chunk, bucket) sub-slices: bucket-major, chunk order inside.
    // Initialised in parallel: a zeroed allocation is cleared (and, when its memory was given
    // back to the system, faulted in) by the calling thread alone.
    let mut out: Vec<u64> = (0..n).into_par_iter().map(|_| 0).collect();
    let mut slots: Vec<Vec<&mut [u64]>> =
        hists.iter().map(|_| Vec::with_capacity(buckets)).collect();
    let mut bucket_len = vec![0usize; buckets];
    let mut rest: &mut [u64] = &mut out;
    for (b, len) in bucket_len.iter_mut().enumerate() {
        for (c, h) in hists.iter().enumerate() {
            let (s, r) = std::mem::take(&mut rest).split_at_mut(h[b] as usize);
            *len += s.len();
            slots[c].push(s);
            rest = r;
        }
    }
    items
        .par_chunks(chunk)
        .zip(slots.into_par_iter())
        .enumerate()
        .for_each(|(c, (xs, mut s))| {
            let mut fill = vec![0usize; buckets];
            for (j, &x) in xs.iter().enumerate() {
                let b = bucket(x);
                s[b][fill[b]] = key(c * chunk + j, x);
                fill[b] += 1;
            }
        });
    (out, bucket_len)
}

/// Sort the keys of one bucket of [`sort`] or [`sort_hashes`] (keys `k` whose `(k - min) >>
/// shift` agree, `shift > 0`) from `src` into `dst`, `start` a reusable buffer.
fn sort_bucket(src: &[u64], dst: &mut [u64], min: u64, shift: u32, start: &mut Vec<usize>) {
    // A second radix digit, wide enough that about four keys share both digits (so the cost
    // per key does not grow with the bucket), then an insertion sort that only has to order
    // those few.
    let want = usize::BITS - (src.len() / 4).leading_zeros();
    let b2 = want.clamp(8, 16).min(shift);
    let sh2 = shift - b2;
    let mask = (1u64 << b2) - 1;
    let digit = |k: u64| (((k - min) >> sh2) & mask) as usize;
    start.clear();
    start.resize((1 << b2) + 1, 0);
    for &k in src {
        start[digit(k) + 1] += 1;
    }
    for d in 0..1 << b2 {
        start[d + 1] += start[d];
    }
    for &k in src {
        let d = digit(k);
        dst[start[d]] = k;
        start[d] += 1;
    }
    // `start[d]` is now where sub-bucket `d` ends. A sub-bucket that is not small (keys that
    // differ only below both digits) gets a comparison sort, so no input makes this
    // quadratic.
    let mut from = 0;
    for &end in &start[..1 << b2] {
        let sub = &mut dst[from..end];
        from = end;
        if sub.len() > 32 {
            sub.sort_unstable();
            continue;
        }
        for i in 1..sub.len() {
            let k = sub[i];
            let mut j = i;
            while j > 0 && sub[j - 1] > k {
                sub[j] = sub[j - 1];
                j -= 1;
            }
            sub[j] = k;
        }
    }
}

/// `pack(hashes[i], i)` for every `i`, sorted: what [`sort`] makes of those keys, without
/// them ever being written in index order. The radix pass reads the hashes (half the size of
/// the keys) and scatters each key straight to its bucket, and every bucket is then sorted in
/// place through a small buffer that stays in cache: one key-sized buffer instead of two, and
/// two passes over the keys fewer.
pub(crate) fn sort_hashes(hashes: &[u32]) -> Vec<u64> {
    let n = hashes.len();
    let key = |i: usize, h: u32| pack(h, i as u32);
    if n < 1 << 16 {
        let mut keys: Vec<u64> = hashes.iter().enumerate().map(|(i, &h)| key(i, h)).collect();
        keys.sort_unstable();
        return keys;
    }
    let (min, max) = hashes
        .par_chunks(1 << 16)
        .map(|c| {
            c.iter()
                .fold((u32::MAX, 0), |(a, b), &h| (a.min(h), b.max(h)))
        })
        .reduce(|| (u32::MAX, 0), |x, y| (x.0.min(y.0), x.1.max(y.1)));
    let width = 32 - (max - min).leading_zeros();
    let bits = RADIX_BITS.min(width);
    let shift = width - bits;
    let buckets = 1usize << bits;
    let bucket = move |h: u32| ((h - min) >> shift) as usize;

    let (mut out, bucket_len) = scatter(hashes, buckets, bucket, key);
    // The scatter kept index order within every bucket, so a bucket of one hash (all of them
    // when `shift` is 0) is sorted already.
    if shift > 0 {
        let mut parts: Vec<&mut [u64]> = Vec::with_capacity(buckets);
        let mut rest: &mut [u64] = &mut out;
        for &len in &bucket_len {
            let (d, r) = std::mem::take(&mut rest).split_at_mut(len);
            parts.push(d);
            rest = r;
        }
        let (min, shift) = (u64::from(min) << 32, shift + 32);
        parts.into_par_iter().for_each_init(
            || (Vec::new(), Vec::new()),
            |(copy, start): &mut (Vec<u64>, Vec<usize>), s| {
                if s.len() > n / 8 {
                    s.par_sort_unstable();
                } else if s.len() < 64 {
                    s.sort_unstable();
                } else {
                    copy.clear();
                    copy.extend_from_slice(s);
                    sort_bucket(copy, s, min, shift, start);
                }
            },
        );
    }
    out
}

/// Split sorted keys into about `parts` ranges whose borders never cut a run.
pub(crate) fn run_chunks(keys: &[u64], parts: usize) -> Vec<Range<usize>> {
    let n = keys.len();
    let parts = parts.max(1);
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 1..=parts {
        if start >= n {
            break;
        }
        let mut end = if p == parts {
            n
        } else {
            (n * p / parts).max(start)
        };
        while end < n && end > 0 && hi(keys[end]) == hi(keys[end - 1]) {
            end += 1;
        }
        if end > start {
            out.push(start..end);
            start = end;
        }
    }
    if start < n {
        out.push(start..n);
    }
    out
}

/// How many chunks to split parallel work into.
pub(crate) fn parts_for(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    if n < 50_000 {
        1
    } else {
        (threads * 16).min(n / 10_000).max(1)
    }
}

/// What `each` pushes for the indices `0..n`, in index order, computed in parallel over blocks
/// of 65 536 indices, each filled by a plain sequential loop, then joined once into a buffer of
/// the exact size. Use it instead of a filtered parallel `collect` (`filter`, `filter_map`,
/// `flat_map_iter`) over every facet or half-edge: that one took 30 ms at 4M facets to collect
/// the 66 boundary edges of the 12 M half-edges, this about 3 ms (a plain parallel `count` of
/// them, 1.4 ms).
pub(crate) fn par_blocks<T: Copy + Send>(
    n: usize,
    each: impl Fn(Range<usize>, &mut Vec<T>) + Sync,
) -> Vec<T> {
    const BLOCK: usize = 1 << 16;
    let pieces: Vec<Vec<T>> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut piece = Vec::new();
            each(b * BLOCK..(b * BLOCK + BLOCK).min(n), &mut piece);
            piece
        })
        .collect();
    let mut out = Vec::with_capacity(pieces.iter().map(Vec::len).sum());
    for p in pieces {
        out.extend_from_slice(&p);
    }
    out
}

/// Bounding box of points, in parallel.
pub(crate) fn par_bbox(points: &[[f32; 3]]) -> Option<Bbox> {
    points.par_chunks(1 << 16).map(chunk_bbox).reduce(
        || None,
        |a, b| match (a, b) {
            (Some(a), Some(b)) => crate::bbox_of([a.min, a.max, b.min, b.max].into_iter()),
            (a, None) => a,
            (None, b) => b,
        },
    )
}

/// Bounding box of points: eight points (24 coordinates) at a time into 24 independent
/// minima and maxima, which the compiler turns into vector instructions (one running box
/// would chain every step on the one before), then the 24 folded into three.
fn chunk_bbox(points: &[[f32; 3]]) -> Option<Bbox> {
    const LANES: usize = 24;
    let first = *points.first()?;
    let flat = points.as_flattened();
    let mut lo = [0f32; LANES];
    for (l, x) in lo.iter_mut().zip(first.iter().cycle()) {
        *l = *x;
    }
    let mut hi = lo;
    let mut blocks = flat.chunks_exact(LANES);
    for block in &mut blocks {
        for ((l, h), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(block) {
            *l = l.min(x);
            *h = h.max(x);
        }
    }
    let mut b = Bbox {
        min: first,
        max: first,
    };
    for (l, h) in lo.chunks_exact(3).zip(hi.chunks_exact(3)) {
        b.grow([l[0], l[1], l[2]]);
        b.grow([h[0], h[1], h[2]]);
    }
    for p in blocks.remainder().chunks_exact(3) {
        b.grow([p[0], p[1], p[2]]);
    }
    Some(b)
}

/// Bits of a [`LexGrid`] key per axis.
const AXIS_BITS: u32 = 19;

/// Cells kept clear of a [`LexGrid`]'s edges, so that a cell shifted by up to this many along
/// an axis still has a key.
const LEX_MARGIN: i64 = 8;

/// Cubic grids over one box, one per level (the cells of level `l` of side `2^l`), whose
/// cells are `u64` keys ordered by (level, z, y, x): the cells of one row along x are
/// neighbours in that order, and shifting every cell by one offset keeps their order. So
/// look-ups made in key order (things filed by cell, [`LexIndex`], visited in their own
/// order) move forward through the sorted keys, reading memory in turn instead of at random
/// as look-ups by hash do.
///
/// A key holds [`AXIS_BITS`] bits per axis: the finest level is the one whose cells still
/// number under `2^AXIS_BITS` across the box, and a finer level asked for is that one
/// (cells larger than asked for: a look-up still finds everything it would, among more).
#[derive(Clone, Copy, Debug)]
pub(crate) struct LexGrid {
    origin: [f64; 3],
    least: i32,
}

impl LexGrid {
    /// The grids over the box of `points` (all finite), for look-ups of levels up to `top`.
    pub(crate) fn around(points: &[[f64; 3]], top: i32) -> LexGrid {
        let empty = || ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
        let (lo, hi) = points
            .par_chunks(1 << 14)
            .map(|c| {
                c.iter().fold(empty(), |(a, b), p| {
                    (
                        [0, 1, 2].map(|k| a[k].min(p[k])),
                        [0, 1, 2].map(|k| b[k].max(p[k])),
                    )
                })
            })
            .reduce(empty, |(a, b), (c, d)| {
                (
                    [0, 1, 2].map(|k| a[k].min(c[k])),
                    [0, 1, 2].map(|k| b[k].max(d[k])),
                )
            });
        LexGrid::over(lo, hi, top)
    }

    /// The grids over the box from `lo` to `hi` (empty when `lo` is infinite: no points), for
    /// look-ups of levels up to `top`.
    pub(crate) fn over(lo: [f64; 3], hi: [f64; 3], top: i32) -> LexGrid {
        let extent = (0..3)
            .map(|k| hi[k] - lo[k])
            .fold(0.0f64, f64::max)
            .max(f64::MIN_POSITIVE);
        // Cells of the finest level number at most 2^AXIS_BITS − 4 × LEX_MARGIN across, and
        // `top` is at most 127 levels above it (points all in one spot: no finer than needed).
        let room = f64::from((1u32 << AXIS_BITS) - 4 * LEX_MARGIN as u32);
        let least = ((extent / room).log2().ceil().clamp(-1000.0, 1000.0) as i32)
            .max(top.clamp(-1000, 1000) - 127);
        LexGrid {
            origin: if lo[0].is_finite() { lo } else { [0.0; 3] },
            least,
        }
    }

    /// The level used for `level`: no finer than the finest, no coarser than 127 levels above
    /// it (the `top` the grids were made for, or above: cells far larger than the box).
    pub(crate) fn level(&self, level: i32) -> i32 {
        level.clamp(self.least, self.least + 127)
    }

    /// The finest level.
    pub(crate) fn least(&self) -> i32 {
        self.least
    }

    /// The cell of level `level` (as [`LexGrid::level`] gives) holding `p`.
    #[inline]
    pub(crate) fn cell(&self, level: i32, p: [f64; 3]) -> [i64; 3] {
        self.nearer(level, p).0
    }

    /// [`LexGrid::cell`], and along each axis which neighbour of that cell is nearer to `p`
    /// (−1 when `p` lies in the lower half of the cell, else 1). The cells are those of a
    /// grid through the origin (`⌊p / 2^level⌋`), counted from the box's least one.
    #[inline]
    pub(crate) fn nearer(&self, level: i32, p: [f64; 3]) -> ([i64; 3], [i64; 3]) {
        let inv = pow2(-level);
        let t = [0, 1, 2].map(|k| p[k] * inv);
        let c = t.map(floor_i64);
        let dir = [0, 1, 2].map(|k| if t[k] - (c[k] as f64) < 0.5 { -1 } else { 1 });
        let cell = [0, 1, 2].map(|k| {
            c[k].saturating_sub(floor_i64(self.origin[k] * inv))
                .saturating_add(LEX_MARGIN)
        });
        (cell, dir)
    }

    /// The keys of the first and last cells of a row along x (cells `xs` of row `y`, `z` of
    /// level `level`), the row cut to the grid; `None` when none of it is in the grid.
    #[inline]
    pub(crate) fn row(
        &self,
        level: i32,
        xs: std::ops::RangeInclusive<i64>,
        y: i64,
        z: i64,
    ) -> Option<(u64, u64)> {
        let last = (1i64 << AXIS_BITS) - 1;
        let (a, b) = ((*xs.start()).max(0), (*xs.end()).min(last));
        if a > b {
            return None;
        }
        Some((self.key(level, [a, y, z])?, self.key(level, [b, y, z])?))
    }

    /// The level of a key's cell, counted from the finest (0 for [`LexGrid::least`]).
    #[inline]
    pub(crate) fn key_level(key: u64) -> u32 {
        (key >> (3 * AXIS_BITS)) as u32
    }

    /// The key of cell `c` of level `level`; `None` when the cell lies outside the grid (so
    /// holds nothing filed from the box).
    #[inline]
    pub(crate) fn key(&self, level: i32, c: [i64; 3]) -> Option<u64> {
        let l = level.checked_sub(self.least)?;
        let axis = 1i64 << AXIS_BITS;
        if !(0..128).contains(&l) || c.iter().any(|x| !(0..axis).contains(x)) {
            return None;
        }
        let b = AXIS_BITS;
        Some((l as u64) << (3 * b) | (c[2] as u64) << (2 * b) | (c[1] as u64) << b | c[0] as u64)
    }
}

/// `2^e` exactly, without a call to libm (0 or infinity out of `f64`'s normal range).
#[inline]
pub(crate) fn pow2(e: i32) -> f64 {
    match e {
        -1022..=1023 => f64::from_bits(((e + 1023) as u64) << 52),
        ..-1022 => 0.0,
        _ => f64::INFINITY,
    }
}

/// Things filed under `u64` keys ([`LexGrid`] cells): the keys sorted (ties in the things'
/// order), with look-ups that search from where the last one ended (galloping), so that
/// look-ups in key order cost about one step each.
pub(crate) struct LexIndex {
    /// The keys, sorted.
    pub(crate) keys: Vec<u64>,
    /// The things' indices in the keys' order.
    pub(crate) order: Vec<u32>,
}

impl LexIndex {
    /// Files thing `i` under `keys[i]`.
    pub(crate) fn new(keys: &[u64]) -> LexIndex {
        let mut both: Vec<u128> = keys
            .par_iter()
            .enumerate()
            .map(|(i, &k)| u128::from(k) << 32 | i as u128)
            .collect();
        both.par_sort_unstable();
        LexIndex {
            keys: both.par_iter().map(|&k| (k >> 32) as u64).collect(),
            order: both.par_iter().map(|&k| k as u32).collect(),
        }
    }

    /// Where the things filed under `key` are (empty when none), searched from `hint`, which
    /// is left at the run's start.
    #[inline]
    pub(crate) fn run(&self, key: u64, hint: &mut usize) -> Range<usize> {
        self.span(key, key, hint)
    }

    /// Where the things filed under keys from `lo` to `hi` (inclusive) are, searched from
    /// `hint`, which is left at the span's start.
    #[inline]
    pub(crate) fn span(&self, lo: u64, hi: u64, hint: &mut usize) -> Range<usize> {
        let s = lower_bound_from(&self.keys, lo, *hint);
        *hint = s;
        if s == self.keys.len() || self.keys[s] > hi {
            return s..s;
        }
        s..match hi.checked_add(1) {
            Some(h) => lower_bound_from(&self.keys, h, s),
            None => self.keys.len(),
        }
    }
}

/// The first index of sorted `keys` whose key is at least `key`, found by galloping from
/// `hint` (forward or back): O(log d) for an answer `d` places away.
#[inline]
pub(crate) fn lower_bound_from<T: Ord + Copy>(keys: &[T], key: T, hint: usize) -> usize {
    let n = keys.len();
    let h = hint.min(n);
    let below = |i: usize| keys[i] < key;
    if h < n && below(h) {
        // keys[lo] < key; look further on in growing steps.
        let (mut lo, mut step) = (h, 1);
        loop {
            let next = h.saturating_add(step);
            if next >= n || !below(next) {
                let end = next.min(n);
                return lo + 1 + keys[lo + 1..end].partition_point(|&k| k < key);
            }
            lo = next;
            step *= 2;
        }
    }
    // keys[hi..] are all at least `key`; look back in growing steps.
    let (mut hi, mut step) = (h, 1);
    while hi > 0 {
        let back = hi.saturating_sub(step);
        if below(back) {
            return back + 1 + keys[back + 1..hi].partition_point(|&k| k < key);
        }
        hi = back;
        step *= 2;
    }
    0
}

/// A xorshift generator of numbers in `[0, 1)` for unit tests (no `generate` feature needed).
#[cfg(test)]
pub(crate) fn test_uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pow2_matches_std() {
        for e in (-1022..=1023).step_by(7).chain([-1, 0, 1, 1023]) {
            assert_eq!(pow2(e), 2f64.powi(e), "{e}");
        }
        assert_eq!(pow2(-1023), 0.0);
        assert_eq!(pow2(1024), f64::INFINITY);
    }

    #[test]
    fn galloping_finds_the_lower_bound_from_any_hint() {
        let mut next = test_uniform(0x7a3c_55e1_0b9d_4f21u64);
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let mut keys: Vec<u64> = (0..n).map(|_| (next() * 50.0) as u64).collect();
            keys.sort_unstable();
            for key in 0..52 {
                let want = keys.partition_point(|&k| k < key);
                for hint in [0, n / 3, n / 2, n.saturating_sub(1), n, n + 5] {
                    assert_eq!(lower_bound_from(&keys, key, hint), want, "{n} {key} {hint}");
                }
            }
        }
    }

    #[test]
    fn lex_runs_and_rows_match_a_scan() {
        // Points of a flat box (one axis a thousandth of another) filed on four levels, the
        // finest clamped; every look-up of a cell and of a row of three cells along x round
        // a filed one matches a scan of everything filed, whatever the hint.
        let mut next = test_uniform(0x3e1f_0c0a_1d2b_7e55u64);
        let points: Vec<[f64; 3]> = (0..3_000)
            .map(|_| [next() * 40.0 - 20.0, next() * 3.0, next() * 0.001])
            .collect();
        let grid = LexGrid::around(&points, 2);
        let filed: Vec<(i32, [i64; 3])> = points
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let l = grid.level(grid.least() - 1 + (i % 4) as i32);
                (l, grid.cell(l, p))
            })
            .collect();
        let keys: Vec<u64> = filed
            .iter()
            .map(|&(l, c)| grid.key(l, c).unwrap())
            .collect();
        let index = LexIndex::new(&keys);
        assert!(index.keys.is_sorted());
        let mut count: std::collections::HashMap<(i32, [i64; 3]), Vec<u32>> = Default::default();
        for (i, &f) in filed.iter().enumerate() {
            count.entry(f).or_default().push(i as u32);
        }
        let mut hint = 0;
        for (i, &(l, c)) in filed.iter().enumerate().step_by(7) {
            for d in 0..27 {
                let o = [d % 3, d / 3 % 3, d / 9].map(|o| o - 1);
                let n = [0, 1, 2].map(|a| c[a] + o[a]);
                let got = &index.order[index.run(grid.key(l, n).unwrap(), &mut hint)];
                let want = count.get(&(l, n)).map_or(&[][..], |v| &v[..]);
                assert_eq!(got, want, "thing {i}, offset {o:?}");
                let (lo, hi) = (
                    grid.key(l, [n[0] - 1, n[1], n[2]]).unwrap(),
                    grid.key(l, [n[0] + 1, n[1], n[2]]).unwrap(),
                );
                let mut row = index.order[index.span(lo, hi, &mut hint)].to_vec();
                row.sort_unstable();
                let mut want: Vec<u32> = (-1..=1)
                    .flat_map(|dx| {
                        count
                            .get(&(l, [n[0] + dx, n[1], n[2]]))
                            .into_iter()
                            .flatten()
                    })
                    .copied()
                    .collect();
                want.sort_unstable();
                assert_eq!(row, want);
            }
        }
        // Points all in one spot: the levels up to `top` are kept as asked.
        let one = LexGrid::around(&[[1.0, -2.0, 3.0]; 4], 5);
        assert_eq!((one.level(5), one.level(-100)), (5, -100));
        assert_eq!(one.level(-1000), one.least());
        // Outside the grid: no key.
        assert_eq!(grid.key(grid.least() - 1, [10; 3]), None);
        assert_eq!(grid.key(grid.least(), [-1, 10, 10]), None);
        assert_eq!(grid.key(grid.least(), [1 << AXIS_BITS, 10, 10]), None);
        assert_eq!(grid.key(grid.least() + 128, [10; 3]), None);
    }

    #[test]
    fn radix_sort_matches_std() {
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for (n, mask) in [
            (70_000, u64::MAX),
            (300_000, 0xffff_ffff),
            (200_000, 0xff),
            (100_000, 0),
            // Keys that differ only in bits below both radix digits.
            (200_000, 0xf000_0000_0000_000f),
        ] {
            let mut a: Vec<u64> = (0..n).map(|_| next() & mask).collect();
            let mut b = a.clone();
            sort(&mut a);
            b.sort_unstable();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn hash_sort_matches_std() {
        let mut x = 0x0123_4567_89ab_cdefu64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u32
        };
        for (n, mask) in [
            (1_000, u32::MAX),
            (70_000, u32::MAX),
            (300_000, 0xffff),
            (200_000, 0xff),
            (100_000, 0),
            (250_000, 0xffff_f000),
            // A few hashes far apart: most buckets empty, a few large.
            (200_000, 0xf000_000f),
        ] {
            let hashes: Vec<u32> = (0..n).map(|_| next() & mask).collect();
            let mut want: Vec<u64> = hashes
                .iter()
                .enumerate()
                .map(|(i, &h)| pack(h, i as u32))
                .collect();
            want.sort_unstable();
            assert_eq!(sort_hashes(&hashes), want, "{n} hashes under {mask:x}");
        }
    }

    #[test]
    fn bbox_matches_a_running_box() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / 1e3 - 5e3
        };
        for n in [0, 1, 2, 7, 8, 9, 23, 24, 25, 1000, 70_001, 200_000] {
            let pts: Vec<[f32; 3]> = (0..n).map(|_| [next(), next(), next()]).collect();
            let want = crate::bbox_of(pts.iter().copied());
            let got = par_bbox(&pts);
            assert_eq!(
                got.map(|b| (b.min, b.max)),
                want.map(|b| (b.min, b.max)),
                "{n} points"
            );
        }
    }

    #[test]
    fn floor_matches_std() {
        for x in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -1.0,
            -1.5,
            2.999_999,
            -2.000_001,
            1e300,
            -1e300,
            9.3e18,
            -9.3e18,
            -9.223_372_036_854_776e18,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ] {
            assert_eq!(floor_i64(x), x.floor() as i64, "{x}");
        }
    }

    #[test]
    fn chunks_never_cut_runs() {
        let mut keys: Vec<u64> = (0..100_000u32).map(|i| pack(i / 7, i)).collect();
        keys.reverse();
        sort(&mut keys);
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        let chunks = run_chunks(&keys, 13);
        assert_eq!(chunks.first().map(|r| r.start), Some(0));
        assert_eq!(chunks.last().map(|r| r.end), Some(keys.len()));
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_ne!(hi(keys[w[1].start]), hi(keys[w[1].start - 1]));
        }
    }
}
