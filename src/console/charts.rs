//! Server-rendered SVG charts for the console, drawn by plotters. The console's CSP
//! (`default-src 'none'; style-src 'self'; img-src 'self'`) allows inline SVG markup but no
//! `style` attribute and no script, and the markup goes into the page unescaped, so every chart
//! is checked to be inert: plotters writes presentation attributes only and escapes the text
//! it draws; the root element is ours, with `role="img"`, a `<title>` and a `<desc>`.
//!
//! A chart is bounded whatever its input: at most [`MAX_SERIES`] series (the rest summed as
//! "(other)"), [`MAX_BUCKETS`] time buckets (the newest) and [`MAX_BARS`] bars; names are cut
//! to [`MAX_LABEL`] characters in the drawing (the table keeps them whole). The same input
//! gives the same markup, and no data gives a chart that says so.

use chrono::{DateTime, TimeDelta, Utc};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor;
use std::sync::OnceLock;

pub const MAX_SERIES: usize = 8;
/// A month of hours.
pub const MAX_BUCKETS: usize = 744;
pub const MAX_BARS: usize = 20;
pub const MAX_LABEL: usize = 24;

const WIDTH: u32 = 800;
const HEIGHT: u32 = 340;
const LEGEND_WIDTH: u32 = 190;
const FONT: &str = "sans-serif";
const OTHER: &str = "(other)";

/// Text is measured with this font, so no system font is needed. DejaVu Sans cut down to
/// Latin-1 (assets/fonts/LICENSE-DejaVu.txt): 22 kB instead of 760 kB; other characters are
/// measured as the missing glyph, close enough for a label's width.
static FONT_DATA: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-Latin1.ttf");

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the chart font does not load")]
    Font,
    #[error("drawing the chart failed: {0}")]
    Draw(String),
}

/// plotters looks fonts up in a table of its own, for the whole process: registered once.
fn font_registered() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = REGISTERED
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_DATA).is_ok());
    if *ok { Ok(()) } else { Err(ChartError::Font) }
}

fn draw_err(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// What a chart is about: the words around the numbers, units included.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// Identifies the chart in its page: `[A-Za-z0-9_-]`, anything else is dropped. The
    /// `<title>` and `<desc>` ids derive from it, so it must be unique within the page.
    pub id: &'a str,
    pub title: &'a str,
    /// The x axis with its unit, e.g. "hour (UTC)".
    pub x: &'a str,
    /// The y axis with its unit, e.g. "reads per hour".
    pub y: &'a str,
}

/// One named series of counts, one per time bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCounts {
    pub name: String,
    pub counts: Vec<u64>,
}

/// The data of a chart as a table, for an HTML `<table>` next to it (text values, unescaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataTable {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// A rendered chart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// Inert SVG markup, for the page as it is (not to be escaped again).
    pub svg: String,
    /// One or two sentences for screen readers; also the SVG's `<desc>`.
    pub summary: String,
    /// The numbers drawn.
    pub table: DataTable,
}

