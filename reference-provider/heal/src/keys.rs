//! Shared helpers for the sort-based stages: 32-bit hashes packed with a 32-bit index into a
//! `u64`, sorted in parallel, then processed run by run (a run = equal high 32 bits).

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

/// A hash of cell `x` of the grid numbered `level` (grids of several sizes in one table).
#[inline]
pub(crate) fn cell_hash(level: i32, x: [i64; 3]) -> u32 {
    let h = hash3(x[0] as u32, x[1] as u32, x[2] as u32);
    fmix32(h ^ (level as u32).wrapping_mul(0x9E37_79B9))
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

/// Sorted 32-bit hashes with an index on their top bits: the run of one hash is found through
/// its slot of the index (about one run per slot) and a search within the slot, not over the
/// whole list.
pub(crate) struct HashRuns {
    /// The hashes, sorted.
    pub(crate) hash: Vec<u32>,
    /// Where each slot's runs start.
    first: Vec<u32>,
    bits: u32,
}

impl HashRuns {
    /// The index of `hash`, which must be sorted.
    pub(crate) fn new(hash: Vec<u32>) -> HashRuns {
        debug_assert!(hash.is_sorted());
        let bits = (usize::BITS - hash.len().leading_zeros()).clamp(1, 30);
        let mut first = vec![0u32; (1usize << bits) + 1];
        for &h in &hash {
            first[(h >> (32 - bits)) as usize + 1] += 1;
        }
        for i in 1..first.len() {
            first[i] += first[i - 1];
        }
        HashRuns { hash, first, bits }
    }

    /// Where the hash `h` is in the list (empty when it is not).
    #[inline]
    pub(crate) fn run(&self, h: u32) -> Range<usize> {
        let slot = (h >> (32 - self.bits)) as usize;
        let (a, b) = (self.first[slot] as usize, self.first[slot + 1] as usize);
        let run = &self.hash[a..b];
        let s = run.partition_point(|&x| x < h);
        let e = s + run[s..].partition_point(|&x| x == h);
        a + s..a + e
    }
}

/// The indices of `points` in their order along a Morton curve (1 024 steps per axis over
/// their box), ties in index order: look-ups made in this order for each point in turn touch
/// memory near the last ones when what they read is laid out by place.
pub(crate) fn space_order(points: &[[f64; 3]]) -> Vec<u32> {
    let empty = || ([f64::INFINITY; 3], [f64::NEG_INFINITY; 3]);
    let (least, most) = points
        .par_iter()
        .fold(empty, |(a, b), m| {
            (
                [0, 1, 2].map(|k| a[k].min(m[k])),
                [0, 1, 2].map(|k| b[k].max(m[k])),
            )
        })
        .reduce(empty, |(a, b), (c, d)| {
            (
                [0, 1, 2].map(|k| a[k].min(c[k])),
                [0, 1, 2].map(|k| b[k].max(d[k])),
            )
        });
    // Ten bits of a coordinate, two zero bits after each.
    let spread = |x: u32| {
        let mut x = x & 0x3ff;
        x = (x | x << 16) & 0x0300_00ff;
        x = (x | x << 8) & 0x0300_f00f;
        x = (x | x << 4) & 0x030c_30c3;
        (x | x << 2) & 0x0924_9249
    };
    let mut keys: Vec<u64> = points
        .par_iter()
        .enumerate()
        .map(|(i, m)| {
            let q = [0, 1, 2].map(|k| {
                let ext = most[k] - least[k];
                let t = if ext > 0.0 {
                    (m[k] - least[k]) / ext
                } else {
                    0.0
                };
                (t * 1023.0).clamp(0.0, 1023.0) as u32
            });
            pack(
                spread(q[0]) | spread(q[1]) << 1 | spread(q[2]) << 2,
                i as u32,
            )
        })
        .collect();
    sort(&mut keys);
    keys.into_iter().map(lo).collect()
}

/// Which cells of a grid of 3-D cells (one grid per `level`) hold something: a prefilter that
/// lets a look-up of an empty cell skip the table that lists what cells hold. One word per
/// block of 4 × 4 × 4 cells (the word found by a hash of the block and the level, the bit by
/// the cell's place in its block), so the cells round a point, which look-ups probe together,
/// are read from one or a few words instead of one cache line each. A clear bit is exact; a
/// set one may be another block's sharing the word.
pub(crate) struct CellBits {
    words: Vec<u64>,
    mask: usize,
}

impl CellBits {
    /// For about `filled` cells: 16 bits a cell (so few blocks share a word).
    pub(crate) fn new(filled: usize) -> CellBits {
        let n = (filled / 4).next_power_of_two().clamp(1 << 6, 1 << 22);
        CellBits {
            words: vec![0; n],
            mask: n - 1,
        }
    }

    #[inline]
    fn at(&self, level: i32, c: [i64; 3]) -> (usize, u32) {
        // An arithmetic shift and a mask: the block and the place in it, negative cells too.
        let w = cell_hash(level, c.map(|x| x >> 2)) as usize;
        let bit = (c[0] & 3) | (c[1] & 3) << 2 | (c[2] & 3) << 4;
        (w & self.mask, bit as u32)
    }

    /// Mark cell `c` of grid `level` filled.
    #[inline]
    pub(crate) fn set(&mut self, level: i32, c: [i64; 3]) {
        let (w, b) = self.at(level, c);
        self.words[w] |= 1 << b;
    }

    /// May cell `c` of grid `level` hold something? (`false`: it holds nothing.)
    #[inline]
    pub(crate) fn has(&self, level: i32, c: [i64; 3]) -> bool {
        let (w, b) = self.at(level, c);
        self.words[w] >> b & 1 == 1
    }
}

/// Things filed by cell (a level, and a cell of that level's grid) for look-ups of what one
/// cell holds: their indices sorted by the cell's hash ([`HashRuns`]), and a [`CellBits`] of
/// the filled cells, so that a look-up of an empty cell (most of them when what is filed is
/// sparse, as in a cloud of separate triangles) reads one word of the bitmap.
pub(crate) struct CellIndex {
    /// The things' indices, in the order of their cells' hashes (ties in index order).
    pub(crate) order: Vec<u32>,
    runs: HashRuns,
    filled: CellBits,
}

impl CellIndex {
    /// Files thing `i` under `cells[i]`.
    pub(crate) fn new(cells: &[(i32, [i64; 3])]) -> CellIndex {
        let mut filled = CellBits::new(cells.len());
        for &(l, c) in cells {
            filled.set(l, c);
        }
        let hashes: Vec<u32> = cells.par_iter().map(|&(l, c)| cell_hash(l, c)).collect();
        let sorted = sort_hashes(&hashes);
        CellIndex {
            order: sorted.par_iter().map(|&k| lo(k)).collect(),
            runs: HashRuns::new(sorted.par_iter().map(|&k| hi(k)).collect()),
            filled,
        }
    }

    /// Where in [`CellIndex::order`] the things filed under cell `c` of level `l` are, with
    /// any other whose cell shares that hash; empty when the cell holds nothing.
    #[inline]
    pub(crate) fn run(&self, l: i32, c: [i64; 3]) -> Range<usize> {
        if !self.filled.has(l, c) {
            return 0..0;
        }
        self.runs.run(cell_hash(l, c))
    }

    /// The cells' hashes, sorted (one per thing, in [`CellIndex::order`]).
    #[cfg(test)]
    pub(crate) fn hashes(&self) -> &[u32] {
        &self.runs.hash
    }
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
    fn space_order_is_a_permutation_along_a_morton_curve() {
        let mut next = test_uniform(0x1f83_d9ab_fb41_bd6bu64);
        let points: Vec<[f64; 3]> = (0..5_000)
            .map(|_| [next() * 10.0, next() * 10.0 - 5.0, 3.0])
            .collect();
        let order = space_order(&points);
        let mut seen = order.clone();
        seen.sort_unstable();
        assert!(seen.iter().copied().eq(0..5_000u32));
        // Along one axis the curve is that axis's order.
        let line: Vec<[f64; 3]> = (0..100).rev().map(|k| [k as f64, 0.0, 0.0]).collect();
        assert!(space_order(&line).iter().copied().eq((0..100u32).rev()));
        let corners: Vec<[f64; 3]> = [7, 3, 5, 1, 6, 2, 4, 0]
            .map(|k: u32| [0, 1, 2].map(|a| f64::from(k >> a & 1)))
            .to_vec();
        // The indices holding codes 0, 1, …, 7 (x the lowest bit, then y, then z), in turn.
        assert_eq!(space_order(&corners), [7, 3, 5, 1, 6, 2, 4, 0]);
    }

    #[test]
    fn cell_bits_never_miss_a_filled_cell() {
        // Cells either side of zero and of the blocks' edges, on several levels; every set
        // cell is found, and most cells next to them (other bits of the same words) are not.
        let mut next = test_uniform(0x51_7cc1_b727_220au64);
        let cells: Vec<(i32, [i64; 3])> = (0..5_000)
            .map(|_| {
                let l = (next() * 5.0) as i32 - 2;
                (l, [0; 3].map(|_: i64| (next() * 200.0) as i64 - 100))
            })
            .collect();
        let mut bits = CellBits::new(cells.len());
        for &(l, c) in &cells {
            bits.set(l, c);
        }
        assert!(cells.iter().all(|&(l, c)| bits.has(l, c)));
        let set: std::collections::HashSet<_> = cells.iter().copied().collect();
        let (mut empty, mut claimed) = (0, 0);
        for &(l, c) in &cells {
            for d in 0..27 {
                let n = [d % 3, d / 3 % 3, d / 9].map(|o| o - 1);
                let n = [0, 1, 2].map(|a| c[a] + n[a]);
                if !set.contains(&(l, n)) {
                    empty += 1;
                    claimed += usize::from(bits.has(l, n));
                }
            }
        }
        assert!(
            claimed * 10 < empty,
            "{claimed} of {empty} empty cells claimed"
        );
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
