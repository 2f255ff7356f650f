//! Times the console's rollup queries on a seeded database (issue 13; figures in
//! `bench/results-20261202-issue13-rollups.txt`):
//!
//! ```sh
//! cargo run --release --example seed_access_log -- 'sqlite:///tmp/kh10m.db?mode=rwc' 10000000
//! cargo run --release --example rollup_timings -- 'sqlite:///tmp/kh10m.db?mode=rwc'
//! ```
//!
//! Connecting applies pending migrations (timed: 000018 fills the daily totals from the hourly
//! ones); a database whose running totals are empty (seeded before they existed) is rebuilt
//! first, and the rebuild timed. Each query then runs once cold and five times warm; the
//! figures are wall-clock times through sea-orm, as a page sees them. Besides the charts'
//! queries it times what `alerts::evaluate` asks (the overview runs it on every view), and,
//! on SQLite, the SQL the day-bucket charts, the top customers and the alert baseline ran
//! before the daily totals, the covering index and the hourly baseline, for comparison.

use chrono::{DateTime, Duration, Utc};
use entity::access_log;
use keyhole::access_log::Outcome;
use keyhole::console::charts::{self, Labels, NamedCounts};
use keyhole::store::{Bucket, Store, TimeSeries};
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, QueryOrder, QuerySelect, Statement};
use std::future::Future;
use std::time::Instant;

async fn timed<T, F: Future<Output = anyhow::Result<T>>>(
    name: &str,
    mut run: impl FnMut() -> F,
) -> anyhow::Result<T> {
    let began = Instant::now();
    let mut out = run().await?;
    let cold = began.elapsed();
    let mut warm = Vec::new();
    for _ in 0..5 {
        let began = Instant::now();
        out = run().await?;
        warm.push(began.elapsed());
    }
    warm.sort();
    println!(
        "{name:<52} cold {:>8.1} ms   warm median {:>8.1} ms   warm max {:>8.1} ms",
        cold.as_secs_f64() * 1e3,
        warm[2].as_secs_f64() * 1e3,
        warm[4].as_secs_f64() * 1e3,
    );
    Ok(out)
}

fn named(series: &TimeSeries) -> Vec<NamedCounts> {
    series
        .series
        .iter()
        .map(|s| NamedCounts {
            name: s.name.to_string(),
            counts: s.counts.clone(),
        })
        .collect()
}

async fn rows(store: &Store, table: &str) -> anyhow::Result<i64> {
    let row = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            store.connection().get_database_backend(),
            format!("SELECT COUNT(*) AS n FROM {table}"),
        ))
        .await?
        .ok_or_else(|| anyhow::anyhow!("no count"))?;
    Ok(row.try_get::<i64>("", "n")?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "sqlite:///tmp/kh10m.db?mode=rwc".into());
    let began = Instant::now();
    let store = Store::connect(&url).await?;
    println!(
        "connect (applies pending migrations): {:.1} s",
        began.elapsed().as_secs_f64()
    );
    if rows(&store, "access_log_hourly").await? == 0 {
        let began = Instant::now();
        store.rebuild_rollups().await?;
        println!(
            "rebuild_rollups over {} records: {:.1} s",
            rows(&store, "access_log").await?,
            began.elapsed().as_secs_f64()
        );
        store.checkpoint().await?;
    }
    for table in [
        "access_log",
        "access_log_hourly",
        "access_log_daily",
        "access_log_field_reads",
        "access_log_customer_partners",
    ] {
        println!("{table}: {} rows", rows(&store, table).await?);
    }
    let now = Utc::now();
    let (day, month) = (now - Duration::hours(24), now - Duration::days(30));
    let s = &store;
    let hourly = timed(
        "overview: reads per partner per hour, 24 h, top 7",
        || async move { Ok(s.reads_per_partner(Bucket::Hour, day, now, 7).await?) },
    )
    .await?;
    let daily = timed(
        "overview: reads per partner per day, 30 days, top 7",
        || async move { Ok(s.reads_per_partner(Bucket::Day, month, now, 7).await?) },
    )
    .await?;
    timed(
        "overview: refusals per outcome per hour, 24 h",
        || async move { Ok(s.refusals_per_outcome(Bucket::Hour, day, now).await?) },
    )
    .await?;
    timed(
        "overview: refusals per outcome per day, 30 days",
        || async move { Ok(s.refusals_per_outcome(Bucket::Day, month, now).await?) },
    )
    .await?;
    let top = timed(
        "overview: top 20 customers by partners, 30 days",
        || async move { Ok(s.top_customers_by_partners(month, 20).await?) },
    )
    .await?;
    timed("partner: reads per field per day, 30 days", || async move {
        Ok(s.reads_per_field("partner-007", month, now, 7).await?)
    })
    .await?;
    timed("partner: totals per outcome, 30 days", || async move {
        Ok(s.outcome_totals("partner-007", month, now).await?)
    })
    .await?;
    // What alerts::evaluate asks with the default settings: a 60-minute window on the log,
    // and a 28-day baseline of reads per partner and hour of the day. The window ends at the
    // newest record (a seeded log stops at its seeding time), so it is full, as in service.
    let newest: Option<DateTime<Utc>> = access_log::Entity::find()
        .select_only()
        .column(access_log::Column::At)
        .order_by_desc(access_log::Column::At)
        .into_tuple()
        .one(s.connection())
        .await?;
    let alerts_now = newest.ok_or_else(|| anyhow::anyhow!("no record"))?;
    let since = alerts_now - Duration::minutes(60);
    let window = timed("alerts: the window's id range, 60 min", || async move {
        Ok(s.log_window(since, None).await?)
    })
    .await?
    .ok_or_else(|| anyhow::anyhow!("no record in the last hour"))?;
    let w = &window;
    timed(
        "alerts: distinct customers per partner, 60 min",
        || async move { Ok(s.customers_read_by_partner(w).await?) },
    )
    .await?;
    timed("alerts: refused calls per partner, 60 min", || async move {
        Ok(s.calls_by_partner(
            w,
            &[Outcome::NotFound, Outcome::Denied, Outcome::InvalidToken],
        )
        .await?)
    })
    .await?;
    timed("alerts: denied calls per partner, 60 min", || async move {
        Ok(s.calls_by_partner(w, &[Outcome::Denied]).await?)
    })
    .await?;
    timed(
        "alerts: reads per partner and hour, 60 min",
        || async move { Ok(s.reads_by_partner_and_hour(w).await?) },
    )
    .await?;
    let baseline_until = Bucket::Hour.start(since);
    let baseline_from = baseline_until - Duration::days(28);
    timed(
        "alerts: baseline per partner and hour, 28 d (hourly)",
        || async move {
            Ok(
                s.reads_by_partner_and_hour_of_day(baseline_from, baseline_until)
                    .await?,
            )
        },
    )
    .await?;
    if s.connection().get_database_backend() == DbBackend::Sqlite {
        before(s, now, alerts_now).await?;
    }
    let labels = |id| Labels {
        id,
        title: "Reads per partner",
        x: "hour (UTC)",
        y: "reads per hour",
    };
    let (hourly, daily) = (&hourly, &daily);
    timed("chart: stacked bars, 24 hourly buckets", || async move {
        Ok(charts::stacked_bars(
            &labels("h"),
            &hourly.starts,
            &named(hourly),
        )?)
    })
    .await?;
    timed("chart: stacked bars, 31 daily buckets", || async move {
        Ok(charts::stacked_bars(
            &labels("d"),
            &daily.starts,
            &named(daily),
        )?)
    })
    .await?;
    let bars: Vec<(String, u64)> = top.iter().map(|r| (r.name.clone(), r.count)).collect();
    let bars = &bars;
    timed("chart: horizontal bars, 20 customers", || async move {
        Ok(charts::horizontal_bars(&labels("t"), bars)?)
    })
    .await?;
    Ok(())
}

