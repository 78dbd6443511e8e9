//! What a run tells its user: the plan of a dry run, the time per step and the closing
//! summary.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    context::Context,
    media,
    pg::{Access, DbUrl},
    pipeline::leak_scan,
    term,
};

/// Time spent per step, for the closing summary.
#[derive(Default)]
pub struct Timings(Vec<(&'static str, Duration)>);

impl Timings {
    pub fn time<T>(
        &mut self,
        step: &'static str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let start = Instant::now();
        let out = f()?;
        self.0.push((step, start.elapsed()));
        Ok(out)
    }

    pub fn line(&self) -> String {
        self.0
            .iter()
            .map(|(step, d)| format!("{step} {}", term::human_duration(*d)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn excluded_text(excluded: &[(String, Option<i64>)]) -> String {
    if excluded.is_empty() {
        return ", all table data included".to_string();
    }
    let names: Vec<String> = excluded
        .iter()
        .map(|(name, rows)| match rows {
            Some(rows) => format!("{name} (about {rows} rows, the planner's estimate)"),
            None => format!("{name} (rows not yet counted by the planner)"),
        })
        .collect();
    format!(", without the data of {}", names.join(", "))
}

/// What the summary says of the data left out.
pub fn left_out_text(excluded: &[(String, Option<i64>)]) -> String {
    match excluded.len() {
        0 => "all table data copied".to_string(),
        n => {
            let estimate: i64 = excluded.iter().filter_map(|(_, rows)| *rows).sum();
            let known = excluded.iter().all(|(_, rows)| rows.is_some());
            let tables = excluded
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            if known && estimate > 0 {
                format!("data of {n} table(s) left out ({tables}; about {estimate} rows by the planner's estimate)")
            } else {
                format!("data of {n} table(s) left out ({tables})")
            }
        }
    }
}

pub fn media_plan(
    source: Option<&str>,
    target: Option<&Path>,
    totals: Option<media::Totals>,
) -> String {
    match (source, target, totals) {
        (Some(source), Some(target), Some(totals)) => {
            format!(
                "copy media {} → {} ({} files, {}), verify every file, swap into place",
                source,
                target.display(),
                totals.files,
                term::human_bytes(totals.bytes)
            )
        }
        (Some(source), None, Some(totals)) => {
            format!(
                "archive media {} ({} files, {})",
                source,
                totals.files,
                term::human_bytes(totals.bytes)
            )
        }
        _ => "media: not cloned (no media directories given)".to_string(),
    }
}

/// What the closing summary of a replaced database says.
pub struct Summary<'a> {
    pub target: &'a DbUrl,
    /// The tables whose data was left out, with the planner's estimate of their rows.
    pub excluded: &'a [(String, Option<i64>)],
    pub media: Option<media::Totals>,
    pub leaks: Option<&'a leak_scan::Report>,
    /// Who signed the bundle loaded, if anyone.
    pub provenance: Option<&'a str>,
    pub timings: &'a Timings,
}

pub fn summarise(cx: &Context, summary: &Summary) {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let Summary {
        target,
        excluded,
        media,
        leaks,
        provenance,
        timings,
    } = *summary;
    #[derive(serde::Deserialize)]
    struct Facts {
        tables: i64,
        bytes: u64,
    }
    let facts: Option<Facts> = tools
        .query(
            sh,
            target,
            Access::ReadWrite,
            "select json_build_object('tables', (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p') \
             and n.nspname not in ('pg_catalog','information_schema') and n.nspname not like 'pg_toast%'), 'bytes', pg_database_size(current_database()))",
        )
        .ok()
        .and_then(|answer| serde_json::from_str(&answer).ok());
    let (tables, size) = match &facts {
        Some(facts) => (facts.tables.to_string(), facts.bytes),
        None => ("?".to_string(), 0),
    };
    let media = match media {
        Some(totals) => format!(
            "{} media files ({})",
            totals.files,
            term::human_bytes(totals.bytes)
        ),
        None => "no media".to_string(),
    };
    let provenance = provenance
        .map(|text| format!("{text}; "))
        .unwrap_or_default();
    term::success(format!(
        "{target}: {tables} tables, {}, {}, {media}; {provenance}{}; {}",
        term::human_bytes(size),
        left_out_text(excluded),
        leak_scan::summary(leaks),
        timings.line()
    ));
}
