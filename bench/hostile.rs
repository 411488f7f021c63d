//! Hostile spec files (criterion): the time `replicant validate` spends loading and checking
//! each hostile shape at sizes from 1 KiB to the 4 MiB file limit, beside a valid spec file of
//! the same size where one can exist. Cost linear in the size shows as a flat throughput;
//! a return of super-linear cost shows as throughput falling with size.

#[path = "../tests/support/hostile.rs"]
mod hostile;

use std::{hint::black_box, time::Duration};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicant::validate::{self, Report};

const SIZES: &[usize] = &[1 << 10, 16 << 10, 256 << 10, 1 << 20, (4 << 20) - 4096];

/// Load and check `text` as `replicant validate` does; the number of problems found.
fn validate(text: &str) -> usize {
    let mut loaded = Report::default();
    validate::load_str("bench.yaml", text, &mut loaded);
    validate::check_together([loaded]).problems.len()
}

/// Distinct valid clusters of three members, to about `bytes` (within the spec limits).
fn valid(bytes: usize) -> Option<String> {
    let mut out = String::new();
    let mut i = 0;
    while out.len() < bytes {
        out.push_str(&format!(
            "---\napiVersion: replicant.dev/v1alpha1\nkind: ReplicationCluster\nmetadata: {{name: c{i}}}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"10.{}.{}.1:6379\"}}\n    - {{name: b, address: \"10.{}.{}.2:6379\"}}\n    - {{name: c, address: \"10.{}.{}.3:6379\"}}\n  failover: {{standby: b, detectAfter: 1s}}\n",
            i / 250, i % 250, i / 250, i % 250, i / 250, i % 250
        ));
        i += 1;
    }
    (validate(&out) == 0).then_some(out)
}

fn hostile_shapes(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for &bytes in SIZES {
        if let Some(text) = valid(bytes) {
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new("valid-spec", bytes), &text, |b, t| {
                b.iter(|| validate(black_box(t)))
            });
        }
        for shape in hostile::SHAPES {
            let text = hostile::text(shape, bytes);
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_with_input(BenchmarkId::new(*shape, bytes), &text, |b, t| {
                b.iter(|| validate(black_box(t)))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, hostile_shapes);
criterion_main!(benches);