fn clip(name: &str) -> String {
    if name.chars().count() <= MAX_LABEL {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(MAX_LABEL - 1).collect();
        cut.push('…');
        cut
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// Replaces plotters' root tag with ours and puts the title and summary first inside.
fn finish(drawn: &str, labels: &Labels, summary: &str) -> Result<String, ChartError> {
    let id: String = labels
        .id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let body = drawn
        .strip_prefix("<svg ")
        .and_then(|rest| rest.split_once('>'))
        .map(|(_, body)| body)
        .ok_or_else(|| draw_err("plotters wrote no <svg> root"))?;
    Ok(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         role=\"img\" aria-labelledby=\"{id}-title {id}-desc\" class=\"chart\">\n\
         <title id=\"{id}-title\">{}</title>\n<desc id=\"{id}-desc\">{}</desc>{body}",
        escape(labels.title),
        escape(summary),
    ))
}

/// Keeps the `MAX_SERIES - 1` largest series (ties by name) and sums the rest, when there
/// are more than [`MAX_SERIES`].
fn bounded(series: &[NamedCounts], len: usize) -> Vec<NamedCounts> {
    let fit = |s: &NamedCounts| NamedCounts {
        name: s.name.clone(),
        counts: (0..len)
            .map(|i| s.counts.get(i).copied().unwrap_or(0))
            .collect(),
    };
    if series.len() <= MAX_SERIES {
        return series.iter().map(fit).collect();
    }
    let mut ranked: Vec<NamedCounts> = series.iter().map(fit).collect();
    ranked.sort_by(|a, b| {
        let total = |s: &NamedCounts| s.counts.iter().sum::<u64>();
        total(b).cmp(&total(a)).then_with(|| a.name.cmp(&b.name))
    });
    let rest = ranked.split_off(MAX_SERIES - 1);
    let mut other = NamedCounts {
        name: OTHER.to_owned(),
        counts: vec![0; len],
    };
    for s in rest {
        for (sum, n) in other.counts.iter_mut().zip(s.counts) {
            *sum += n;
        }
    }
    ranked.push(other);
    ranked
}

fn bucket_label(at: DateTime<Utc>, width: TimeDelta) -> String {
    if width >= TimeDelta::days(1) {
        at.format("%Y-%m-%d").to_string()
    } else {
        at.format("%m-%d %H:%M").to_string()
    }
}

fn color(i: usize) -> RGBColor {
    // Palette99's first colours are distinct and legible on white.
    let c = Palette99::pick(i).to_rgba();
    RGBColor(c.0, c.1, c.2)
}

fn no_data(labels: &Labels, table: DataTable) -> Result<Chart, ChartError> {
    let mut drawn = String::new();
    {
        let root = SVGBackend::with_string(&mut drawn, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let title = (FONT, 18).into_font();
        root.draw(&Text::new(labels.title.to_owned(), (20, 20), title))
            .map_err(draw_err)?;
        let centre = (FONT, 16)
            .into_font()
            .color(&BLACK)
            .pos(text_anchor::Pos::new(
                text_anchor::HPos::Center,
                text_anchor::VPos::Center,
            ));
        root.draw(&Text::new(
            "no data".to_owned(),
            (WIDTH as i32 / 2, HEIGHT as i32 / 2),
            centre,
        ))
        .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    let summary = format!("{}: no data.", labels.title);
    Ok(Chart {
        svg: finish(&drawn, labels, &summary)?,
        summary,
        table,
    })
}

/// Stacked bars over time: one bar per bucket, one colour per series. `buckets` are the
/// buckets' starts, evenly spaced; each series has a count per bucket (missing counts are 0).
pub fn stacked_bars(
    labels: &Labels,
    buckets: &[DateTime<Utc>],
    series: &[NamedCounts],
) -> Result<Chart, ChartError> {
    font_registered()?;
    let skip = buckets.len().saturating_sub(MAX_BUCKETS);
    let buckets = &buckets[skip..];
    let series: Vec<NamedCounts> = series
        .iter()
        .map(|s| NamedCounts {
            name: s.name.clone(),
            counts: s.counts.iter().skip(skip).copied().collect(),
        })
        .collect();
    let series = bounded(&series, buckets.len());
    let width = match buckets {
        [a, b, ..] => *b - *a,
        _ => TimeDelta::hours(1),
    };
    let stacks: Vec<u64> = (0..buckets.len())
        .map(|i| series.iter().map(|s| s.counts[i]).sum())
        .collect();
    let total: u64 = stacks.iter().sum();

    let mut columns = vec![labels.x.to_owned()];
    columns.extend(series.iter().map(|s| s.name.clone()));
    columns.push("total".to_owned());
    let rows = buckets
        .iter()
        .enumerate()
        .map(|(i, at)| {
            let mut row = vec![bucket_label(*at, width)];
            row.extend(series.iter().map(|s| s.counts[i].to_string()));
            row.push(stacks[i].to_string());
            row
        })
        .collect();
    let table = DataTable { columns, rows };
    if total == 0 {
        return no_data(labels, table);
    }

    let (peak_at, peak) = stacks
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(&a.0)))
        .map_or((0, 0), |(i, n)| (i, *n));
    let largest = series
        .iter()
        .map(|s| (s.counts.iter().sum::<u64>(), &s.name))
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)));
    let mut summary = format!(
        "{}: {total} in all ({}) over {} buckets from {} to {}; the most, {peak}, in {}.",
        labels.title,
        labels.y,
        buckets.len(),
        bucket_label(buckets[0], width),
        bucket_label(buckets[buckets.len() - 1], width),
        bucket_label(buckets[peak_at], width),
    );
    if let Some((n, name)) = largest.filter(|_| series.len() > 1) {
        summary.push_str(&format!(" Largest series: {} ({n}).", clip(name)));
    }

    let mut drawn = String::new();
    {
        let root = SVGBackend::with_string(&mut drawn, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (plot, legend) = root.split_horizontally(WIDTH - LEGEND_WIDTH);
        let n = u32::try_from(buckets.len()).map_err(draw_err)?;
        let top = peak + peak / 20 + 1;
        let mut chart = ChartBuilder::on(&plot)
            .caption(labels.title, (FONT, 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d((0..n).into_segmented(), 0u64..top)
            .map_err(draw_err)?;
        let label_of = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => buckets
                .get(*i as usize)
                .map(|at| bucket_label(*at, width))
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&label_of)
            .x_desc(labels.x)
            .y_desc(labels.y)
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        let mut base = vec![0u64; buckets.len()];
        for (k, s) in series.iter().enumerate() {
            let fill = color(k).filled();
            let bars = s
                .counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(i, n)| {
                    let i32_i = i as u32;
                    let bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i32_i), base[i]),
                            (SegmentValue::Exact(i32_i + 1), base[i] + n),
                        ],
                        fill,
                    );
                    base[i] += n;
                    bar
                });
            chart.draw_series(bars).map_err(draw_err)?;
        }
        for (k, s) in series.iter().enumerate() {
            let y = 40 + 20 * k as i32;
            legend
                .draw(&Rectangle::new([(8, y), (20, y + 12)], color(k).filled()))
                .map_err(draw_err)?;
            legend
                .draw(&Text::new(clip(&s.name), (26, y), (FONT, 12)))
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(Chart {
        svg: finish(&drawn, labels, &summary)?,
        summary,
        table,
    })
}

