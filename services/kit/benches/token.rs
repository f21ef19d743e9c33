//! What the gateway pays on every citizen request: verifying a session token
//! offline (base64, JSON, one Ed25519 signature check).
//!
//! Run with `cargo bench -p adminduk-kit --bench token`.

use std::hint::black_box;

use adminduk_kit::token::{Claims, ISSUER, SigningKey, VerifyingKey, verify};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn tokens(c: &mut Criterion) {
    let key = SigningKey::generate("bench").expect("a key");
    let claims = Claims {
        iss: ISSUER.to_owned(),
        sub: "3275014101900001".to_owned(),
        dev: "dev-0123456789abcdef0123".to_owned(),
        jti: "01a20000-0000-7000-8000-000000000000".to_owned(),
        iat: 1_795_000_000,
        exp: 1_795_000_900,
        cnf: adminduk_kit::token::Confirmation {
            jkt: "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k".to_owned(),
        },
    };
    let token = key.sign(&claims).expect("a token");
    // Two keys listed, as during a rotation.
    let other = SigningKey::generate("old").expect("a key");
    let keys = [
        VerifyingKey {
            kid: "old".into(),
            public_key: other.public_key(),
        },
        VerifyingKey {
            kid: "bench".into(),
            public_key: key.public_key(),
        },
    ];
    let mut group = c.benchmark_group("token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("verify", |b| {
        b.iter(|| verify(black_box(&token), black_box(&keys), 1_795_000_100, 0))
    });
    group.bench_function("sign", |b| b.iter(|| key.sign(black_box(&claims))));
    group.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
