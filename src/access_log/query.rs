//! The security team's search over the log: the filters of the admin API, parsed once into
//! domain types, and an opaque cursor that keeps pages stable while records are appended.

use super::record::Outcome;
use crate::domain::scope::is_identifier;
use crate::domain::{ClientId, GrantId, Scope, UpstreamCustomerId};
use chrono::{DateTime, Utc};

/// The most records one page may carry.
pub const MAX_LIMIT: u64 = 1000;
pub const DEFAULT_LIMIT: u64 = 100;

/// Every filter is optional; given ones are combined with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogFilter {
    pub client_id: Option<ClientId>,
    pub customer_id: Option<UpstreamCustomerId>,
    pub grant_id: Option<GrantId>,
    pub resource: Option<String>,
    /// In scope form, `claims:status`: records that disclosed this field.
    pub field: Option<Scope>,
    pub outcome: Option<Outcome>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
}

/// The query string as it arrives; every value is checked by [`LogFilter::parse`].
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RawLogQuery {
    #[param(
        pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"
    )]
    pub client_id: Option<String>,
    /// The insurer's customer id, e.g. `CU-1001`.
    #[param(
        pattern = "^([A-Za-z0-9_-][A-Za-z0-9._-]{0,63}|\\.[A-Za-z0-9_-][A-Za-z0-9._-]{0,62}|\\.\\.[A-Za-z0-9._-]{1,62})$"
    )]
    pub customer_id: Option<String>,
    #[param(pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub grant_id: Option<String>,
    #[param(pattern = "^[a-z][a-z0-9_]{0,63}$")]
    pub resource: Option<String>,
    /// A scope, e.g. `claims:status`.
    #[param(pattern = "^[a-z][a-z0-9_]{0,63}:[a-z][a-z0-9_]{0,63}$")]
    pub field: Option<String>,
    #[param(
        pattern = "^(ok|not_modified|denied|not_found|rate_limited|invalid_token|upstream_error|unavailable)$"
    )]
    pub outcome: Option<String>,
    /// RFC 3339, inclusive.
    #[param(format = DateTime)]
    pub from: Option<String>,
    /// RFC 3339, exclusive; a range that ends before it starts finds nothing.
    #[param(format = DateTime)]
    pub to: Option<String>,
    /// 1 to 1000: the page size (default 100); for CSV, the most rows to export (default:
    /// every matching row).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = "^[1-9][0-9]{0,17}$")]
    pub cursor: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{param}`: {problem}")]
pub struct QueryError {
    pub param: &'static str,
    pub problem: String,
}

fn bad(param: &'static str, problem: impl Into<String>) -> QueryError {
    QueryError {
        param,
        problem: problem.into(),
    }
}

/// An RFC 3339 time whose UTC year has four digits, as RFC 3339's own years do: an offset can
/// carry `9999-12-31T23:59:59-00:01` into year 10000, which stored times would compare with
/// wrongly (as text, on SQLite), so such a time is refused rather than answered wrongly.
fn parse_time(param: &'static str, value: &str) -> Result<DateTime<Utc>, QueryError> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .filter(|t| (0..=9999).contains(&chrono::Datelike::year(t)))
        .ok_or_else(|| {
            bad(
                param,
                "must be an RFC 3339 date-time in years 0000 to 9999 (UTC), e.g. 2026-11-22T10:00:00Z",
            )
        })
}

/// Where the previous page ended: records older than this id come next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub i64);

impl Cursor {
    /// The row id in decimal: a cursor says where a page ends, no more, so there is nothing
    /// to hide, and its format fits a pattern the OpenAPI document can state.
    pub fn encode(self) -> String {
        self.0.to_string()
    }

    pub fn decode(s: &str) -> Result<Self, QueryError> {
        let invalid = || bad("cursor", "is not a cursor this API issued");
        if s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) || s.starts_with('0') {
            return Err(invalid());
        }
        s.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .map(Self)
            .ok_or_else(invalid)
    }
}

impl LogFilter {
    /// Checks every value; a malformed one is an error naming the parameter, never ignored.
    pub fn parse(raw: &RawLogQuery) -> Result<Self, QueryError> {
        fn opt<T>(
            value: &Option<String>,
            param: &'static str,
            parse: impl Fn(&str) -> Option<T>,
            problem: &str,
        ) -> Result<Option<T>, QueryError> {
            value
                .as_deref()
                .map(|v| parse(v).ok_or_else(|| bad(param, problem)))
                .transpose()
        }
        let filter = Self {
            client_id: opt(
                &raw.client_id,
                "client_id",
                |v| ClientId::parse(v).ok(),
                "is not a client id",
            )?,
            customer_id: opt(
                &raw.customer_id,
                "customer_id",
                |v| UpstreamCustomerId::parse(v).ok(),
                "is not a customer id",
            )?,
            grant_id: opt(
                &raw.grant_id,
                "grant_id",
                |v| GrantId::parse(v).ok(),
                "is not a grant id",
            )?,
            resource: opt(
                &raw.resource,
                "resource",
                |v| is_identifier(v).then(|| v.to_owned()),
                "is not a resource name",
            )?,
            field: opt(
                &raw.field,
                "field",
                |v| v.parse().ok(),
                "must be a scope such as claims:status",
            )?,
            outcome: opt(&raw.outcome, "outcome", Outcome::parse, "is not an outcome")?,
            from: raw
                .from
                .as_deref()
                .map(|v| parse_time("from", v))
                .transpose()?,
            to: raw.to.as_deref().map(|v| parse_time("to", v)).transpose()?,
        };
        Ok(filter)
    }
}

/// A page size for JSON: 1 to 1000, 100 when absent.
pub fn page_limit(limit: Option<u64>) -> Result<u64, QueryError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(bad("limit", "must be between 1 and 1000")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_forged_ones_are_refused() {
        assert_eq!(Cursor::decode(&Cursor(42).encode()), Ok(Cursor(42)));
        for forged in [
            "",
            "0",
            "042",
            "-1",
            "x",
            "1e3",
            " 1",
            "9999999999999999999",
        ] {
            assert!(Cursor::decode(forged).is_err(), "{forged:?}");
        }
        let max = Cursor(999_999_999_999_999_999);
        assert_eq!(Cursor::decode(&max.encode()), Ok(max));
    }

    #[test]
    fn every_malformed_filter_names_its_parameter() {
        let cases: [(&str, RawLogQuery); 7] = [
            (
                "client_id",
                RawLogQuery {
                    client_id: Some("a b".into()),
                    ..Default::default()
                },
            ),
            (
                "grant_id",
                RawLogQuery {
                    grant_id: Some("nope".into()),
                    ..Default::default()
                },
            ),
            (
                "field",
                RawLogQuery {
                    field: Some("status".into()),
                    ..Default::default()
                },
            ),
            (
                "outcome",
                RawLogQuery {
                    outcome: Some("great".into()),
                    ..Default::default()
                },
            ),
            (
                "from",
                RawLogQuery {
                    from: Some("yesterday".into()),
                    ..Default::default()
                },
            ),
            (
                "to",
                RawLogQuery {
                    to: Some("2026-11-22".into()),
                    ..Default::default()
                },
            ),
            // Red team: year 10000 through an offset compared wrongly with stored times.
            (
                "from",
                RawLogQuery {
                    from: Some("9999-12-31T23:59:59-00:01".into()),
                    ..Default::default()
                },
            ),
        ];
        for (param, raw) in cases {
            assert_eq!(LogFilter::parse(&raw).unwrap_err().param, param);
        }
        // A range that ends before it starts is well formed, and finds nothing.
        let backwards = RawLogQuery {
            from: Some("2026-11-22T10:00:00Z".into()),
            to: Some("2026-11-22T09:00:00Z".into()),
            ..Default::default()
        };
        assert!(LogFilter::parse(&backwards).is_ok());
        assert_eq!(page_limit(Some(0)).unwrap_err().param, "limit");
        assert_eq!(page_limit(Some(1001)).unwrap_err().param, "limit");
        assert_eq!(page_limit(None), Ok(100));
    }

    #[test]
    fn well_formed_filters_parse() {
        let raw = RawLogQuery {
            client_id: Some("fone-shop".into()),
            customer_id: Some("CU-1001".into()),
            field: Some("claims:status".into()),
            outcome: Some("not_modified".into()),
            from: Some("2026-11-22T10:00:00+01:00".into()),
            ..Default::default()
        };
        let filter = LogFilter::parse(&raw).unwrap();
        assert_eq!(filter.outcome, Some(Outcome::NotModified));
        assert_eq!(
            filter.from.unwrap().to_rfc3339(),
            "2026-11-22T09:00:00+00:00"
        );
    }
}
