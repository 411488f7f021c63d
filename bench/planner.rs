//! Planner micro-benchmarks (criterion): one pure `plan` pass over 10 to 10,000 clusters.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use replicant::{
    api::Role,
    core::{
        desired::Desired,
        journal::Journal,
        observed::{MemberObservation, Observed},
        plan::plan,
    },
};

fn cluster(i: usize) -> Desired {
    serde_yaml::from_str(&format!(
        "name: c{i}\nspec:\n  engine: redis\n  primary: a\n  members:\n    - {{name: a, address: \"10.0.{}.1:6379\"}}\n    - {{name: b, address: \"10.0.{}.2:6379\"}}\n    - {{name: c, address: \"10.0.{}.3:6379\"}}\n  failover: {{standby: b}}\nvirtualNames:\n  - {{name: rw, spec: {{cluster: c{i}, target: primary}}}}\n  - {{name: ro, spec: {{cluster: c{i}, target: replicas}}}}\n",
        i % 250,
        i % 250,
        i % 250
    ))
    .expect("valid fixture")
}

/// Steady state, or (for `failing`) a master unreachable past detectAfter.
fn observed(failing: bool) -> Observed {
    let mut o = Observed::default();
    let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
    for m in ["a", "b", "c"] {
        let master = m == "a";
        o.members.insert(
            m.into(),
            MemberObservation {
                reachable: !(master && failing),
                unreachable_since: (master && failing)
                    .then(|| now - jiff::SignedDuration::from_secs(5)),
                role: Some(if master { Role::Master } else { Role::Replica }),
                upstream: (!master).then(|| "a".into()),
                durable: Some(1_000_000),
                link_up: (!master).then_some(!failing),
                read_only: Some(!master),
                guarded: master.then_some(true),
                ..Default::default()
            },
        );
    }
    o.virtual_names.insert("rw".into(), vec!["a".into()]);
    o.virtual_names
        .insert("ro".into(), vec!["b".into(), "c".into()]);
    o.journal = Journal {
        epoch: 1,
        current_primary: Some("a".into()),
        acknowledged_primary: Some("a".into()),
        ..Default::default()
    };
    o
}

fn bench(c: &mut Criterion) {
    let now: jiff::Timestamp = "2026-01-01T00:00:10Z".parse().unwrap();
    for (label, failing) in [("steady", false), ("failover", true)] {
        let mut group = c.benchmark_group(format!("plan/{label}"));
        for n in [10usize, 100, 1_000, 10_000] {
            let clusters: Vec<(Desired, Observed)> =
                (0..n).map(|i| (cluster(i), observed(failing))).collect();
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(n), &clusters, |b, clusters| {
                b.iter(|| {
                    for (d, o) in clusters {
                        black_box(plan(black_box(d), black_box(o), now));
                    }
                })
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = planner;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(planner);
