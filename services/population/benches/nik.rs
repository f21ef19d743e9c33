//! Parsing speed of NIK and KK numbers, which sit on every request's hot path.
//!
//! Run with `cargo bench -p adminduk-population --bench nik`.

use std::hint::black_box;

use adminduk_population::domain::kk::Kk;
use adminduk_population::domain::nik::Nik;
use chrono::NaiveDate;
use criterion::{Criterion, criterion_group, criterion_main};

fn parse(c: &mut Criterion) {
    // A fixed clock keeps the figures comparable from one day to the next.
    let Some(today) = NaiveDate::from_ymd_opt(2026, 11, 22) else {
        return;
    };

    c.bench_function("nik/parse/valid", |b| {
        b.iter(|| Nik::parse(black_box("3275014507900001"), black_box(today)))
    });
    c.bench_function("nik/parse/bad_day", |b| {
        b.iter(|| Nik::parse(black_box("3275013207900001"), black_box(today)))
    });
    c.bench_function("kk/parse/valid", |b| {
        b.iter(|| Kk::parse(black_box("3275011503150007"), black_box(today)))
    });
}

criterion_group!(benches, parse);
criterion_main!(benches);
