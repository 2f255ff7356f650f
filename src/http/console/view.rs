//! What every console page shows of its context, and how it writes times.

use super::gate::Person;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The signed-in person as the page layout needs them (the sign-out form's CSRF token).
#[derive(Serialize)]
pub struct PersonView<'a> {
    pub email: &'a str,
    pub csrf_token: &'a str,
}

impl<'a> PersonView<'a> {
    pub fn of(person: &'a Person) -> Self {
        Self {
            email: &person.email,
            csrf_token: person.csrf_token(),
        }
    }
}

/// Times in UTC, to the second: the log's own time zone, so a search reads back what it shows.
pub fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// "suspend" → "Suspend", for titles built from an action's name.
pub fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}