/// Horizontal bars, largest first as given: at most [`MAX_BARS`] (the first ones). `labels.y`
/// names the bars (e.g. "customer"), `labels.x` their length (e.g. "partners, last 30 days").
pub fn horizontal_bars(labels: &Labels, bars: &[(String, u64)]) -> Result<Chart, ChartError> {
    font_registered()?;
    let bars = &bars[..bars.len().min(MAX_BARS)];
    let table = DataTable {
        columns: vec![labels.y.to_owned(), labels.x.to_owned()],
        rows: bars
            .iter()
            .map(|(name, n)| vec![name.clone(), n.to_string()])
            .collect(),
    };
    let Some((first, most)) = bars
        .iter()
        .map(|(name, n)| (name, *n))
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
    else {
        return no_data(labels, table);
    };
    if most == 0 {
        return no_data(labels, table);
    }
    let summary = format!(
        "{}: {} bars ({}); the largest, {}, at {most} ({}).",
        labels.title,
        bars.len(),
        labels.y,
        clip(first),
        labels.x,
    );
    let mut drawn = String::new();
    {
        let root = SVGBackend::with_string(&mut drawn, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let n = u32::try_from(bars.len()).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(labels.title, (FONT, 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(180)
            .build_cartesian_2d(0u64..most + most / 20 + 1, (0..n).into_segmented())
            .map_err(draw_err)?;
        // The first bar on top.
        let row = |i: usize| n - 1 - i as u32;
        let name_of = |v: &SegmentValue<u32>| match v {
            SegmentValue::CenterOf(r) => n
                .checked_sub(*r + 1)
                .and_then(|i| bars.get(i as usize))
                .map(|(name, _)| clip(name))
                .unwrap_or_default(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(bars.len())
            .x_labels(6)
            .y_label_formatter(&name_of)
            .x_desc(labels.x)
            .y_desc(labels.y)
            .label_style((FONT, 11))
            .axis_desc_style((FONT, 12))
            .draw()
            .map_err(draw_err)?;
        let fill = color(0).filled();
        chart
            .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                let mut bar = Rectangle::new(
                    [
                        (0, SegmentValue::Exact(row(i))),
                        (*v, SegmentValue::Exact(row(i) + 1)),
                    ],
                    fill,
                );
                bar.set_margin(3, 3, 0, 0);
                bar
            }))
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(Chart {
        svg: finish(&drawn, labels, &summary)?,
        summary,
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    const HOSTILE: &str = "<script>&\"'";

    fn labels(id: &str) -> Labels<'_> {
        Labels {
            id,
            title: "Reads per partner",
            x: "hour (UTC)",
            y: "reads per hour",
        }
    }

    fn hours(n: usize) -> Vec<DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap();
        (0..n).map(|i| start + TimeDelta::hours(i as i64)).collect()
    }

    fn named(name: &str, counts: &[u64]) -> NamedCounts {
        NamedCounts {
            name: name.to_owned(),
            counts: counts.to_vec(),
        }
    }

    /// Nothing the CSP would refuse or a browser would run or fetch, and what a screen reader
    /// needs on the root.
    fn assert_inert_and_labelled(svg: &str, id: &str) {
        let root = svg.split_once('>').unwrap().0;
        assert!(root.starts_with("<svg "), "{root}");
        assert!(root.contains(" role=\"img\""), "{root}");
        assert!(
            root.contains(&format!("aria-labelledby=\"{id}-title {id}-desc\"")),
            "{root}"
        );
        assert!(root.contains(" viewBox=\"0 0 800 340\""), "{root}");
        assert!(svg.contains(&format!("<title id=\"{id}-title\">")));
        assert!(svg.contains(&format!("<desc id=\"{id}-desc\">")));
        let lower = svg.to_ascii_lowercase();
        for banned in [
            "style=",
            "<script",
            "<style",
            "href",
            "url(",
            "<image",
            "<foreignobject",
        ] {
            assert!(!lower.contains(banned), "`{banned}` in the chart");
        }
        // No event handler attribute (` onload=`, ` onclick=`…).
        assert!(
            !lower
                .split(|c: char| c.is_whitespace())
                .any(|word| word.starts_with("on") && word.contains('=')),
            "an on* attribute"
        );
        assert_eq!(lower.matches("http").count(), 1, "only the SVG namespace");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_stacked_chart_is_inert_labelled_and_tabled() {
        let chart = stacked_bars(
            &labels("reads-hourly"),
            &hours(3),
            &[
                named("partner-a", &[5, 0, 2]),
                named("partner-b", &[1, 1, 0]),
            ],
        )
        .unwrap();
        assert_inert_and_labelled(&chart.svg, "reads-hourly");
        assert_eq!(
            chart.table.columns,
            ["hour (UTC)", "partner-a", "partner-b", "total"]
        );
        assert_eq!(
            chart.table.rows,
            [
                ["12-01 00:00", "5", "1", "6"],
                ["12-01 01:00", "0", "1", "1"],
                ["12-01 02:00", "2", "0", "2"],
            ]
        );
        assert!(chart.summary.contains("9 in all"), "{}", chart.summary);
        assert!(chart.summary.contains("the most, 6, in 12-01 00:00"));
        assert!(chart.summary.contains("Largest series: partner-a (7)"));
        assert!(chart.svg.contains("partner-a"));
        assert!(chart.svg.contains("reads per hour"));
    }

    #[test]
    fn names_from_data_are_escaped() {
        let chart = stacked_bars(
            &Labels {
                id: "x\"><script>",
                title: HOSTILE,
                ..labels("")
            },
            &hours(2),
            &[named(HOSTILE, &[1, 2])],
        )
        .unwrap();
        assert_inert_and_labelled(&chart.svg, "xscript");
        assert!(chart.svg.contains("&lt;script&gt;&amp;&quot;&apos;"));
        assert!(!chart.svg.contains("&amp;lt;"), "escaped once, not twice");
        // The table holds text: the page's template escapes it.
        assert_eq!(chart.table.columns[1], HOSTILE);

        let bars = horizontal_bars(&labels("top"), &[(HOSTILE.to_owned(), 3)]).unwrap();
        assert_inert_and_labelled(&bars.svg, "top");
        assert!(!bars.svg.contains("<script"));
        assert!(bars.svg.contains("&lt;script&gt;&amp;&quot;&apos;"));
    }

    #[test]
    fn the_same_input_gives_the_same_chart() {
        let series = [named("a", &[3, 1, 4, 1, 5]), named("b", &[9, 2, 6, 5, 3])];
        let one = stacked_bars(&labels("c"), &hours(5), &series).unwrap();
        let two = stacked_bars(&labels("c"), &hours(5), &series).unwrap();
        assert_eq!(one, two);
        let bars = [("c1".to_owned(), 4), ("c2".to_owned(), 2)];
        assert_eq!(
            horizontal_bars(&labels("h"), &bars).unwrap(),
            horizontal_bars(&labels("h"), &bars).unwrap()
        );
    }

    #[test]
    fn no_data_is_a_chart_that_says_so() {
        for chart in [
            stacked_bars(&labels("e1"), &[], &[]).unwrap(),
            stacked_bars(&labels("e2"), &hours(4), &[named("a", &[0, 0, 0, 0])]).unwrap(),
            horizontal_bars(&labels("e3"), &[]).unwrap(),
        ] {
            assert!(chart.svg.contains("no data"), "{}", chart.svg);
            assert!(chart.summary.ends_with("no data."), "{}", chart.summary);
        }
        let empty = stacked_bars(&labels("e4"), &[], &[]).unwrap();
        assert_inert_and_labelled(&empty.svg, "e4");
        assert!(empty.table.rows.is_empty());
    }

    #[test]
    fn a_chart_stays_bounded_whatever_its_input() {
        let many: Vec<NamedCounts> = (0..50)
            .map(|i| named(&format!("partner-{i:02}"), &vec![i; 2 * MAX_BUCKETS]))
            .collect();
        let chart = stacked_bars(&labels("big"), &hours(2 * MAX_BUCKETS), &many).unwrap();
        assert_inert_and_labelled(&chart.svg, "big");
        // The largest series, then the rest summed.
        assert_eq!(chart.table.columns.len(), 1 + MAX_SERIES + 1);
        assert_eq!(chart.table.columns[1], "partner-49");
        assert_eq!(chart.table.columns[MAX_SERIES], OTHER);
        let other: u64 = (0..43).sum();
        assert_eq!(chart.table.rows[0][MAX_SERIES], other.to_string());
        // The newest buckets.
        assert_eq!(chart.table.rows.len(), MAX_BUCKETS);
        assert_eq!(
            chart.table.rows[MAX_BUCKETS - 1][0],
            bucket_label(
                hours(2 * MAX_BUCKETS)[2 * MAX_BUCKETS - 1],
                TimeDelta::hours(1)
            )
        );
        assert!(chart.svg.len() < 1_000_000, "{} bytes", chart.svg.len());

        let long = "c".repeat(500);
        let bars: Vec<(String, u64)> = (0..100).map(|i| (format!("{long}{i}"), 100 - i)).collect();
        let ranked = horizontal_bars(&labels("bars"), &bars).unwrap();
        assert_eq!(ranked.table.rows.len(), MAX_BARS);
        assert!(
            !ranked.svg.contains(&long),
            "names are clipped in the drawing"
        );
        assert_eq!(ranked.table.rows[0][0], bars[0].0, "and whole in the table");
    }

    #[test]
    fn daily_buckets_are_labelled_by_date() {
        let start = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap();
        let days: Vec<DateTime<Utc>> = (0..3).map(|i| start + TimeDelta::days(i)).collect();
        let chart = stacked_bars(&labels("d"), &days, &[named("a", &[1, 2, 3])]).unwrap();
        assert_eq!(chart.table.rows[2][0], "2026-12-01");
    }
}
