//! The gateway's records on each backend (SQLite, and PostgreSQL when
//! configured): an agency's daily quota under racing verifications, a revoked
//! agreement, broker flags, and the audit chain — written by two replicas at
//! once, then changed, recomputed and cut short, each caught by `verify`.

use std::time::Duration;

use adminduk_gateway::MIGRATIONS;
use adminduk_gateway::audit::{self, AuditKeys, AuditLog, Event, SubjectKind};
use adminduk_gateway::store::{Agreement, Flag, Store, StoreError};
use adminduk_kit::testing;
use adminduk_proto::gateway::v1::{AgreementStatus, VerificationField};
use chrono::Utc;

fn agreement(code: &str, quota: i64, status: AgreementStatus) -> Agreement {
    Agreement {
        agency_code: code.to_owned(),
        name: "Bank Contoh".to_owned(),
        allowed_fields: vec![VerificationField::FullName],
        daily_quota: quota,
        status,
        fee_exempt: false,
        reason: "agreement signed for the test".to_owned(),
        updated_at: Utc::now(),
        updated_by: "adminduk://admin/ops".to_owned(),
    }
}

/// The writer's signing interval in these tests (it signs at its stop).
const HOUR: Duration = Duration::from_secs(3600);

fn keys() -> AuditKeys {
    AuditKeys::from_hex(&"5a".repeat(32), &"c3".repeat(32)).expect("keys")
}

fn nik(i: usize) -> String {
    format!("3275014101{:06}", 900_000 + i)
}