/// The same answers the way they were computed before (SQLite only): days grouped from the
/// hourly totals, the pairs walked through the primary key, the baseline from the log.
async fn before(s: &Store, now: DateTime<Utc>, alerts_now: DateTime<Utc>) -> anyhow::Result<()> {
    let day = |t: DateTime<Utc>| Bucket::Day.start(t).to_rfc3339();
    let (from, to) = (day(now - Duration::days(30)), day(now + Duration::days(1)));
    let sql = |q: String| async move {
        s.connection()
            .query_all_raw(Statement::from_string(DbBackend::Sqlite, q))
            .await
            .map(|rows| rows.len())
            .map_err(anyhow::Error::from)
    };
    let reads = format!(
        "SELECT substr(\"hour\", 1, 10) AS b, client_id, CAST(SUM(n) AS BIGINT) FROM \
         access_log_hourly WHERE hour >= '{from}' AND hour < '{to}' AND outcome IN \
         ('ok', 'not_modified') GROUP BY b, client_id"
    );
    let refusals = format!(
        "SELECT substr(\"hour\", 1, 10) AS b, outcome, CAST(SUM(n) AS BIGINT) FROM \
         access_log_hourly WHERE hour >= '{from}' AND hour < '{to}' AND outcome NOT IN \
         ('ok', 'not_modified') GROUP BY b, outcome"
    );
    let since = (now - Duration::days(30)).to_rfc3339();
    let pairs = format!(
        "SELECT customer_id, COUNT(*) AS p FROM access_log_customer_partners INDEXED BY \
         sqlite_autoindex_access_log_customer_partners_1 WHERE last_read_at >= '{since}' \
         GROUP BY customer_id ORDER BY p DESC, customer_id ASC LIMIT 20"
    );
    let (reads, refusals, pairs) = (&reads, &refusals, &pairs);
    timed(
        "before: reads per partner per day, 30 d, from hourly",
        || sql(reads.clone()),
    )
    .await?;
    timed("before: refusals per outcome per day, 30 d, hourly", || {
        sql(refusals.clone())
    })
    .await?;
    timed(
        "before: top 20 customers, primary key + row lookups",
        || sql(pairs.clone()),
    )
    .await?;
    let since = alerts_now - Duration::minutes(60);
    let baseline_from = since - Duration::days(28);
    timed(
        "before: baseline per partner and hour, 28 d (log)",
        || async move {
            Ok(match s.log_window(baseline_from, Some(since)).await? {
                Some(w) => s.reads_by_partner_and_hour(&w).await?.len(),
                None => 0,
            })
        },
    )
    .await?;
    Ok(())
}
