//! The one CSV writer of every download (the security team's export, the customer's access
//! history). Every cell goes through [`cell`]: ids and resource names come from partners'
//! request paths, and a spreadsheet runs a cell that starts like a formula.

use std::borrow::Cow;

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR at its start)
/// gets a leading `'`, which spreadsheets show as text.
pub fn cell(value: &str) -> Cow<'_, str> {
    match value.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{value}").into(),
        _ => value.into(),
    }
}

/// Rows in memory, every cell defused.
pub struct CsvWriter {
    out: csv::Writer<Vec<u8>>,
}

impl CsvWriter {
    pub fn with_capacity(bytes: usize) -> Self {
        Self {
            out: csv::Writer::from_writer(Vec::with_capacity(bytes)),
        }
    }

    pub fn row<'a>(&mut self, cells: impl IntoIterator<Item = &'a str>) -> Result<(), csv::Error> {
        self.out
            .write_record(cells.into_iter().map(|c| cell(c).into_owned()))
    }

    pub fn into_bytes(self) -> Result<Vec<u8>, csv::Error> {
        self.out.into_inner().map_err(|e| e.into_error().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_defused() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2"), "'-2");
        assert_eq!(cell("@SUM"), "'@SUM");
        assert_eq!(cell("C-1001"), "C-1001");
        assert_eq!(cell(""), "");
    }

    #[test]
    fn every_row_is_defused() {
        let mut w = CsvWriter::with_capacity(64);
        w.row(["id", "=1+1"]).unwrap();
        let text = String::from_utf8(w.into_bytes().unwrap()).unwrap();
        assert_eq!(text, "id,'=1+1\n");
    }
}
