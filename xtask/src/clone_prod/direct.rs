//! The direct clone: production's database and media straight into a dev target.

use std::{
    cell::Cell,
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
};

use anyhow::bail;

use super::{subset as subset_fill, SourceSide};
use crate::{
    cli::SubsetRequest,
    context::Context,
    mode::{print_plan, Mode},
    pg::DbUrl,
    pipeline::{
        dump::{with_dump, Dump},
        leak_scan, load, parallel,
        replace::{Create, Database, Replacement},
        report::{excluded_text, media_plan, summarise, Summary, Timings},
        scrub,
        staged_media::{check_media_pair, MediaSource},
        subset::{
            template::{self, Beside, Early},
            Subset,
        },
        swap::{self, LoadGuard},
    },
    plain::lines,
    term,
};

pub struct Direct<'a> {
    pub source: &'a DbUrl,
    pub source_media: Option<&'a MediaSource<'a>>,
    pub target: &'a DbUrl,
    pub target_media: Option<&'a Path>,
    pub excluded: &'a [String],
    /// The patterns the user gave (warned about when they match nothing).
    pub given: &'a [String],
    pub guard: &'a LoadGuard,
    pub scrub: &'a scrub::Options,
    /// A subset of the source instead of all of it.
    pub subset: Option<&'a SubsetRequest>,
}

