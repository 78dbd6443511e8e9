//! `clone-prod --subset` in the direct clone: the subset computed before anything is
//! replaced, and the fill of the temporary database from it, checked before the swap.

use crate::{
    cli::SubsetRequest,
    context::Context,
    pg::DbUrl,
    pipeline::{
        leak_scan, scrub,
        subset::{
            load::Fill,
            session::Session,
            template::{Beside, Prepared, Schema},
            verify::Verified,
            Subset,
        },
    },
    term,
};

/// Computes the subset in the read-only snapshot `session` holds on the source, which stays
/// open until the subset is dropped, beside the run's other work (see
/// [`Subset::compute_beside`]); says how many rows it holds.
pub fn compute(
    cx: &Context,
    session: Session,
    request: &SubsetRequest,
    beside: Option<Beside>,
) -> anyhow::Result<Subset> {
    let subset = Subset::compute_beside(
        cx,
        session,
        &request.rules,
        &request.roots,
        request.sample,
        beside,
    )?;
    term::step(plan_line(&subset));
    Ok(subset)
}

/// The dry run's (and the run's) line for the subset.
pub fn plan_line(subset: &Subset) -> String {
    let rows = &subset.closure.rows;
    let tables = rows.iter().filter(|r| !r.ids.is_empty() || r.whole).count();
    let picked: usize = rows.iter().filter(|r| !r.whole).map(|r| r.ids.len()).sum();
    let whole = rows.iter().filter(|r| r.whole && !r.derived).count();
    format!(
        "subset: {picked} rows picked from {tables} tables, {whole} tables kept whole, read in one snapshot"
    )
}

/// What the direct clone brings to the fill of a subset.
pub struct SubsetFill<'a> {
    pub source: &'a DbUrl,
    pub scrub: &'a scrub::Plan,
    pub left_out: &'a [String],
    pub drop_settings: Vec<&'static str>,
    pub strict: bool,
    pub schema: &'a Schema,
    /// Whether the temporary database is a copy of the schema's template.
    pub templated: bool,
}

impl SubsetFill<'_> {
    /// Loads the subset into `temp` through the scrub and the leak scan, then checks it;
    /// any failure leaves the target untouched.
    pub fn run(
        &self,
        cx: &Context,
        subset: &mut Subset,
        temp: &DbUrl,
    ) -> anyhow::Result<(Option<leak_scan::Report>, Verified)> {
        let bar = term::bytes_progress("restore", None);
        let covered = leak_scan::Covered::by_rules(&self.scrub.applied, self.left_out);
        let scanner = leak_scan::Scanner::start(cx, self.source, &covered)?;
        let fill = Fill {
            left_out: self.left_out,
            rules: &self.scrub.applied,
            scan: scanner.as_ref(),
            drop_settings: self.drop_settings.clone(),
        };
        let loaded = subset.fill(cx, &fill, self.schema, self.templated, temp, &|n| {
            bar.inc(n)
        })?;
        bar.finish_and_clear();
        // The scrub's check reads the source and the new database, beside the subset's own.
        let (scrubbed, verified) = std::thread::scope(|scope| {
            let (sh, tools) = (cx.sh.clone(), &cx.tools);
            let scrub = scope.spawn(move || {
                self.scrub
                    .verify((&sh, tools), self.source, temp, self.left_out)
            });
            let verified = subset
                .verify(cx, temp, &loaded)
                .map_err(|err| anyhow::anyhow!("{err:#}; the target is untouched"));
            let scrubbed = scrub
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (scrubbed, verified)
        });
        let verified = verified?;
        term::step(format!(
            "checked: every foreign key valid, no generic reference to a row left out, {} sequences set",
            loaded.sequences
        ));
        scrubbed?;
        if !self.scrub.applied.is_empty() {
            term::step(self.scrub.report(&loaded.scrubbed));
        }
        let report = scanner.map(leak_scan::Scanner::report);
        leak_scan::check(report.as_ref(), self.strict, "the target is untouched")?;
        Ok((report, verified))
    }
}

/// Warns of the media files a subset names that the source does not hold.
pub fn warn_missing(missing: &[String], source: &str) {
    if let Some(first) = missing.first() {
        term::warn(format!(
            "{} media files the subset names are not in {source} (such as {first}): the rows keep their names",
            missing.len()
        ));
    }
}

/// A copy of the schema's template made while the subset was computed, dropped unless it
/// took the temporary database's place.
pub struct PreparedCopy<'a> {
    pub cx: &'a Context,
    pub copy: std::cell::Cell<Option<Prepared>>,
}

impl PreparedCopy<'_> {
    /// Renames the copy to `temp`; `false` when there is none or it could not be renamed.
    pub fn take_place(&self, temp: &DbUrl) -> anyhow::Result<bool> {
        match self.copy.take() {
            Some(copy) => copy.rename_to(self.cx, temp),
            None => Ok(false),
        }
    }
}

impl Drop for PreparedCopy<'_> {
    fn drop(&mut self) {
        if let Some(copy) = self.copy.take() {
            copy.discard(self.cx);
        }
    }
}
