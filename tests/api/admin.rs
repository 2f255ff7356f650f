//! The security team's API: admin authentication, the access-log search and its CSV export,
//! chain verification against tampering done directly in the database, offline export
//! verification, suspension, grants, alerts and retention.

use crate::helpers::*;
use chrono::{DateTime, Duration, SubsecRound, Timelike, Utc};
use keyhole::access_log::{AccessRecord, ChainedRecord, Outcome, chain_hash, export, prune};
use keyhole::clock::Clock;
use keyhole::secrets::token_hash;
use oauth2::TokenResponse;
use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;

impl TestApp {
    async fn append(&self, record: AccessRecord) -> i64 {
        self.app.access_log.append(record).await.unwrap()
    }

    /// One ordinary read: Fone Shop, Alice's claim status.
    async fn append_read(&self) -> i64 {
        self.append(record(
            "fone-shop",
            "CU-1001",
            Outcome::Ok,
            &["claims:status"],
        ))
        .await
    }

    /// Waits until the app's chain has a checkpoint at or after record `at_least`; its `seq`.
    async fn wait_for_checkpoint(&self, at_least: i64) -> i64 {
        for _ in 0..100 {
            if let Some(c) = self
                .app
                .store
                .latest_checkpoint(&self.chain())
                .await
                .unwrap()
                && c.seq >= at_least
            {
                return c.seq;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no checkpoint at or after record {at_least}");
    }

    /// Runs SQL on a connection of the test's own, as an intruder with database access would
    /// (once the journal is imported: the intruder tampers with what the database holds).
    async fn tamper(&self, sql: &str) {
        self.app.access_log.settled().await;
        self.raw_db().await.execute_unprepared(sql).await.unwrap();
    }

    /// The SQL condition that picks record `seq` of the app's own chain.
    fn at(&self, seq: i64) -> String {
        format!("chain = '{}' AND seq = {seq}", self.chain())
    }

    /// A connection of the test's own, to tamper with the database as an intruder would.
    async fn raw_db(&self) -> sea_orm::DatabaseConnection {
        Database::connect(&self.app.settings.database_url)
            .await
            .unwrap()
    }
}

/// The app's own chain as the database holds it, in chain order.
async fn chain_records(app: &TestApp) -> Vec<ChainedRecord> {
    app.app.access_log.settled().await;
    let records = app
        .app
        .store
        .access_log_between(&app.chain(), 0, i64::MAX, 10_000)
        .await
        .unwrap();
    assert!(records.iter().zip(1..).all(|(r, seq)| r.seq == seq));
    records
}

fn record(client: &str, customer: &str, outcome: Outcome, fields: &[&str]) -> AccessRecord {
    AccessRecord {
        at: Utc::now(),
        request_id: uuid::Uuid::new_v4().to_string(),
        client_id: Some(client.into()),
        grant_id: None,
        customer_id: Some(customer.into()),
        resource: "claims".into(),
        resource_id: Some("C-1001".into()),
        record_ids: if fields.is_empty() {
            vec![]
        } else {
            vec!["C-1001".into()]
        },
        fields: fields.iter().map(|f| f.to_string()).collect(),
        outcome,
        status: match outcome {
            Outcome::Ok => 200,
            Outcome::NotModified => 304,
            Outcome::NotFound => 404,
            Outcome::Denied => 403,
            Outcome::InvalidToken => 401,
            Outcome::RateLimited => 429,
            Outcome::UpstreamError => 502,
            Outcome::Unavailable => 503,
        },
        client_ip: Some("127.0.0.1".into()),
    }
}

type Predicate = Box<dyn Fn(&AccessRecord) -> bool>;

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect()
}

/// Every page of a query, following `next_cursor`.
async fn all_pages(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/admin/v1/access-log?limit=7&{query}");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.admin_json(token, &path).await;
        items.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
}

#[tokio::test]
async fn admin_calls_need_an_admin_token_and_are_all_recorded() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let token = app.admin_token("alice-sec").await;
    let path = "/admin/v1/partners";

