//! Micro-benchmark of the pure race engine: a whole race (targets, AAAA and
//! A answers, one failed and one winning attempt) with no I/O at all.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use siprace::endpoint::{AttemptError, ErrorClass, Family, TargetSpec, Transport};
use siprace::race::history::HistoryView;
use siprace::race::{Action, AttemptId, Input, Race, RaceConfig};

fn one_race(addrs_per_family: usize) -> usize {
    let t0 = Instant::now();
    let host: Arc<str> = Arc::from("sip.example.test");
    let mut race = Race::new(
        RaceConfig::default(),
        HistoryView::default(),
        &[Family::V6, Family::V4],
        t0,
    );
    let mut actions = 0;
    actions += race
        .step(
            t0,
            Input::Targets(vec![TargetSpec {
                host: host.clone(),
                port: 5060,
                transport: Transport::Udp,
                rank: 0,
            }]),
        )
        .len();
    let v6 = (0..addrs_per_family)
        .map(|i| format!("2001:db8::{}", i + 1).parse().unwrap())
        .collect();
    let v4 = (0..addrs_per_family)
        .map(|i| format!("192.0.2.{}", i + 1).parse().unwrap())
        .collect();
    actions += race
        .step(
            t0,
            Input::Addresses {
                host: host.clone(),
                family: Family::V6,
                addrs: v6,
            },
        )
        .len();
    actions += race
        .step(
            t0,
            Input::Addresses {
                host,
                family: Family::V4,
                addrs: v4,
            },
        )
        .len();
    let fail = AttemptError::new(ErrorClass::Refused, "refused");
    actions += race
        .step(
            t0 + Duration::from_millis(1),
            Input::Failed(AttemptId(1), fail),
        )
        .len();
    let out = race.step(
        t0 + Duration::from_millis(2),
        Input::Succeeded(AttemptId(2)),
    );
    assert!(matches!(out.last(), Some(Action::Done(_))));
    actions + out.len()
}

fn bench(c: &mut Criterion) {
    c.bench_function("race: 1+1 addresses, fail then win", |b| {
        b.iter(|| black_box(one_race(1)))
    });
    c.bench_function("race: 8+8 addresses, fail then win", |b| {
        b.iter(|| black_box(one_race(8)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
