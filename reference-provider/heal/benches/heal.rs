//! Criterion benches of the healing core, per stage and end to end, on generated inputs with
//! every defect (`generate::broken_model`). Sizes: 100k and 1M facets (`HEAL_BENCH_FACETS`
//! overrides, comma-separated).
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use fixmyprint_heal::{self as heal, RepairOptions, generate, stages, stl};

fn sizes() -> Vec<usize> {
    std::env::var("HEAL_BENCH_FACETS")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100_000, 1_000_000])
}

fn bench(c: &mut Criterion) {
    let opts = RepairOptions::default();
    for n in sizes() {
        let input = generate::broken_model(1, n);
        let soup = stl::parse(&input, &opts).expect("generated input parses");
        let tol = stages::weld_tolerance(&soup.positions, &opts);
        let mut welded = stages::weld(soup.positions.clone(), tol);
        stages::clean(&mut welded);
        let twin = stages::pair_edges(&welded.triangles);
        let repaired = heal::repair(&input, &opts).expect("repairs");

        let mut g = c.benchmark_group(format!("heal/{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function("parse", |b| b.iter(|| stl::parse(&input, &opts)));
        g.bench_function("weld", |b| {
            b.iter_batched(
                || soup.positions.clone(),
                |p| stages::weld(p, tol),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("clean", |b| {
            let mut raw = stages::weld(soup.positions.clone(), tol);
            let base = raw.clone();
            b.iter_batched(
                || base.clone(),
                |mut m| stages::clean(&mut m),
                BatchSize::LargeInput,
            );
            stages::clean(&mut raw);
        });
        g.bench_function("topology", |b| {
            b.iter(|| stages::pair_edges(&welded.triangles))
        });
        g.bench_function("winding", |b| {
            b.iter(|| stages::winding(&twin, welded.triangles.len()))
        });
        g.bench_function("write", |b| b.iter(|| stl::encode_binary(&repaired.mesh)));
        g.bench_function("full_repair", |b| b.iter(|| heal::repair(&input, &opts)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