    let none = http().get(app.url(path)).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(
        none.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    assert_eq!(
        app.admin_get("kh_adm_not-a-real-token", path)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.admin_get("garbage", path).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A partner's access token is not an admin token.
    let partner_token = app.tokens(&["claims:status"]).await;
    let response = app
        .admin_get(partner_token.access_token().secret(), path)
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Nor is a customer's portal session.
    let browser = browser();
    let (auth_url, _, _) = app.authorize_url(&["claims:status"]);
    app.sign_in(&browser, &auth_url, ALICE).await;
    let response = browser.get(app.url(path)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // The right token works until it is revoked.
    assert_eq!(app.admin_get(&token, path).await.status(), StatusCode::OK);
    let listed = app.app.store.admin_tokens().await.unwrap();
    assert!(
        app.app
            .store
            .revoke_admin_token(&listed[0].id, Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(
        app.admin_get(&token, path).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Every call above is in the audit trail: who, what, the answer.
    let auditor = app.admin_token("bob-sec").await;
    let audit = app.admin_json(&auditor, "/admin/v1/audit?limit=100").await;
    let entries = audit["items"].as_array().unwrap();
    let statuses: Vec<(Option<&str>, u64)> = entries
        .iter()
        .filter(|e| e["path"] == path)
        .map(|e| (e["token_name"].as_str(), e["status"].as_u64().unwrap()))
        .collect();
    assert_eq!(statuses.len(), 7, "{audit}");
    assert_eq!(
        statuses
            .iter()
            .filter(|(who, s)| *s == 401 && who.is_none())
            .count(),
        6
    );
    assert!(statuses.contains(&(Some("alice-sec"), 200)));
}

#[tokio::test]
async fn every_access_log_filter_narrows_the_result_and_they_combine() {
    let app = spawn_app().await;
    let token = app.admin_token("sec").await;
    let grant = keyhole::domain::GrantId::random();
    let t0 = (Utc::now() - Duration::hours(3)).trunc_subsecs(6);
    let mut plan = Vec::new();
    for i in 0..24 {
        let client = ["fone-shop", "fix-it"][i % 2];
        let customer = ["CU-1001", "CU-2002", "CU-3003"][i % 3];
        let outcome = [
            Outcome::Ok,
            Outcome::Denied,
            Outcome::NotModified,
            Outcome::NotFound,
        ][i % 4];
        let fields: &[&str] = match outcome {
            Outcome::Ok if i % 8 == 0 => &["claims:status", "claims:status_updated_at"],
            Outcome::Ok | Outcome::NotModified => &["claims:status_updated_at"],
            _ => &[],
        };
        let mut r = record(client, customer, outcome, fields);
        r.at = t0 + Duration::minutes(10 * i as i64);
        if i % 5 == 0 {
            r.grant_id = Some(grant.to_string());
        }
        if i % 6 == 0 {
            r.resource = "vehicle_orders".into();
        }
        plan.push(r.clone().normalised());
        app.append(r).await;
    }
    let expect = |pred: &dyn Fn(&AccessRecord) -> bool| -> Vec<i64> {
        let mut ids: Vec<i64> = plan
            .iter()
            .enumerate()
            .filter(|(_, r)| pred(r))
            .map(|(i, _)| i as i64 + 1)
            .collect();
        ids.reverse();
        ids
    };
    let from = (t0 + Duration::minutes(60)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let to = (t0 + Duration::minutes(150)).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let in_range = move |r: &AccessRecord| {
        r.at >= t0 + Duration::minutes(60) && r.at < t0 + Duration::minutes(150)
    };
    let cases: Vec<(String, Predicate)> = vec![
        (
            "client_id=fix-it".into(),
            Box::new(|r| r.client_id.as_deref() == Some("fix-it")),
        ),
        (
            "customer_id=CU-2002".into(),
            Box::new(|r| r.customer_id.as_deref() == Some("CU-2002")),
        ),
        (
            format!("grant_id={grant}"),
            Box::new(move |r| r.grant_id == Some(grant.to_string())),
        ),
        (
            "resource=vehicle_orders".into(),
            Box::new(|r| r.resource == "vehicle_orders"),
        ),
        (
            "field=claims:status".into(),
            Box::new(|r| r.fields.iter().any(|f| f == "claims:status")),
        ),
        (
            "field=claims:status_updated_at".into(),
            Box::new(|r| r.fields.iter().any(|f| f == "claims:status_updated_at")),
        ),
        (
            "outcome=denied".into(),
            Box::new(|r| r.outcome == Outcome::Denied),
        ),
        (
            format!("from={from}"),
            Box::new(move |r| r.at >= t0 + Duration::minutes(60)),
        ),
        (
            format!("to={to}"),
            Box::new(move |r| r.at < t0 + Duration::minutes(150)),
        ),
        (format!("from={from}&to={to}"), Box::new(in_range)),
        (
            format!("client_id=fone-shop&outcome=ok&field=claims:status_updated_at&from={from}"),
            Box::new(move |r| {
                r.client_id.as_deref() == Some("fone-shop")
                    && r.outcome == Outcome::Ok
                    && r.fields.iter().any(|f| f == "claims:status_updated_at")
                    && r.at >= t0 + Duration::minutes(60)
            }),
        ),
        (
            "customer_id=CU-1001&outcome=not_modified".into(),
            Box::new(|r| {
                r.customer_id.as_deref() == Some("CU-1001") && r.outcome == Outcome::NotModified
            }),
        ),
    ];
    for (query, pred) in cases {
        let expected = expect(&*pred);
        assert!(
            !expected.is_empty() && expected.len() < plan.len(),
            "{query} must narrow"
        );
        let got: Vec<i64> = all_pages(&app, &token, &query)
            .await
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect();
        assert_eq!(got, expected, "{query}");
    }
    // `field` is a scope, and `_` in it is not a wildcard.
    let none = app
        .admin_json(
            &token,
            "/admin/v1/access-log?field=claims:status_updated_a_",
        )
        .await;
    assert!(ids(&none).is_empty());

    for bad in [
        "outcome=great",
        "field=status",
        "from=yesterday",
        "limit=0",
        "limit=1001",
        "cursor=abc",
        "grant_id=nope",
        "colour=red",
    ] {
        let response = app
            .admin_get(&token, &format!("/admin/v1/access-log?{bad}"))
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
    }
}

#[tokio::test]
async fn pages_stay_stable_while_records_are_appended() {
    let app = spawn_app().await;
    let token = app.admin_token("sec").await;
    for _ in 0..25 {
        app.append_read().await;
    }
    let first = app
        .admin_json(&token, "/admin/v1/access-log?limit=10")
        .await;
    assert_eq!(ids(&first), (16..=25).rev().collect::<Vec<_>>());
    for _ in 0..5 {
        app.append_read().await;
    }
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = app
        .admin_json(
            &token,
            &format!("/admin/v1/access-log?limit=10&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&second), (6..=15).rev().collect::<Vec<_>>());
    let cursor = second["next_cursor"].as_str().unwrap();
    let third = app
        .admin_json(
            &token,
            &format!("/admin/v1/access-log?limit=10&cursor={cursor}"),
        )
        .await;
    assert_eq!(ids(&third), (1..=5).rev().collect::<Vec<_>>());
    assert!(third["next_cursor"].is_null());
    // The newest page now starts with the appended records.
    assert_eq!(
        ids(&app.admin_json(&token, "/admin/v1/access-log?limit=1").await),
        vec![30]
    );
}

#[tokio::test]
async fn the_csv_export_is_the_json_query_row_for_row() {
    let app = spawn_app().await;
    let token = app.admin_token("sec").await;
    for i in 0..2600 {
        let outcome = if i % 3 == 0 {
            Outcome::Denied
        } else {
            Outcome::Ok
        };
        let fields: &[&str] = if outcome == Outcome::Ok {
            &["claims:status"]
        } else {
            &[]
        };
        let mut r = record("fone-shop", "CU-1001", outcome, fields);
        r.client_ip = Some("10.0.0.1, \"quoted\"".into());
        app.app.access_log.append(r).await.unwrap();
    }
    let query = "outcome=ok&client_id=fone-shop";
    let json = all_pages(&app, &token, query).await;
    let response = http()
        .get(app.url(&format!("/admin/v1/access-log?{query}")))
        .bearer_auth(&token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let body = response.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    assert_eq!(&headers[0], "id");
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), json.len());
    assert!(rows.len() > 1000, "more than one page of the stream");
    for (row, item) in rows.iter().zip(&json) {
        for (i, name) in headers.iter().enumerate() {
            let expected = match &item[name] {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Array(a) => a
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect::<Vec<_>>()
                    .join(" "),
                other => panic!("{other}"),
            };
            let got = &row[i];
            if name == "at" {
                let a: DateTime<Utc> = got.parse().unwrap();
                let b: DateTime<Utc> = expected.parse().unwrap();
                assert_eq!(a, b);
            } else {
                assert_eq!(got, expected, "{name}");
            }
        }
    }
    // A limit caps the export.
    let limited = http()
        .get(app.url(&format!("/admin/v1/access-log?{query}&limit=5")))
        .bearer_auth(&token)
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(limited.lines().count(), 6);
}

async fn seeded_for_verify(checkpoint_every: u32) -> (TestApp, String) {
    let app = spawn_app_with(|s| {
        s.access_log.checkpoint_every = checkpoint_every;
        s.access_log.checkpoint_interval_seconds = 1;
    })
    .await;
    let token = app.admin_token("sec").await;
    for i in 0..10 {
        let customer = if i % 2 == 0 { "CU-1001" } else { "CU-2002" };
        app.append(record(
            "fone-shop",
            customer,
            Outcome::Ok,
            &["claims:status"],
        ))
        .await;
        // Half-way, a checkpoint inside the range, whatever the importer and the checkpoint
        // task batch together later: tests cut the chain at a checkpoint below the head.
        if i == 4 && checkpoint_every <= 5 {
            app.app.access_log.settled().await;
            app.wait_for_checkpoint(i64::from(checkpoint_every)).await;
        }
    }
    let report = app.admin_json(&token, "/admin/v1/access-log/verify").await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["records"], 10);
    // One chain: the app's own, every record in it.
    let chains = report["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1, "{report}");
    assert_eq!(chains[0]["chain"], app.chain().as_str(), "{report}");
    assert_eq!(chains[0]["ok"], true, "{report}");
    assert_eq!(chains[0]["records"], 10, "{report}");
    (app, token)
}

/// The first broken link the verify endpoint reports, which must be in the app's own chain
/// (and that chain's report must say so too): its `seq` and reason.
async fn broken(app: &TestApp, token: &str) -> (i64, String) {
    let report = app.admin_json(token, "/admin/v1/access-log/verify").await;
    assert_eq!(report["ok"], false, "{report}");
    let link = &report["first_broken"];
    assert_eq!(link["chain"], app.chain().as_str(), "{report}");
    let own = report["chains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["chain"] == app.chain().as_str())
        .unwrap_or_else(|| panic!("no report of the app's chain: {report}"));
    assert_eq!(own["ok"], false, "{report}");
    assert_eq!(&own["first_broken"], link, "{report}");
    (
        link["seq"].as_i64().unwrap(),
        link["reason"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn verify_finds_a_record_edited_in_the_database() {
    let (app, token) = seeded_for_verify(1000).await;
    app.tamper(&format!(
        r#"UPDATE access_log SET fields = '["claims:iban"]' WHERE {}"#,
        app.at(4)
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("contents"), "{reason}");
}

#[tokio::test]
async fn verify_finds_a_deleted_record() {
    let (app, token) = seeded_for_verify(1000).await;
    app.tamper(&format!("DELETE FROM access_log WHERE {}", app.at(4)))
        .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 5);
    assert!(reason.contains("missing"), "{reason}");
}

#[tokio::test]
async fn verify_finds_reordered_records() {
    let (app, token) = seeded_for_verify(1000).await;
    // Records 4 and 5 swap places in the chain.
    for (from, to) in [(4, -4), (5, 4), (-4, 5)] {
        app.tamper(&format!(
            "UPDATE access_log SET seq = {to} WHERE {}",
            app.at(from)
        ))
        .await;
    }
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("prev_hash"), "{reason}");
}

#[tokio::test]
async fn verify_finds_an_edit_whose_chain_was_recomputed_by_the_signed_checkpoint() {
    let (app, token) = seeded_for_verify(3).await;
    app.wait_for_checkpoint(10).await;
    // The intruder edits record 2 and recomputes every later hash: the chain is whole again.
    let mut records = chain_records(&app).await;
    records[1].record.fields = vec!["claims:iban".into()];
    let db = app.raw_db().await;
    let mut prev = records[0].hash.clone();
    for r in records.iter_mut().skip(1) {
        r.prev_hash = prev.clone();
        r.hash = chain_hash(&prev, &r.chain, r.seq, &r.record);
        prev = r.hash.clone();
        db.execute_unprepared(&format!(
            "UPDATE access_log SET fields = '{}', prev_hash = '{}', hash = '{}' WHERE {}",
            serde_json::to_string(&r.record.fields).unwrap(),
            r.prev_hash,
            r.hash,
            app.at(r.seq)
        ))
        .await
        .unwrap();
    }
    let (seq, reason) = broken(&app, &token).await;
    assert!(seq >= 2, "{seq}");
    assert!(reason.contains("checkpoint"), "{reason}");
}

#[tokio::test]
async fn verify_finds_the_newest_records_deleted_after_a_checkpoint() {
    let (app, token) = seeded_for_verify(1).await;
    app.wait_for_checkpoint(10).await;
    app.tamper(&format!(
        "DELETE FROM access_log WHERE chain = '{}' AND seq > 7",
        app.chain()
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 8);
    assert!(reason.contains("signed"), "{reason}");
}

/// A database writer without the checkpoint key deletes a whole chain: its records and its
/// checkpoints. Nothing in the database is left to show it, but the instance whose chain it is
/// knows how far its chain reached in the database.
#[tokio::test]
async fn verify_finds_the_instances_own_chain_deleted_with_its_checkpoints() {
    let (app, token) = seeded_for_verify(1).await;
    app.wait_for_checkpoint(10).await;
    app.tamper(&format!(
        "DELETE FROM access_log WHERE chain = '{0}'; DELETE FROM chain_checkpoints WHERE chain = '{0}'",
        app.chain()
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 1);
    assert!(reason.contains("missing"), "{reason}");
}

async fn export_lines(app: &TestApp) -> Vec<String> {
    let mut out = Vec::new();
    let a = &app.app;
    export::export(
        &a.store,
        &a.checkpoint_key,
        &a.issuer(),
        None,
        None,
        Utc::now(),
        &mut out,
    )
    .await
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn verify_lines(lines: &[String]) -> export::FileReport {
    export::verify_file(std::io::Cursor::new(lines.join("\n")), None).unwrap()
}

#[tokio::test]
async fn an_export_verifies_offline_and_any_tampering_with_it_is_found() {
    let (app, _) = seeded_for_verify(3).await;
    app.wait_for_checkpoint(10).await;
    let lines = export_lines(&app).await;
    let header: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(header["header"]["version"], 3, "{header}");
    assert_eq!(
        header["header"]["chains"],
        serde_json::json!([{"chain": app.chain(), "first_seq": 1, "last_seq": 10}])
    );
    let report = verify_lines(&lines);
    assert!(report.chain.ok, "{report:?}");
    assert_eq!(report.chain.records, 10);
    assert_eq!(report.chain.unsigned_tail, 0);
    assert_eq!(report.chain.chains.len(), 1, "{report:?}");
    assert_eq!(report.chain.chains[0].chain, app.chain());
    assert_eq!(report.chain.chains[0].signed_through, Some(10));

    let record_line = |n: i64| {
        lines
            .iter()
            .position(|l| l.starts_with("{\"record\"") && l.contains(&format!("\"seq\":{n},")))
            .unwrap()
    };
    // A break is reported in the app's chain, at its place there.
    let broken_at = |lines: &[String]| {
        let link = verify_lines(lines).chain.first_broken.unwrap();
        assert_eq!(link.chain, app.chain(), "{link:?}");
        link.seq
    };
    // An edited record.
    let mut edited = lines.clone();
    let i = record_line(3);
    edited[i] = edited[i].replace("CU-1001", "CU-9999");
    assert_eq!(broken_at(&edited), 3);
    // A removed record.
    let mut removed = lines.clone();
    removed.remove(record_line(6));
    assert_eq!(broken_at(&removed), 7);
    // Records 4 and 5 swapped, each given the other's place.
    let mut swapped = lines.clone();
    let (four, five) = (record_line(4), record_line(5));
    swapped.swap(four, five);
    for (i, seq) in [(four, 4), (five, 5)] {
        let mut value: Value = serde_json::from_str(&swapped[i]).unwrap();
        value["record"]["seq"] = seq.into();
        swapped[i] = value.to_string();
    }
    assert_eq!(broken_at(&swapped), 4);
    // The last records cut off (and the header's range "fixed" to match is still caught by
    // the checkpoint that covers them).
    let mut cut = lines.clone();
    cut.truncate(record_line(8));
    assert!(!verify_lines(&cut).chain.ok);
    // A forged signature.
    let mut forged = lines.clone();
    let c = forged
        .iter()
        .position(|l| l.starts_with("{\"checkpoint\""))
        .unwrap();
    let mut checkpoint: Value = serde_json::from_str(&forged[c]).unwrap();
    let sig = checkpoint["checkpoint"]["signature"]
        .as_str()
        .unwrap()
        .to_owned();
    let (head, _) = sig.rsplit_once('.').unwrap();
    checkpoint["checkpoint"]["signature"] = Value::String(format!("{head}.{}", "A".repeat(86)));
    forged[c] = checkpoint.to_string();
    assert!(!verify_lines(&forged).chain.ok);
    // Not an export at all.
    assert!(export::verify_file(std::io::Cursor::new("{}\n"), None).is_err());
}

#[tokio::test]
async fn suspension_stops_the_partners_next_call_and_reinstatement_restores_it() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let token = app.admin_token("sec").await;
    let tokens = app.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret().clone();
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );

    let client = &app.partner.client_id;
    let response = app
        .admin_post(&token, &format!("/admin/v1/partners/{client}/suspend"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "suspended"
    );
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );
    // Nor can it get new tokens.
    let refresh = tokens.refresh_token().unwrap().secret().clone();
    let refused = app
        .post_form(
            "/oauth/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);

    let partners = app.admin_json(&token, "/admin/v1/partners").await;
    assert_eq!(partners["items"][0]["status"], "suspended");

    let response = app
        .admin_post(&token, &format!("/admin/v1/partners/{client}/reinstate"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );

    for path in [
        "/admin/v1/partners/nobody/suspend",
        "/admin/v1/partners/..%2F/suspend",
    ] {
        assert_eq!(
            app.admin_post(&token, path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
}

#[tokio::test]
async fn grants_are_listed_by_partner_customer_and_status_and_revoked_at_once() {
    let app = spawn_app_with_sample_upstream(|_| {}).await;
    let token = app.admin_token("sec").await;
    let other = app.add_partner("Fix It", &["claims:status"]).await;
    let alice = app.tokens(&["claims:status"]).await;
    let _fix = app.tokens_for(&other, &["claims:status"]).await;
    app.authorize_for(&other, BOB, &["claims:status"], &["claims:status"])
        .await;

    let all = app.admin_json(&token, "/admin/v1/grants").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    let by_partner = app
        .admin_json(
            &token,
            &format!("/admin/v1/grants?client_id={}", other.client_id),
        )
        .await;
    assert_eq!(by_partner["items"].as_array().unwrap().len(), 2);
    let by_customer = app
        .admin_json(&token, "/admin/v1/grants?customer_id=CU-2002")
        .await;
    assert_eq!(by_customer["items"].as_array().unwrap().len(), 1);
    assert_eq!(by_customer["items"][0]["customer_id"], "CU-2002");
    let combined = app
        .admin_json(
            &token,
            &format!(
                "/admin/v1/grants?client_id={}&customer_id=CU-1001",
                other.client_id
            ),
        )
        .await;
    assert_eq!(combined["items"].as_array().unwrap().len(), 1);
    let page = app.admin_json(&token, "/admin/v1/grants?limit=2").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let rest = app
        .admin_json(
            &token,
            &format!(
                "/admin/v1/grants?limit=2&cursor={}",
                page["next_cursor"].as_str().unwrap()
            ),
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());

    let grant = app
        .admin_json(
            &token,
            &format!("/admin/v1/grants?client_id={}", app.partner.client_id),
        )
        .await["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let access = alice.access_token().secret();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    let revoked = app
        .admin_post(&token, &format!("/admin/v1/grants/{grant}/revoke"))
        .await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert_eq!(revoked["revoked_by"], "security_team");
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::UNAUTHORIZED
    );

    let by_status = app
        .admin_json(&token, "/admin/v1/grants?status=revoked")
        .await;
    assert_eq!(by_status["items"].as_array().unwrap().len(), 1);
    let active = app
        .admin_json(&token, "/admin/v1/grants?status=active")
        .await;
    assert_eq!(active["items"].as_array().unwrap().len(), 2);
    app.clock.advance(Duration::days(400));
    let expired = app
        .admin_json(&token, "/admin/v1/grants?status=expired")
        .await;
    assert_eq!(expired["items"].as_array().unwrap().len(), 2);

    assert_eq!(
        app.admin_post(&token, "/admin/v1/grants/not-a-grant/revoke")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let unknown = keyhole::domain::GrantId::random();
    assert_eq!(
        app.admin_post(&token, &format!("/admin/v1/grants/{unknown}/revoke"))
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.admin_get(&token, "/admin/v1/grants?status=paused")
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
}

fn fired(report: &Value, rule: &str) -> Vec<String> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == rule)
        .map(|a| a["client_id"].as_str().unwrap_or("-").to_owned())
        .collect()
}

#[tokio::test]
async fn each_alert_rule_fires_on_its_pattern_and_not_on_normal_use() {
    let app = spawn_app_with(|s| {
        s.alerts.window_minutes = 60;
        s.alerts.distinct_customers.threshold = 5;
        s.alerts.refused_calls.threshold = 10;
        s.alerts.beyond_grants.threshold = 6;
        s.alerts.unusual_hours.threshold = 3;
        s.alerts.baseline_min_reads = 50;
    })
    .await;
    let token = app.admin_token("sec").await;
    let now = app.clock.now();
    let at = |r: AccessRecord, when: DateTime<Utc>| AccessRecord { at: when, ..r };
    // The usual: both partners read a few customers in office hours for two weeks, at the
    // hour it is now.
    let usual_hour = now.hour();
    let odd_hour = (usual_hour + 12) % 24;
    for day in 1..=14 {
        let office = now - Duration::days(day) - Duration::minutes(i64::from(now.minute()));
        for client in ["normal", "harvester", "prober", "snooper", "night-owl"] {
            for n in 0..5 {
                let when = if client == "night-owl" {
                    office - Duration::hours(12)
                } else {
                    office
                } + Duration::minutes(n);
                app.append(at(
                    record(client, "CU-1001", Outcome::Ok, &["claims:status"]),
                    when,
                ))
                .await;
            }
        }
    }
    // In the usual hour (its start is inside the 60-minute window whatever the minute now).
    let recent = now - Duration::minutes(i64::from(now.minute()));
    for n in 0..4 {
        // Normal: a few customers, a couple of refusals, in its usual hour.
        app.append(at(
            record(
                "normal",
                &format!("CU-{n}"),
                Outcome::Ok,
                &["claims:status"],
            ),
            recent,
        ))
        .await;
        app.append(at(record("normal", "CU-1", Outcome::NotFound, &[]), recent))
            .await;
        // The night owl reads at the hour it always did, now in the middle of its night.
        app.append(at(
            record("night-owl", "CU-1001", Outcome::Ok, &["claims:status"]),
            recent,
        ))
        .await;
    }
    for n in 0..12 {
        app.append(at(
            record(
                "harvester",
                &format!("CU-{n}"),
                Outcome::Ok,
                &["claims:status"],
            ),
            recent,
        ))
        .await;
        app.append(at(
            record("prober", "CU-1001", Outcome::NotFound, &[]),
            recent,
        ))
        .await;
    }
    for _ in 0..7 {
        app.append(at(
            record("snooper", "CU-1001", Outcome::Denied, &[]),
            recent,
        ))
        .await;
    }
    let report = app.admin_json(&token, "/admin/v1/alerts").await;
    assert_eq!(
        fired(&report, "distinct_customers"),
        vec!["harvester"],
        "{report}"
    );
    assert_eq!(fired(&report, "refused_calls"), vec!["prober"], "{report}");
    assert_eq!(fired(&report, "beyond_grants"), vec!["snooper"], "{report}");
    assert_eq!(
        fired(&report, "unusual_hours"),
        vec!["night-owl"],
        "{report}"
    );
    let _ = odd_hour;

    // An hour later the window has moved on and nothing fires.
    app.clock.advance(Duration::minutes(61));
    let later = app.admin_json(&token, "/admin/v1/alerts").await;
    assert!(later["alerts"].as_array().unwrap().is_empty(), "{later}");
}

#[tokio::test]
async fn a_rule_with_containment_suspends_the_partner_by_itself() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.alerts.distinct_customers.threshold = 3;
        s.alerts.distinct_customers.suspend = true;
        s.alerts.evaluate_every_seconds = 1;
    })
    .await;
    let tokens = app.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret().clone();
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    for n in 0..3 {
        let client = app.partner.client_id.clone();
        let mut r = record(&client, &format!("CU-{n}"), Outcome::Ok, &["claims:status"]);
        r.at = app.clock.now();
        app.append(r).await;
    }
    for _ in 0..60 {
        if app
            .partner_status(&access, "/partner/v1/claims/C-1001")
            .await
            == StatusCode::UNAUTHORIZED
        {
            let metrics = app.metrics().await;
            assert!(
                metrics.contains("keyhole_partner_auto_suspensions_total 1"),
                "{metrics}"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the partner was not suspended");
}

#[tokio::test]
async fn pruning_keeps_the_rest_verifiable_and_respects_retention() {
    let app = spawn_app_with(|s| {
        s.access_log.checkpoint_every = 4;
        s.access_log.checkpoint_interval_seconds = 1;
    })
    .await;
    let token = app.admin_token("sec").await;
    // The old records are written (and their checkpoints signed) 3000 days ago.
    app.clock.advance(-Duration::days(3000));
    let old = app.clock.now();
    for i in 0..10 {
        let mut r = record("fone-shop", "CU-1001", Outcome::Ok, &["claims:status"]);
        r.at = old + Duration::minutes(i);
        app.append(r).await;
    }
    app.wait_for_checkpoint(10).await;
    app.clock.advance(Duration::days(3000));
    for _ in 0..5 {
        app.append_read().await;
    }
    let now = Utc::now();
    let cutoff = now - Duration::days(2600);
    // Within the retention period: refused, nothing removed.
    app.app.access_log.settled().await;
    let refused = prune::prune(&app.app.store, now - Duration::days(10), now, 2557).await;
    assert!(refused.is_err());
    let chain = app.chain();
    assert_eq!(
        app.app
            .store
            .access_log_first(&chain)
            .await
            .unwrap()
            .unwrap()
            .seq,
        1
    );

    let report = prune::prune(&app.app.store, cutoff, now, 2557)
        .await
        .unwrap();
    assert_eq!(report.removed, 10);
    assert_eq!(
        report.chains,
        vec![prune::PrunedChain {
            chain: chain.clone(),
            removed: 10,
            through_seq: 10,
        }]
    );
    assert_eq!(
        app.app
            .store
            .access_log_first(&chain)
            .await
            .unwrap()
            .unwrap()
            .seq,
        11
    );
    let verified = app.admin_json(&token, "/admin/v1/access-log/verify").await;
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["records"], 5);

    // Without the anchoring checkpoint, the pruned log no longer verifies.
    app.tamper(&format!(
        "DELETE FROM chain_checkpoints WHERE {}",
        app.at(10)
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 11);
    assert!(reason.contains("removed"), "{reason}");
}

#[tokio::test]
async fn metrics_count_rate_limit_refusals_and_admin_calls() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.rate_limits.grant_per_second = 0.01;
        s.rate_limits.grant_burst = 1;
    })
    .await;
    let token = app.admin_token("sec").await;
    let tokens = app.tokens(&["claims:status"]).await;
    let access = tokens.access_token().secret();
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
    assert_eq!(
        app.partner_status(access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    app.admin_json(&token, "/admin/v1/partners").await;
    let metrics = app.metrics().await;
    let client = &app.partner.client_id;
    assert!(
        metrics.contains(&format!(
            "keyhole_rate_limit_refusals_total{{client_id=\"{client}\"}} 1"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhole_admin_requests_total{status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhole_fields_returned_total{field=\"claims:status\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyhole_access_log_commit_seconds_bucket"),
        "{metrics}"
    );
}

#[tokio::test]
async fn deleting_the_oldest_records_inside_the_retention_period_is_found() {
    let (app, token) = seeded_for_verify(3).await;
    app.wait_for_checkpoint(10).await;
    // An intruder removes records 1 to 6 "as a prune would", up to a signed checkpoint; but
    // the checkpoint was signed today, so those records were still inside retention.
    let anchor = app
        .app
        .store
        .checkpoints_between(&app.chain(), 1, 9)
        .await
        .unwrap()
        .last()
        .unwrap()
        .seq;
    app.tamper(&format!(
        "DELETE FROM access_log WHERE chain = '{}' AND seq <= {anchor}",
        app.chain()
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, anchor + 1);
    assert!(reason.contains("retention"), "{reason}");
}

#[tokio::test]
async fn an_export_re_signed_with_a_forgers_key_passes_only_until_the_keys_are_pinned() {
    use base64::Engine;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (app, _) = seeded_for_verify(3).await;
    app.wait_for_checkpoint(10).await;
    let lines = export_lines(&app).await;
    let real_kid = app.app.checkpoint_key.kid().to_owned();
    assert!(
        export::verify_file(
            std::io::Cursor::new(lines.join("\n")),
            Some(std::slice::from_ref(&real_kid))
        )
        .unwrap()
        .chain
        .ok
    );

    // The forger edits record 2, recomputes the chain and re-signs every checkpoint and the end
    // with a key of their own, which they put in the file in place of the real one.
    let forger = keyhole::tokens::generate_key(Utc::now()).unwrap();
    let encoding = EncodingKey::from_ed_der(&forger.private_key);
    let mut forged = Vec::new();
    let mut prev = String::new();
    let mut hashes = std::collections::HashMap::new();
    for line in &lines {
        let mut value: Value = serde_json::from_str(line).unwrap();
        if value.get("key").is_some() {
            continue;
        }
        if let Some(record) = value.get_mut("record") {
            let mut r: keyhole::access_log::ChainedRecord =
                serde_json::from_value(record.clone()).unwrap();
            if r.seq == 2 {
                r.record.customer_id = Some("CU-9999".into());
            }
            if r.seq > 1 {
                r.prev_hash = prev.clone();
            }
            r.hash = chain_hash(&r.prev_hash, &r.chain, r.seq, &r.record);
            prev = r.hash.clone();
            hashes.insert(r.seq, r.hash.clone());
            *record = serde_json::to_value(&r).unwrap();
        }
        if let Some(c) = value.get_mut("checkpoint") {
            let seq = c["seq"].as_i64().unwrap();
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some(keyhole::access_log::checkpoint::CHECKPOINT_TYP.into());
            header.kid = Some(forger.kid.clone());
            let claims = serde_json::json!({
                "iss": "x", "chain": c["chain"], "seq": seq, "hash": hashes[&seq], "iat": 0
            });
            c["hash"] = Value::String(hashes[&seq].clone());
            c["kid"] = Value::String(forger.kid.clone());
            c["signature"] =
                Value::String(jsonwebtoken::encode(&header, &claims, &encoding).unwrap());
        }
        if let Some(end) = value.get_mut("end") {
            let mut header = Header::new(Algorithm::EdDSA);
            header.typ = Some(export::END_TYP.into());
            header.kid = Some(forger.kid.clone());
            let first: Value = serde_json::from_str(&lines[0]).unwrap();
            let claims = serde_json::json!({
                "iss": "x",
                "header": first["header"],
                "chains": [{"chain": app.chain(), "records": 10, "last_hash": hashes[&10]}],
            });
            end["kid"] = Value::String(forger.kid.clone());
            end["signature"] =
                Value::String(jsonwebtoken::encode(&header, &claims, &encoding).unwrap());
        }
        forged.push(value.to_string());
        if value.get("header").is_some() {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&forger.public_key);
            forged.push(serde_json::json!({"key": {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": forger.kid}}).to_string());
        }
    }
    let unpinned = verify_lines(&forged);
    assert!(
        unpinned.chain.ok && !unpinned.keys_pinned,
        "self-consistent, not authentic"
    );
    let pinned =
        export::verify_file(std::io::Cursor::new(forged.join("\n")), Some(&[real_kid])).unwrap();
    assert!(!pinned.chain.ok, "{pinned:?}");
    assert!(
        pinned
            .chain
            .first_broken
            .unwrap()
            .reason
            .contains("not trusted")
    );
}

#[tokio::test]
async fn a_partner_reinstated_by_the_security_team_is_not_suspended_again_for_the_same_calls() {
    let app = spawn_app_with_sample_upstream(|s| {
        s.alerts.distinct_customers.threshold = 3;
        s.alerts.distinct_customers.suspend = true;
        s.alerts.evaluate_every_seconds = 1;
    })
    .await;
    let token = app.admin_token("sec").await;
    let access = app
        .tokens(&["claims:status"])
        .await
        .access_token()
        .secret()
        .clone();
    let client = app.partner.client_id.clone();
    for n in 0..3 {
        let mut r = record(&client, &format!("CU-{n}"), Outcome::Ok, &["claims:status"]);
        r.at = app.clock.now();
        app.append(r).await;
    }
    let mut suspended = false;
    for _ in 0..60 {
        if app
            .partner_status(&access, "/partner/v1/claims/C-1001")
            .await
            == StatusCode::UNAUTHORIZED
        {
            suspended = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(suspended);
    app.clock.advance(Duration::seconds(1));
    let response = app
        .admin_post(&token, &format!("/admin/v1/partners/{client}/reinstate"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(
        app.partner_status(&access, "/partner/v1/claims/C-1001")
            .await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn refused_admin_calls_are_limited_per_address_and_write_no_audit_row_past_the_limit() {
    // The default burst (20), refilled too slowly to matter while the test runs.
    let app = spawn_app_with(|s| s.rate_limits.unauthenticated_per_second = 0.01).await;
    let query = format!("client_id={}", "q".repeat(4_000));
    let path = format!("/admin/v1/access-log/{}?{query}", "p".repeat(200));
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let response = app.admin_get("kh_adm_forged", &path).await;
        statuses.push(response.status().as_u16());
    }
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((refused, limited), (20, 10), "{statuses:?}");
    let token = app.admin_token("sec").await;
    let audit = app.admin_json(&token, "/admin/v1/audit?limit=100").await;
    let rows = audit["items"].as_array().unwrap();
    // 20 refused calls, and this one.
    assert_eq!(rows.len(), 21, "{audit}");
    for row in rows {
        let stored = row["path"].as_str().unwrap();
        assert!(stored.chars().count() <= 64, "{stored}");
        assert!(!stored.contains('?'), "the query is not stored: {stored}");
    }
    let refused_row = &rows[1];
    assert_eq!(refused_row["query_sha256"], json_hash(&query));
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("keyhole_unauthenticated_refusals_total{surface=\"admin\"} 10"),
        "{metrics}"
    );
}

fn json_hash(query: &str) -> Value {
    Value::String(token_hash(query))
}

#[tokio::test]
async fn a_row_that_does_not_decode_is_reported_as_broken_instead_of_a_500() {
    let (app, token) = seeded_for_verify(1000).await;
    app.tamper(&format!(
        "UPDATE access_log SET outcome = 'exfiltrated' WHERE {}",
        app.at(4)
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("outcome"), "{reason}");

    let (app, token) = seeded_for_verify(1000).await;
    app.tamper(&format!(
        "UPDATE access_log SET fields = 'not json' WHERE {}",
        app.at(6)
    ))
    .await;
    let (seq, _) = broken(&app, &token).await;
    assert_eq!(seq, 6);
}

#[tokio::test]
async fn a_row_whose_stored_text_was_re_encoded_is_found_although_its_values_hash_the_same() {
    // The fields as JSON with an escaped colon: the same value once parsed, but a `field`
    // search no longer finds the row.
    let (app, token) = seeded_for_verify(1000).await;
    app.tamper(&format!(
        r#"UPDATE access_log SET fields = '["claims\u003astatus"]' WHERE {}"#,
        app.at(4)
    ))
    .await;
    let found = all_pages(&app, &token, "field=claims:status").await;
    assert_eq!(found.len(), 9, "the row is hidden from searches");
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 4);
    assert!(reason.contains("fields"), "{reason}");

    // The time written in another offset: the same instant, but it sorts elsewhere as text.
    if app.sqlite_file().is_none() {
        return; // PostgreSQL stores the instant, not its text.
    }
    let (app, token) = seeded_for_verify(1000).await;
    let db = app.raw_db().await;
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!(
                "SELECT CAST(at AS TEXT) FROM access_log WHERE {}",
                app.at(5)
            ),
        ))
        .await
        .unwrap()
        .unwrap();
    let stored: String = row.try_get_by_index(0).unwrap();
    let at = DateTime::parse_from_rfc3339(&stored.replacen(' ', "T", 1))
        .or_else(|_| DateTime::parse_from_str(&stored, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .unwrap();
    let shifted = at
        .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600).unwrap())
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    app.tamper(&format!(
        "UPDATE access_log SET at = '{shifted}' WHERE {}",
        app.at(5)
    ))
    .await;
    let (seq, reason) = broken(&app, &token).await;
    assert_eq!(seq, 5);
    assert!(reason.contains("at"), "{reason}");
}

#[tokio::test]
async fn checkpoints_are_signed_with_a_key_that_is_not_in_the_database() {
    let (app, _) = seeded_for_verify(3).await;
    let latest = app.wait_for_checkpoint(10).await;
    let checkpoint = app
        .app
        .store
        .checkpoints_between(&app.chain(), latest, latest)
        .await
        .unwrap()
        .remove(0);
    let token_kids: Vec<String> = app
        .app
        .store
        .all_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert!(
        !token_kids.contains(&checkpoint.kid),
        "signed with a token key: {checkpoint:?}"
    );
    // It is the key of the app's own key file, which only its owner can read.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(checkpoint.kid, app.app.checkpoint_key.kid());
    let file = &app.app.settings.access_log.checkpoint_key_file;
    let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_log_rewritten_and_re_signed_with_the_token_key_from_the_database_does_not_verify() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    let (app, token) = seeded_for_verify(3).await;
    app.wait_for_checkpoint(10).await;
    // The intruder can write the database and read the token-signing key in it (and the key
    // that seals it, for the worst case): they edit record 2, recompute the chain and re-sign
    // every checkpoint with that key.
    use keyhole::config::EncryptionKeySource;
    use keyhole::tokens::EncryptionKey;
    let key = app.app.store.all_signing_keys().await.unwrap().remove(0);
    let sealing = match app.app.settings.encryption_key_source().unwrap() {
        EncryptionKeySource::Value(value) => EncryptionKey::from_base64(value.expose()).unwrap(),
        EncryptionKeySource::File(path) => EncryptionKey::read_file(&path).unwrap(),
        EncryptionKeySource::Ephemeral => panic!("the test app keeps its key somewhere"),
    };
    let private_key = sealing.open(&key.kid, &key.private_key).unwrap();
    let encoding = EncodingKey::from_ed_der(&private_key);
    let mut records = chain_records(&app).await;
    records[1].record.customer_id = Some("CU-9999".into());
    let db = app.raw_db().await;
    let mut prev = records[0].prev_hash.clone();
    for r in records.iter_mut() {
        r.prev_hash = prev.clone();
        r.hash = chain_hash(&prev, &r.chain, r.seq, &r.record);
        prev = r.hash.clone();
        db.execute_unprepared(&format!(
            "UPDATE access_log SET customer_id = '{}', prev_hash = '{}', hash = '{}' WHERE {}",
            r.record.customer_id.as_deref().unwrap(),
            r.prev_hash,
            r.hash,
            app.at(r.seq)
        ))
        .await
        .unwrap();
    }
    db.execute_unprepared("DELETE FROM chain_checkpoints")
        .await
        .unwrap();
    let chain = app.chain();
    for seq in [3, 6, 9, 10] {
        let hash = &records[seq as usize - 1].hash;
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(keyhole::access_log::checkpoint::CHECKPOINT_TYP.into());
        header.kid = Some(key.kid.clone());
        let claims = serde_json::json!({
            "iss": app.base, "chain": chain, "seq": seq, "hash": hash,
            "iat": Utc::now().timestamp()
        });
        let signature = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
        db.execute_unprepared(&format!(
            "INSERT INTO chain_checkpoints (chain, seq, hash, kid, signature, signed_at) \
             VALUES ('{chain}', {seq}, '{hash}', '{}', '{signature}', '{}')",
            key.kid,
            Utc::now().to_rfc3339()
        ))
        .await
        .unwrap();
    }
    let (_, reason) = broken(&app, &token).await;
    assert!(reason.contains("not trusted"), "{reason}");
}