impl Direct<'_> {
    pub fn run(&self, cx: &Context, mode: Mode) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let dry_run = mode == Mode::DryRun;
        if self.source.same_database(self.target) {
            bail!("source and target are the same database ({}): refusing to replace a database with itself", self.target);
        }
        let replacement = Replacement {
            target: self.target,
            target_media: self.target_media,
            guard: self.guard,
        };
        replacement.check()?;
        if self.source_media.is_some() != self.target_media.is_some() {
            let missing = if self.source_media.is_some() {
                "--target-media (or NETPOINT_MEDIA_ROOT)"
            } else {
                "--source-media (or NETPOINT_PROD_MEDIA_ROOT)"
            };
            bail!("media need both a source and a target directory: pass {missing}, or neither to clone the database only");
        }
        check_media_pair(self.source_media.and_then(|m| m.local()), self.target_media)?;
        let inspect_source = || {
            // Counted, not listed: a clone's memory does not grow with the number of files.
            let media = || self.source_media.map(|m| m.count()).transpose();
            SourceSide::inspect(
                cx,
                self.source,
                self.excluded,
                self.given,
                self.scrub,
                media,
            )
        };
        // The target is only read here, side by side with the source; a dry run leaves it be.
        // The subset is computed meanwhile in a snapshot of its own (it only reads the
        // source), and the schema's template is copied on the target's server once the
        // target is known not to be the source (see `pipeline::subset::template`).
        let (early_tx, early) = mpsc::channel();
        let abandon = Arc::new(AtomicBool::new(false));
        let beside = Beside {
            early,
            abandon: Arc::clone(&abandon),
        };
        let (source_side, target_side, subset) = std::thread::scope(|scope| {
            let target = (!dry_run).then(|| {
                let sh = sh.clone();
                let replacement = &replacement;
                scope.spawn(move || replacement.inspect(&sh, tools))
            });
            // Its session starts on this thread, which lives as long as the run.
            let subset = self.subset.map(|request| {
                let session = Subset::open(cx, self.source, &request.roots);
                let cx = cx.fork();
                scope.spawn(move || subset_fill::compute(&cx, session?, request, Some(beside)))
            });
            let source = inspect_source();
            let target = target.map(joined);
            let early = match (&source, &target) {
                (Ok((side, _)), Some(Ok(target)))
                    if !side
                        .server
                        .same_database(&target.state.server, target.state.oid.as_deref()) =>
                {
                    let major = target.state.server.major;
                    Some(Early {
                        sh: cx.sh.clone(),
                        tools,
                        admin: target.admin.clone(),
                        drop_settings: match side.server.major <= major {
                            true => Vec::new(),
                            false => lines::settings_unknown_to(major),
                        },
                    })
                }
                _ => None,
            };
            if source.is_err() || matches!(target, Some(Err(_))) {
                abandon.store(true, Ordering::Relaxed);
            }
            let _ = early_tx.send(early);
            (source, target, subset.map(joined))
        });
        let (side, media_totals) = source_side?;
        let SourceSide {
            server,
            exclusions,
            scrub,
            encoding,
        } = &side;
        let excluded = &exclusions.tables;
        let target = target_side.transpose()?;
        if let Some(target) = &target {
            if server.same_database(&target.state.server, target.state.oid.as_deref()) {
                bail!(
                    "source and target are the same database ({} and {} name one database on one server, or on a replica of it): refusing to replace a database with itself",
                    self.source,
                    self.target
                );
            }
        }
        // Computed before anything is replaced: a bad root changes nothing.
        let mut subset = subset.transpose()?;
        let prepared = subset_fill::PreparedCopy {
            cx,
            copy: std::cell::Cell::new(subset.as_mut().and_then(|s| s.prepared.take())),
        };
        // The files its rows name, read in its snapshot: only those are copied.
        let subset_files = match (&mut subset, self.subset, self.source_media) {
            (Some(subset), Some(request), Some(_)) => Some(subset.media_files(&request.rules)?),
            _ => None,
        };
        if dry_run {
            let dump = match &subset {
                Some(subset) => subset_fill::plan_line(subset),
                None => format!(
                    "dump it with pg_dump --no-owner --no-privileges{}",
                    excluded_text(excluded)
                ),
            };
            print_plan(&[
                side.read_plan(self.source),
                dump,
                side.scrub_plan(),
                format!(
                    "restore into a temporary database beside {} and swap it in place",
                    self.target
                ),
                match &subset_files {
                    Some(files) => format!(
                        "copy the {} media files the subset names from {} to {}",
                        files.len(),
                        self.source_media.map(|m| m.shown()).unwrap_or_default(),
                        self.target_media
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    ),
                    None => media_plan(
                        self.source_media.map(|m| m.shown()).as_deref(),
                        self.target_media,
                        media_totals.map(|c| c.totals),
                    ),
                },
            ]);
            return Ok(());
        }
        let target = target.expect("the target is inspected unless this is a dry run");
        let mut locked = replacement.lock(cx, &target, Some(server.major))?;
        // A subset's previous database is dropped once this run is done, not while its
        // developer waits: the drop grows with that database, not with the subset.
        if self.subset.is_some() {
            locked.keep_previous();
        }
        let drop_settings = locked.drop_settings.clone();
        let mut missing_files = 0;
        let stage = |timings: &mut Timings| match (
            self.source_media,
            self.target_media,
            &media_totals,
        ) {
            (Some(src), Some(dst), Some(count)) => match &subset_files {
                Some(files) => {
                    let (staged, missing) =
                        timings.time("media copy", || src.stage_listed(count, files, dst))?;
                    missing_files = missing.len();
                    if let Some(first) = missing.first() {
                        term::warn(format!(
                                "{} media files the subset names are not in {} (such as {first}): the rows keep their names",
                                missing.len(),
                                src.shown()
                            ));
                    }
                    Ok(Some(staged))
                }
                None => Ok(Some(timings.time("media copy", || src.stage(count, dst))?)),
            },
            _ => Ok(None),
        };
        let estimates: Vec<(String, i64)> = excluded
            .iter()
            .map(|(name, rows)| (name.clone(), rows.unwrap_or(0)))
            .collect();
        let left_out: Vec<String> = excluded.iter().map(|(t, _)| t.clone()).collect();
        let mut leaks = None;
        let mut verified = None;
        // The schema's sections, dumped in the subset's snapshot while it was computed.
        let schema = subset.as_mut().map(|s| s.schema()).transpose()?;
        let unfit = match (&subset, &schema) {
            (Some(subset), Some(schema)) => subset.unfit_for_template(schema),
            _ => None,
        };
        let templated = Cell::new(false);
        let create = match &schema {
            Some(schema) => Create::Beside(Box::new(|admin: &DbUrl, temp: &DbUrl| {
                match unfit {
                    Some(why) => term::detail(format!("building the schema anew: {why}")),
                    None => {
                        let settings = &drop_settings;
                        if prepared.take_place(temp)?
                            || schema.create_from_template(
                                cx,
                                admin,
                                temp,
                                settings,
                                Some(encoding),
                            )?
                        {
                            templated.set(true);
                            return Ok(());
                        }
                    }
                }
                swap::create_temp(cx, admin, temp, Some(encoding))
            })),
            None => Create::Empty {
                encoding: Some(encoding),
            },
        };
        let fill = |temp: &DbUrl| {
            if let Some(subset) = subset.as_mut() {
                let fill = subset_fill::SubsetFill {
                    source: self.source,
                    scrub,
                    left_out: &left_out,
                    drop_settings: drop_settings.clone(),
                    strict: self.scrub.strict,
                    schema: schema.as_ref().expect("a subset has its schema"),
                    templated: templated.get(),
                };
                let (report, checked) = fill.run(cx, subset, temp)?;
                (leaks, verified) = (report, Some(checked));
                return Ok(());
            }
            let bar = term::bytes_progress("restore", None);
            // Uncovered columns are copied verbatim: the scan reads them as they pass.
            let covered = leak_scan::Covered::by_rules(&scrub.applied, &left_out);
            let scanner = leak_scan::Scanner::start(cx, self.source, &covered)?;
            let parallel = parallel::DirectClone {
                source: self.source,
                patterns: &exclusions.patterns,
                excluded: &estimates,
                drop_settings: drop_settings.clone(),
                rules: &scrub.applied,
                bar: &bar,
                replaces: target.state.exists,
                encoding,
                scan: scanner.as_ref(),
            };
            let counts = match parallel.run(cx, temp)? {
                Some(counts) => counts,
                None => {
                    let psql = load::spawn_psql_load(cx, temp)?;
                    let dump = Dump {
                        source: self.source,
                        patterns: &exclusions.patterns,
                        drop_settings: drop_settings.clone(),
                        scrub,
                        scan: scanner.as_ref(),
                    };
                    with_dump(cx, dump, |reader| {
                        load::feed_psql(temp, psql, reader, &|n| bar.inc(n)).map(|_| ())
                    })?
                    .1
                }
            };
            bar.finish_and_clear();
            if !scrub.applied.is_empty() {
                scrub.verify((&cx.sh, &cx.tools), self.source, temp, &left_out)?;
                term::step(scrub.report(&counts));
            }
            // Before the swap: with --strict a finding leaves the target be.
            let report = scanner.map(leak_scan::Scanner::report);
            leak_scan::check(
                report.as_ref(),
                self.scrub.strict,
                "the target is untouched",
            )?;
            leaks = report;
            Ok(())
        };
        let database = Database {
            announce: Some(format!("cloning {} into {}", self.source, self.target)),
            create,
            fill: Box::new(fill),
        };
        let replaced = locked.replace(cx, stage, database);
        // The next run's copy of the template, whether this one succeeded or not.
        if let (true, Some(schema)) = (templated.get(), &schema) {
            template::make_ready(cx, &target.admin, &schema.template_name(&drop_settings));
        }
        let replaced = replaced?;
        if self.subset.is_some() && target.state.exists {
            swap::drop_in_background(cx, &target.admin, &swap::aside_name(&self.target.database));
        }
        for line in subset.iter().flat_map(|s| s.derived_lines()) {
            term::step(line);
        }
        let provenance = verified.as_ref().map(|v| match missing_files {
            0 => v.line(),
            n => format!(
                "{}, {n} media files it names missing from the source media",
                v.line()
            ),
        });
        summarise(
            cx,
            &Summary {
                target: self.target,
                excluded,
                media: replaced.media,
                leaks: leaks.as_ref(),
                provenance: provenance.as_deref(),
                timings: &replaced.timings,
            },
        );
        Ok(())
    }
}

/// A scoped thread's result; its panic goes on.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}
