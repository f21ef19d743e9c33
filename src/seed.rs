//! `adminduk seed`: synthetic residents into any database, with a progress bar.

use adminduk_kit::config::DatabaseConfig;
use adminduk_kit::storage::Db;
use adminduk_population::domain::resident::NewResident;
use adminduk_population::domain::synth::Generator;
use adminduk_population::store::Store;
use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};

use crate::SeedArgs;

/// Residents written per transaction: large enough to amortise the commit, small
/// enough that a failure loses little and the progress bar moves.
const BATCH: usize = 1_000;

pub(crate) fn run(args: SeedArgs) -> anyhow::Result<()> {
    let config = DatabaseConfig {
        url: args.database_url.clone().into(),
        ..DatabaseConfig::default()
    };
    adminduk_kit::config::Validate::validate(&config).map_err(|e| anyhow::anyhow!(e))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let db = Db::connect(
            &config,
            adminduk_population::SCHEMA,
            adminduk_population::MIGRATIONS,
        )
        .await
        .context("opening the population database")?;
        let store = Store::new(db);
        let (written, _) = load(&store, &args.regency, args.residents, args.seed, true).await?;
        println!("{written} residents written");
        store.db().close().await;
        anyhow::Ok(())
    })
}

/// Generates and stores residents; returns how many new rows were written and the residents.
pub(crate) async fn load(
    store: &Store,
    regency: &str,
    count: usize,
    seed: u64,
    show_progress: bool,
) -> anyhow::Result<(u64, Vec<NewResident>)> {
    let today = adminduk_kit::time::today_wib();
    let mut generator = Generator::new(regency, seed, today)
        .with_context(|| format!("regency {regency} is unknown or has no kelurahan"))?;
    let residents = generator.residents(count);
    let bar = if show_progress {
        ProgressBar::new(residents.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} seeding residents {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut written = 0;
    let now = chrono::Utc::now();
    for chunk in residents.chunks(BATCH) {
        written += store
            .insert_batch(chunk, now)
            .await
            .context("writing residents")?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    Ok((written, residents))
}