fn event(i: usize) -> Event {
    Event {
        principal: "adminduk://office/3275-KEC-01/counter-01".to_owned(),
        subject: Some((SubjectKind::Nik, nik(i))),
        method: "/adminduk.population.v1.PopulationService/GetResident".to_owned(),
        purpose: "counter service".to_owned(),
        outcome: if i.is_multiple_of(3) {
            "OK"
        } else {
            "NOT_FOUND:RESIDENT_NOT_FOUND"
        }
        .to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_verifications_never_pass_the_daily_quota_and_a_revoked_agreement_stays_revoked() {
    for test_db in testing::databases("gw_quota") {
        let label = test_db.label;
        let store = Store::new(test_db.connect(MIGRATIONS).await);
        store
            .put_agreement(&agreement("bank-a", 10, AgreementStatus::Active))
            .await
            .expect("written");
        let day = adminduk_kit::time::today_wib();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .count_check("bank-a", day, 1_000, 10)
                    .await
                    .expect("counted")
            });
        }
        let mut granted = Vec::new();
        while let Some(done) = tasks.join_next().await {
            granted.extend(done.expect("task"));
        }
        granted.sort_unstable();
        assert_eq!(
            granted,
            (1..=10).collect::<Vec<i64>>(),
            "{label}: exactly the quota, each count once"
        );
        let usage = store.usage("bank-a", day, day).await.expect("usage");
        assert_eq!((usage[0].checks, usage[0].amount_rupiah), (10, 10_000), "{label}");
        store
            .uncount_check("bank-a", day, 1_000)
            .await
            .expect("taken back");
        assert_eq!(
            store
                .count_check("bank-a", day, 1_000, 10)
                .await
                .expect("counted"),
            Some(10),
            "{label}"
        );

        store
            .put_agreement(&agreement("bank-a", 10, AgreementStatus::Revoked))
            .await
            .expect("revoked");
        let again = store
            .put_agreement(&agreement("bank-a", 10, AgreementStatus::Active))
            .await;
        assert!(matches!(again, Err(StoreError::Revoked)), "{label}: {again:?}");
        assert_eq!(
            store.agreement("bank-a").await.expect("read").map(|a| a.status),
            Some(AgreementStatus::Revoked),
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flag_is_open_until_cleared_or_ended() {
    for test_db in testing::databases("gw_flags") {
        let label = test_db.label;
        let store = Store::new(test_db.connect(MIGRATIONS).await);
        let now = Utc::now();
        for (account, ends) in [("dev-a", 3600), ("dev-b", -1)] {
            store
                .flag(&Flag {
                    account: account.to_owned(),
                    nik_masked: "3275********0001".to_owned(),
                    refusals: 3,
                    flagged_at: now,
                    blocked_until: now + chrono::Duration::seconds(ends),
                })
                .await
                .expect("flagged");
        }
        let open: Vec<String> = store
            .open_flags(now, 10)
            .await
            .expect("open")
            .into_iter()
            .map(|f| f.account)
            .collect();
        assert_eq!(open, ["dev-a"], "{label}: an ended block is no flag");
        assert!(store.is_flagged("dev-a", now).await.expect("read"), "{label}");
        assert!(
            !store
                .clear_flag("dev-b", now, "adminduk://admin/ops", "ended already")
                .await
                .expect("clear")
        );
        assert!(
            store
                .clear_flag("dev-a", now, "adminduk://admin/ops", "came with the KK")
                .await
                .expect("clear")
        );
        assert!(
            !store.is_flagged("dev-a", now).await.expect("read"),
            "{label}: cleared"
        );
        assert!(
            store.open_flags(now, 10).await.expect("open").is_empty(),
            "{label}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_chain_holds_across_replicas_and_every_tampering_is_named() {
    for test_db in testing::databases("gw_audit") {
        let label = test_db.label;
        let db = test_db.connect(MIGRATIONS).await;
        // Two replicas append to one chain at once.
        let (a, a_writer) = AuditLog::start(
            db.clone(),
            keys(),
            "gateway".to_owned(),
            Duration::from_secs(3600),
        );
        let (b, b_writer) = AuditLog::start(
            db.clone(),
            keys(),
            "gateway".to_owned(),
            Duration::from_secs(3600),
        );
        for i in 0..60_usize {
            if i.is_multiple_of(2) { &a } else { &b }.record(event(i));
        }
        drop((a, b));
        a_writer.finish().await;
        b_writer.finish().await;

        let verifier = AuditKeys::for_checking(&"5a".repeat(32), &keys().public_key_hex()).expect("checker");
        let report = audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        assert_eq!(report.broken, None, "{label}");
        assert_eq!(
            (report.rows, report.signed_through),
            (60, 60),
            "{label}: {report:?}"
        );

        // A resident's rows are found by the keyed reference; no row holds a whole NIK.
        let found = audit::search_nik(&db, &verifier, &nik(4), 10)
            .await
            .expect("search");
        assert_eq!(found.len(), 1, "{label}");
        assert_eq!(found[0].subject_masked, adminduk_kit::mask_nik(&nik(4)));
        let all = audit::search_nik(&db, &verifier, &nik(5), 100)
            .await
            .expect("search");
        for row in found.iter().chain(&all) {
            assert!(!format!("{row:?}").contains(&nik(4)[4..12]), "{label}: {row:?}");
        }
        // Another key finds nothing.
        let other = AuditKeys::for_search(&"77".repeat(32)).expect("key");
        assert!(
            audit::search_nik(&db, &other, &nik(4), 10)
                .await
                .expect("search")
                .is_empty()
        );

        // A chain cut short is caught; put back, it is whole again.
        let pool = db.pool();
        let last = audit::rows(&db, "gateway", 59, 1).await.expect("rows").remove(0);
        sqlx::query("DELETE FROM audit_rows WHERE chain = 'gateway' AND seq = 60")
            .execute(pool)
            .await
            .expect("cut");
        let report = audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        assert_eq!(report.broken.map(|b| b.0), Some(60), "{label}");
        sqlx::query(
            "INSERT INTO audit_rows (chain, seq, at_ms, principal, subject_kind, subject_masked, subject_hash,
                 key_id, method, purpose, outcome, trace_id, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(&last.chain)
        .bind(last.seq)
        .bind(last.at_ms)
        .bind(&last.principal)
        .bind(&last.subject_kind)
        .bind(&last.subject_masked)
        .bind(&last.subject_hash)
        .bind(&last.key_id)
        .bind(&last.method)
        .bind(&last.purpose)
        .bind(&last.outcome)
        .bind(&last.trace_id)
        .bind(&last.prev_hash)
        .bind(&last.hash)
        .execute(pool)
        .await
        .expect("put back");
        assert_eq!(
            audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
                .await
                .expect("verify")
                .broken,
            None
        );

        // Signatures removed: rows are not unsigned for long, so a check made
        // later than two signing intervals names the first uncovered row.
        let signatures = sqlx::query("SELECT seq, hash, signed_at, key_id, signature FROM audit_signatures")
            .fetch_all(pool)
            .await
            .expect("signatures");
        sqlx::query("DELETE FROM audit_signatures")
            .execute(pool)
            .await
            .expect("removed");
        let later = Utc::now() + chrono::Duration::hours(3);
        let report = audit::verify(&db, &verifier, "gateway", HOUR, later)
            .await
            .expect("verify");
        assert_eq!(
            report.broken.as_ref().map(|b| b.0),
            Some(1),
            "{label}: {report:?}"
        );
        let now = audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        assert_eq!(
            now.broken, None,
            "{label}: rows younger than two intervals may wait"
        );
        for row in &signatures {
            use sqlx::Row as _;
            sqlx::query(
                "INSERT INTO audit_signatures (chain, seq, hash, signed_at, key_id, signature)
                 VALUES ('gateway', $1, $2, $3, $4, $5)",
            )
            .bind(row.try_get::<i64, _>("seq").expect("seq"))
            .bind(row.try_get::<String, _>("hash").expect("hash"))
            .bind(row.try_get::<i64, _>("signed_at").expect("at"))
            .bind(row.try_get::<String, _>("key_id").expect("key"))
            .bind(row.try_get::<String, _>("signature").expect("signature"))
            .execute(pool)
            .await
            .expect("put back");
        }
        let later = audit::verify(&db, &verifier, "gateway", HOUR, later)
            .await
            .expect("verify");
        assert_eq!(later.broken, None, "{label}: signed in time, whenever checked");

        // A changed field breaks that row.
        sqlx::query("UPDATE audit_rows SET outcome = outcome || '!' WHERE chain = 'gateway' AND seq = 8")
            .execute(pool)
            .await
            .expect("tamper");
        let report = audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        assert_eq!(
            report.broken.as_ref().map(|b| b.0),
            Some(8),
            "{label}: {report:?}"
        );

        // Recomputing every hash from there on is caught by the signature.
        let rows = audit::rows(&db, "gateway", 0, 1_000).await.expect("rows");
        let mut prev = rows[6].hash.clone();
        for mut row in rows.into_iter().skip(7) {
            row.prev_hash = prev;
            row.hash = row.compute_hash();
            sqlx::query("UPDATE audit_rows SET prev_hash = $1, hash = $2 WHERE chain = $3 AND seq = $4")
                .bind(&row.prev_hash)
                .bind(&row.hash)
                .bind(&row.chain)
                .bind(row.seq)
                .execute(pool)
                .await
                .expect("recompute");
            prev = row.hash;
        }
        let report = audit::verify(&db, &verifier, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        // At the first head signed after the change (each replica signed its last head).
        let (at, why) = report.broken.clone().expect("caught");
        assert!((9..=60).contains(&at), "{label}: {at}: {why}");
        assert!(why.contains("signed"), "{label}: {why}");

        let stranger = AuditKeys::from_hex(&"5a".repeat(32), &"99".repeat(32)).expect("keys");
        let report = audit::verify(&db, &stranger, "gateway", HOUR, Utc::now())
            .await
            .expect("verify");
        assert!(
            report.broken.is_some_and(|b| b.1.contains("not the audit key")),
            "{label}"
        );
    }
}
