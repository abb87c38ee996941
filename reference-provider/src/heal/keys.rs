//! Shared helpers for the sort-based stages: 32-bit hashes packed with a 32-bit index into a
//! `u64`, sorted in parallel, then processed run by run (a run = equal high 32 bits).

use std::ops::Range;

use rayon::prelude::*;

use super::Bbox;

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

/// Sort packed keys (parallel, unstable; keys are unique because the index is part of them).
pub(crate) fn sort(keys: &mut [u64]) {
    keys.par_sort_unstable();
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
    points
        .par_chunks(1 << 16)
        .map(|c| super::bbox_of(c.iter().copied()))
        .reduce(
            || None,
            |a, b| match (a, b) {
                (Some(a), Some(b)) => super::bbox_of([a.min, a.max, b.min, b.max].into_iter()),
                (a, None) => a,
                (None, b) => b,
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_never_cut_runs() {
        let mut keys: Vec<u64> = (0..100_000u32).map(|i| pack(i / 7, i)).collect();
        sort(&mut keys);
        let chunks = run_chunks(&keys, 13);
        assert_eq!(chunks.first().map(|r| r.start), Some(0));
        assert_eq!(chunks.last().map(|r| r.end), Some(keys.len()));
        for w in chunks.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert_ne!(hi(keys[w[1].start]), hi(keys[w[1].start - 1]));
        }
    }
}
