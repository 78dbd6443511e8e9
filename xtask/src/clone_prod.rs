//! `cargo xtask clone-prod`: production's database and media into a dev environment,
//! directly or through a portable bundle, verified and atomic.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use serde_json::json;
use xshell::Shell;

use crate::{
    atomic_file, bundle,
    db_url::DbUrl,
    dump, media, parallel,
    pg_tools::{self, Access, PgTools, Server, Tool},
    restore::{self, INTERRUPTED},
    schema_snapshot::source_url,
    scrub, term,
};

/// Changelog tables whose data is left out unless --with-changelog is given.
pub const CHANGELOG_TABLES: &[&str] = &["extras_objectchange", "core_objectchange"];

/// Replicate production (database and media) into a dev environment, or through a bundle.
#[derive(Debug, clap::Args)]
pub struct CloneProd {
    /// Production database, only ever read [default: $NETPOINT_PROD_DATABASE_URL].
    #[arg(long, value_name = "URL", conflicts_with = "bundle")]
    source: Option<String>,
    /// Dev database to replace [default: $NETPOINT_DATABASE_URL].
    #[arg(long, value_name = "URL", conflicts_with = "out")]
    target: Option<String>,
    /// Export: write a bundle to this new directory instead of loading a database.
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    out: Option<PathBuf>,
    /// Import: load a bundle written by --out.
    #[arg(long, value_name = "DIR")]
    bundle: Option<PathBuf>,
    /// Production media directory [default: $NETPOINT_PROD_MEDIA_ROOT].
    #[arg(long, value_name = "DIR", conflicts_with = "bundle")]
    source_media: Option<PathBuf>,
    /// Dev media directory to replace [default: $NETPOINT_MEDIA_ROOT].
    #[arg(long, value_name = "DIR", conflicts_with = "out")]
    target_media: Option<PathBuf>,
    /// Keep the data of the changelog (extras_objectchange, core_objectchange).
    #[arg(long, conflicts_with = "bundle")]
    with_changelog: bool,
    /// Also leave out the data of tables matching PATTERN (pg_dump pattern; repeatable).
    #[arg(long, value_name = "PATTERN", conflicts_with = "bundle")]
    exclude_table_data: Vec<String>,
    /// Clone only the media directory, leaving databases alone.
    #[arg(long, conflicts_with_all = ["out", "bundle", "source", "target", "with_changelog", "exclude_table_data"])]
    media_only: bool,
    /// Print the plan and change nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    guard: LoadGuard,
    #[command(flatten)]
    scrub: scrub::ScrubFlags,
}

/// Flags that guard a database about to be replaced.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadGuard {
    /// Replace a target database that has tables without asking.
    #[arg(long)]
    pub yes: bool,
    /// Allow a target database that is not on this machine.
    #[arg(long)]
    pub allow_remote_target: bool,
    /// Load a dump of a newer PostgreSQL major into an older server.
    #[arg(long)]
    pub allow_downgrade: bool,
}

/// Refuses a dump of a newer major unless --allow-downgrade; with it, returns the `SET`
/// lines the older server would reject.
pub fn check_versions(
    source_major: u32,
    target: &DbUrl,
    target_major: u32,
    guard: &LoadGuard,
) -> anyhow::Result<Vec<&'static str>> {
    if source_major <= target_major {
        return Ok(Vec::new());
    }
    if !guard.allow_downgrade {
        bail!(
            "the source is PostgreSQL {source_major} but {target} runs PostgreSQL {target_major}: a dump of a newer server \
             may not load into an older one; pass --allow-downgrade to try (the target stays untouched if it fails)"
        );
    }
    term::warn(format!("loading a PostgreSQL {source_major} dump into PostgreSQL {target_major} (--allow-downgrade)"));
    Ok(dump::settings_unknown_to(target_major))
}

impl CloneProd {
    pub fn run(self, sh: &Shell) -> anyhow::Result<()> {
        let tools = PgTools::discover(sh);
        if let Some(dir) = &self.bundle {
            let target = source_url(self.target.clone(), "NETPOINT_DATABASE_URL", "--target")?;
            let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT");
            let load = Load {
                dir,
                media: MediaForm::Archive,
                target: &target,
                target_media: target_media.as_deref(),
                guard: &self.guard,
            };
            return load.run(sh, &tools, self.dry_run);
        }
        let source_media = path_or_env(self.source_media.clone(), "NETPOINT_PROD_MEDIA_ROOT");
        if self.media_only {
            let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT");
            return media_only(
                source_media.as_deref(),
                target_media.as_deref(),
                &self.guard,
                self.dry_run,
            );
        }
        let source = source_url(
            self.source.clone(),
            "NETPOINT_PROD_DATABASE_URL",
            "--source",
        )?;
        let mut excluded: Vec<String> = if self.with_changelog {
            Vec::new()
        } else {
            CHANGELOG_TABLES.iter().map(|t| t.to_string()).collect()
        };
        excluded.extend(self.exclude_table_data.iter().cloned());
        match &self.out {
            Some(out) => export(
                sh,
                &tools,
                &source,
                source_media.as_deref(),
                &excluded,
                &self.scrub,
                out,
                self.dry_run,
            ),
            None => {
                let target = source_url(self.target.clone(), "NETPOINT_DATABASE_URL", "--target")?;
                let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT");
                let direct = Direct {
                    source: &source,
                    source_media: source_media.as_deref(),
                    target: &target,
                    target_media: target_media.as_deref(),
                    excluded: &excluded,
                    guard: &self.guard,
                    scrub: &self.scrub,
                };
                direct.run(sh, &tools, self.dry_run)
            }
        }
    }
}

pub fn path_or_env(flag: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.or_else(|| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
}

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

/// Tables whose data the dump leaves out, with their (estimated) row counts.
fn excluded_tables(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    patterns: &[String],
) -> anyhow::Result<Vec<(String, i64)>> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let like = |p: &str| restore::literal(&p.replace('*', "%").replace('?', "_"));
    let conditions: Vec<String> = patterns
        .iter()
        .map(|pattern| {
            let (schema, table) = match pattern.split_once('.') {
                Some((schema, table)) => (Some(schema), table),
                None => (None, pattern.as_str()),
            };
            let schema_filter = match schema {
                Some(schema) => format!("n.nspname like {}", like(schema)),
                None => "n.nspname not in ('pg_catalog', 'information_schema')".to_string(),
            };
            format!("(c.relname like {} and {schema_filter})", like(table))
        })
        .collect();
    // One query for all patterns: every psql call is a connection.
    let rows = tools.query(
        sh,
        source,
        Access::ReadOnly,
        &format!(
            "select n.nspname || '.' || c.relname, greatest(c.reltuples, 0)::bigint from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p') \
             and ({}) order by 1",
            conditions.join(" or ")
        ),
    )?;
    let mut found = Vec::new();
    for row in rows.lines().filter(|r| !r.is_empty()) {
        let (name, count) = row.split_once('|').unwrap_or((row, "0"));
        found.push((name.to_string(), count.parse().unwrap_or(0)));
    }
    Ok(found)
}

fn source_server(sh: &Shell, tools: &PgTools, source: &DbUrl) -> anyhow::Result<Server> {
    let server = tools.server(sh, source, Access::ReadOnly)?;
    tools.check_dump_compatible(sh, &server)?;
    Ok(server)
}

/// `pg_dump` of the source as plain SQL on its stdout, in a read-only session.
pub fn spawn_dump(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    patterns: &[String],
    extra: &[String],
) -> anyhow::Result<std::process::Child> {
    let excludes: Vec<String> = patterns
        .iter()
        .map(|p| format!("--exclude-table-data={p}"))
        .collect();
    let cmd = tools
        .cmd(sh, Tool::PgDump, source, Access::ReadOnly)?
        .args(["--format=plain", "--no-owner", "--no-privileges"])
        .args(&excludes)
        .args(extra);
    restore::tool_command(cmd, source)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting pg_dump for {source}"))
}

/// Streams a dump of `source` through `sink`; fails with pg_dump's error when the dump failed.
fn with_dump<T>(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    patterns: &[String],
    drop_settings: Vec<&'static str>,
    scrub: &scrub::Plan,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let child = spawn_dump(sh, tools, source, patterns, &[])?;
    pump_dump(child, source, drop_settings, &scrub.applied, false, sink)
}

/// Streams a running pg_dump's output, normalised and scrubbed, through `sink`; then checks
/// that pg_dump succeeded. Returns `sink`'s result and the rows each scrub rule changed.
pub fn pump_dump<T>(
    mut child: std::process::Child,
    source: &DbUrl,
    drop_settings: Vec<&'static str>,
    rules: &[scrub::Rule],
    mark_loaded: bool,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let stderr = restore::collect_stderr(child.stderr.take().unwrap());
    // One pass over the lines for everything done to them: every pass is a copy.
    let mut normalise = dump::normaliser(drop_settings);
    let (mut scrub, counts) = scrub::scrubber(rules);
    let mut mark = mark_loaded.then(parallel::loaded_marker);
    let mut reader = dump::edit_lines(child.stdout.take().unwrap(), move |line| {
        let mut next = normalise(line);
        if !line.is_empty() {
            next = next.and(scrub(line));
            if let Some(mark) = mark.as_mut() {
                next = next.and(mark(line));
            }
        }
        next
    });
    let result = sink(&mut reader);
    drop(reader);
    let status = match (&result, child.try_wait()?) {
        (_, Some(status)) => status,
        (Ok(_), None) => child.wait()?,
        (Err(_), None) => {
            let _ = child.kill();
            child.wait()?
        }
    };
    let stderr = stderr.join().unwrap_or_default();
    if !status.success()
        && (result.is_ok() || !stderr.contains("Broken pipe"))
        && !INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
    {
        return Err(pg_tools::explain_failure(source, &stderr))
            .context(format!("pg_dump of {source} failed"));
    }
    let counts = counts.borrow().clone();
    Ok((result?, counts))
}

/// Media paths of a run, checked before anything is changed.
fn check_media_pair(source: Option<&Path>, target: Option<&Path>) -> anyhow::Result<()> {
    if let (Some(source), Some(target)) = (source, target) {
        fs::canonicalize(source)
            .with_context(|| format!("media directory {} not found", source.display()))?;
        check_apart("--source-media", source, target)?;
    }
    if let Some(target) = target {
        atomic_file::parent_dir(target).context("--target-media")?;
        check_holds_nothing_else(target)?;
        atomic_file::check_swappable(target)?;
    }
    Ok(())
}

/// Refuses a target media directory that holds the current or the home directory (`.`, `..`,
/// `/`, `~` given by mistake): replacing it would delete them with it.
fn check_holds_nothing_else(target: &Path) -> anyhow::Result<()> {
    let real = resolved(target);
    let current = std::env::current_dir().ok();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    for (what, dir) in [
        ("the current directory", current),
        ("your home directory", home),
    ] {
        let Some(dir) = dir.map(|d| resolved(&d)) else {
            continue;
        };
        if dir.starts_with(&real) {
            bail!(
                "--target-media {} holds {what} ({}): replacing it would delete that too; pass the media directory itself",
                target.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

/// Refuses a target media directory that holds `source` or lies inside it, judged where the
/// file system resolves both paths (links followed), not by their text.
fn check_apart(flag: &str, source: &Path, target: &Path) -> anyhow::Result<()> {
    let (real_source, real_target) = (resolved(source), resolved(target));
    let (source, target) = (source.display(), target.display());
    if real_source == real_target {
        bail!("{flag} and --target-media are the same directory ({}): refusing to replace it with itself", real_source.display());
    }
    if real_target.starts_with(&real_source) {
        bail!("--target-media {target} is inside {flag} {source}: the media would be written into what they are read from; choose a target outside it");
    }
    if real_source.starts_with(&real_target) {
        bail!("{flag} {source} is inside --target-media {target}: replacing the target would delete it; choose a target outside it");
    }
    Ok(())
}

/// `path` with its links resolved; for a path that does not exist yet, its nearest existing
/// ancestor is resolved and the rest appended.
fn resolved(path: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(path) {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => resolved(parent).join(name),
        (_, Some(name)) => resolved(Path::new(".")).join(name),
        _ => path.to_path_buf(),
    }
}

/// Whether `dir` holds anything at all.
fn has_entries(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

fn guard_target(target: &DbUrl, guard: &LoadGuard) -> anyhow::Result<()> {
    if !target.is_loopback() && !guard.allow_remote_target {
        bail!("target {target} is not on this machine: pass --allow-remote-target if you really mean to replace a remote database");
    }
    Ok(())
}

/// Asks before replacing a database that has tables or a media directory that is not empty;
/// refuses without a terminal unless --yes.
pub fn confirm_replace(
    target: &DbUrl,
    state: &restore::TargetState,
    media: Option<&Path>,
    guard: &LoadGuard,
) -> anyhow::Result<()> {
    let has_tables = state.exists && state.tables > 0;
    let media_with_files = media.filter(|m| has_entries(m));
    if guard.yes || (!has_tables && media_with_files.is_none()) {
        return Ok(());
    }
    let database = format!(
        "database {target} ({} tables, {})",
        state.tables,
        term::human_bytes(state.size)
    );
    let what = match (
        has_tables,
        media.filter(|_| has_tables).or(media_with_files),
    ) {
        (true, Some(media)) => format!("{database} and media directory {}", media.display()),
        (true, None) => database,
        (false, Some(media)) => format!("media directory {} (not empty)", media.display()),
        (false, None) => unreachable!("returned above"),
    };
    ask_to_replace(&what)
}

/// Asks on a terminal whether `what` may be replaced; without a terminal, refuses and names --yes.
fn ask_to_replace(what: &str) -> anyhow::Result<()> {
    if !term::stdin_is_terminal() {
        bail!("{what} would be replaced: pass --yes to confirm (standard input is not a terminal)");
    }
    if !term::confirm(&format!("Replace {what}?"))? {
        bail!("cancelled: nothing was changed");
    }
    Ok(())
}

struct Direct<'a> {
    source: &'a DbUrl,
    source_media: Option<&'a Path>,
    target: &'a DbUrl,
    target_media: Option<&'a Path>,
    excluded: &'a [String],
    guard: &'a LoadGuard,
    scrub: &'a scrub::ScrubFlags,
}

impl Direct<'_> {
    fn run(&self, sh: &Shell, tools: &PgTools, dry_run: bool) -> anyhow::Result<()> {
        if self.source.same_database(self.target) {
            bail!("source and target are the same database ({}): refusing to replace a database with itself", self.target);
        }
        guard_target(self.target, self.guard)?;
        if self.source_media.is_some() != self.target_media.is_some() {
            let missing = if self.source_media.is_some() {
                "--target-media (or NETPOINT_MEDIA_ROOT)"
            } else {
                "--source-media (or NETPOINT_PROD_MEDIA_ROOT)"
            };
            bail!("media need both a source and a target directory: pass {missing}, or neither to clone the database only");
        }
        check_media_pair(self.source_media, self.target_media)?;
        let inspect_source = || -> anyhow::Result<_> {
            let server = source_server(sh, tools, self.source)?;
            let excluded = excluded_tables(sh, tools, self.source, self.excluded)?;
            // Counted, not listed: a clone's memory does not grow with the number of files.
            let media_totals = self.source_media.map(media::count).transpose()?;
            let scrub = self.scrub.plan(sh, tools, self.source)?;
            let encoding = database_encoding(sh, tools, self.source)?;
            Ok((server, excluded, media_totals, scrub, encoding))
        };
        // The target is only read here, side by side with the source; a dry run leaves it be.
        let (source_side, target_side) = std::thread::scope(|scope| {
            let target = (!dry_run).then(|| {
                let sh = sh.clone();
                scope.spawn(move || restore::inspect_target(&sh, tools, self.target))
            });
            let source = inspect_source();
            let target = target.map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
            (source, target)
        });
        let (server, excluded, media_totals, scrub, encoding) = source_side?;
        if dry_run {
            print_plan(&[
                format!(
                    "read {} (PostgreSQL {}, read-only session)",
                    self.source, server.version
                ),
                format!(
                    "dump it with pg_dump --no-owner --no-privileges{}",
                    excluded_text(&excluded)
                ),
                format!(
                    "scrub {} rules in the stream ({} skipped)",
                    scrub.applied.len(),
                    scrub.skipped.len()
                ),
                format!(
                    "restore into a temporary database beside {} and swap it in place",
                    self.target
                ),
                media_plan(self.source_media, self.target_media, media_totals),
            ]);
            return Ok(());
        }
        let (admin, state) =
            target_side.expect("the target is inspected unless this is a dry run")?;
        let drop_settings =
            check_versions(server.major, self.target, state.server.major, self.guard)?;
        confirm_replace(self.target, &state, self.target_media, self.guard)?;
        restore::drop_stale(sh, tools, &admin, &state.stale);
        let mut timings = Timings::default();
        let staged = match (self.source_media, self.target_media, media_totals) {
            (Some(src), Some(dst), Some(totals)) => {
                Some(timings.time("media copy", || stage_media_copy(src, totals, dst))?)
            }
            _ => None,
        };
        let result = timings.time("database", || {
            term::step(format!("cloning {} into {}", self.source, self.target));
            let bar = term::bytes_progress("restore", None);
            restore::replace(sh, tools, &admin, self.target, Some(&encoding), |temp| {
                let parallel = parallel::DirectClone {
                    source: self.source,
                    patterns: self.excluded,
                    excluded: &excluded,
                    drop_settings: drop_settings.clone(),
                    rules: &scrub.applied,
                    bar: &bar,
                    replaces: state.exists,
                    encoding: &encoding,
                };
                let counts = match parallel.run(sh, tools, temp)? {
                    Some(counts) => counts,
                    None => {
                        let psql = restore::spawn_psql_load(sh, tools, temp)?;
                        with_dump(
                            sh,
                            tools,
                            self.source,
                            self.excluded,
                            drop_settings.clone(),
                            &scrub,
                            |reader| {
                                restore::feed_psql(temp, psql, reader, &|n| bar.inc(n)).map(|_| ())
                            },
                        )?
                        .1
                    }
                };
                bar.finish_and_clear();
                if !scrub.applied.is_empty() {
                    let left_out: Vec<String> = excluded.iter().map(|(t, _)| t.clone()).collect();
                    scrub.verify(sh, tools, self.source, temp, &left_out)?;
                    term::step(scrub.report(&counts));
                }
                Ok(())
            })?;
            Ok(())
        });
        let media = finish_media(result, staged, self.target_media)?;
        summarise(sh, tools, self.target, &excluded, media, &timings);
        Ok(())
    }
}

fn database_encoding(sh: &Shell, tools: &PgTools, url: &DbUrl) -> anyhow::Result<String> {
    tools.query(
        sh,
        url,
        Access::ReadOnly,
        "select pg_encoding_to_char(encoding) from pg_database where datname = current_database()",
    )
}

fn excluded_text(excluded: &[(String, i64)]) -> String {
    if excluded.is_empty() {
        return ", all table data included".to_string();
    }
    let names: Vec<String> = excluded
        .iter()
        .map(|(name, rows)| format!("{name} (~{rows} rows)"))
        .collect();
    format!(", without the data of {}", names.join(", "))
}

fn media_plan(
    source: Option<&Path>,
    target: Option<&Path>,
    totals: Option<media::Totals>,
) -> String {
    match (source, target, totals) {
        (Some(source), Some(target), Some(totals)) => {
            format!(
                "copy media {} → {} ({} files, {}), verify every SHA-256, swap into place",
                source.display(),
                target.display(),
                totals.files,
                term::human_bytes(totals.bytes)
            )
        }
        (Some(source), None, Some(totals)) => {
            format!(
                "archive media {} ({} files, {})",
                source.display(),
                totals.files,
                term::human_bytes(totals.bytes)
            )
        }
        _ => "media: not cloned (no media directories given)".to_string(),
    }
}

fn print_plan(steps: &[String]) {
    println!("dry run, nothing will be changed. Plan:");
    for (n, step) in steps.iter().enumerate() {
        println!("  {}. {step}", n + 1);
    }
}

/// A copy of the media tree beside the target, verified file by file, ready to swap in.
struct StagedMedia {
    dir: PathBuf,
    totals: media::Totals,
}

impl Drop for StagedMedia {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn stage_media_copy(
    source: &Path,
    totals: media::Totals,
    target: &Path,
) -> anyhow::Result<StagedMedia> {
    atomic_file::remove_stale_staging(target);
    term::step(format!(
        "copying media {} → {} ({} files, {})",
        source.display(),
        target.display(),
        totals.files,
        term::human_bytes(totals.bytes)
    ));
    let staged = StagedMedia {
        dir: atomic_file::staging_dir(target)?,
        totals,
    };
    let bar = term::bytes_progress("media", Some(totals.bytes));
    let copied = media::copy_tree(source, &staged.dir, &|n| bar.inc(n))?;
    bar.finish_and_clear();
    if (copied.files, copied.bytes) != (totals.files, totals.bytes) {
        bail!(
            "{} changed while it was being copied ({} files, {} before; {} files, {} copied): run the clone again",
            source.display(),
            totals.files,
            term::human_bytes(totals.bytes),
            copied.files,
            term::human_bytes(copied.bytes)
        );
    }
    restore::check_interrupted()?;
    Ok(staged)
}

/// `--media-only`: the media directory alone, copied, verified and swapped into place.
fn media_only(
    source: Option<&Path>,
    target: Option<&Path>,
    guard: &LoadGuard,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (Some(source), Some(target)) = (source, target) else {
        bail!("--media-only needs --source-media and --target-media (or NETPOINT_PROD_MEDIA_ROOT and NETPOINT_MEDIA_ROOT)");
    };
    check_media_pair(Some(source), Some(target))?;
    let totals = media::count(source)?;
    if dry_run {
        print_plan(&[media_plan(Some(source), Some(target), Some(totals))]);
        return Ok(());
    }
    if has_entries(target) && !guard.yes {
        ask_to_replace(&format!("media directory {}", target.display()))?;
    }
    let mut timings = Timings::default();
    let staged = timings.time("media copy", || stage_media_copy(source, totals, target))?;
    let totals = finish_media(Ok(()), Some(staged), Some(target))?;
    if let Some(totals) = totals {
        term::success(format!(
            "{}: {} media files ({}); {}",
            target.display(),
            totals.files,
            term::human_bytes(totals.bytes),
            timings.line()
        ));
    }
    Ok(())
}

/// After the database step: swap staged media in only when the database succeeded.
fn finish_media(
    db: anyhow::Result<()>,
    staged: Option<StagedMedia>,
    target: Option<&Path>,
) -> anyhow::Result<Option<media::Totals>> {
    db?;
    let (Some(staged), Some(target)) = (staged, target) else {
        term::step("media: not cloned (no media directories given)");
        return Ok(None);
    };
    atomic_file::replace_dir(&staged.dir, target)?;
    term::step(format!(
        "media in place at {}: {} files, {} copied and verified",
        target.display(),
        staged.totals.files,
        term::human_bytes(staged.totals.bytes)
    ));
    Ok(Some(staged.totals))
}

fn summarise(
    sh: &Shell,
    tools: &PgTools,
    target: &DbUrl,
    excluded: &[(String, i64)],
    media: Option<media::Totals>,
    timings: &Timings,
) {
    let facts = tools
        .query(
            sh,
            target,
            Access::ReadWrite,
            "select (select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r','p') \
             and n.nspname not in ('pg_catalog','information_schema') and n.nspname not like 'pg_toast%'), pg_database_size(current_database())",
        )
        .unwrap_or_default();
    let (tables, size) = facts.split_once('|').unwrap_or(("?", "0"));
    let rows_excluded: i64 = excluded.iter().map(|(_, rows)| rows).sum();
    let media = match media {
        Some(totals) => format!(
            "{} media files ({})",
            totals.files,
            term::human_bytes(totals.bytes)
        ),
        None => "no media".to_string(),
    };
    term::success(format!(
        "{target}: {tables} tables, {}, ~{rows_excluded} changelog/excluded rows left out, {media}; {}",
        term::human_bytes(size.parse().unwrap_or(0)),
        timings.line()
    ));
}

#[allow(clippy::too_many_arguments)]
fn export(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    source_media: Option<&Path>,
    patterns: &[String],
    scrub_flags: &scrub::ScrubFlags,
    out: &Path,
    dry_run: bool,
) -> anyhow::Result<()> {
    if out.exists()
        && fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        bail!(
            "{} already exists and is not empty: choose a new directory for the bundle",
            out.display()
        );
    }
    atomic_file::parent_dir(out).context("--out")?;
    let server = source_server(sh, tools, source)?;
    let excluded = excluded_tables(sh, tools, source, patterns)?;
    let entries = source_media.map(media::scan).transpose()?;
    let encoding = database_encoding(sh, tools, source)?;
    let scrub = scrub_flags.plan(sh, tools, source)?;
    if dry_run {
        print_plan(&[
            format!(
                "scrub {} rules in the stream ({} skipped)",
                scrub.applied.len(),
                scrub.skipped.len()
            ),
            format!(
                "read {} (PostgreSQL {}, read-only session)",
                source, server.version
            ),
            format!(
                "dump it to {}/{}{}",
                out.display(),
                bundle::SQL,
                excluded_text(&excluded)
            ),
            media_plan(
                source_media,
                None,
                entries.as_deref().map(media::scan_totals),
            ),
            format!(
                "write {}, {} and {}",
                bundle::MEDIA_SUMS,
                bundle::MANIFEST,
                bundle::SUMS
            ),
        ]);
        return Ok(());
    }
    atomic_file::remove_stale_siblings(out);
    let staging = Staging(atomic_file::sibling(out, "staging"));
    fs::create_dir(&staging.0).with_context(|| format!("creating {}", staging.0.display()))?;
    let mut timings = Timings::default();
    let dumped = timings.time("dump", || {
        term::step(format!("dumping {source} into {}", bundle::SQL));
        let bar = term::bytes_progress("dump", None);
        let path = staging.0.join(bundle::SQL);
        let mut file =
            fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        let (bytes, counts) =
            with_dump(sh, tools, source, patterns, Vec::new(), &scrub, |reader| {
                let mut counted = ProgressReader {
                    inner: reader,
                    on_bytes: &|n| bar.inc(n),
                };
                Ok(std::io::copy(&mut counted, &mut file)?)
            })?;
        file.sync_all()?;
        bar.finish_and_clear();
        Ok((bytes, counts))
    })?;
    let (dumped, scrub_counts) = dumped;
    if !scrub.applied.is_empty() {
        term::step(scrub.report(&scrub_counts));
    }
    let mut names = vec![bundle::SQL, bundle::MANIFEST];
    let media_totals = match (source_media, &entries) {
        (Some(root), Some(entries)) => {
            names.extend([bundle::MEDIA_ARCHIVE, bundle::MEDIA_SUMS]);
            Some(timings.time("media archive", || {
                let totals = media::scan_totals(entries);
                term::step(format!(
                    "archiving media {} ({} files, {})",
                    root.display(),
                    totals.files,
                    term::human_bytes(totals.bytes)
                ));
                let bar = term::bytes_progress("media", Some(totals.bytes));
                let file = fs::File::create(staging.0.join(bundle::MEDIA_ARCHIVE))?;
                let hashed = media::write_archive(
                    root,
                    entries,
                    std::io::BufWriter::with_capacity(1 << 20, file),
                    &|n| bar.inc(n),
                )?;
                bar.finish_and_clear();
                fs::write(
                    staging.0.join(bundle::MEDIA_SUMS),
                    media::sha256_list(&hashed),
                )?;
                Ok(media::totals(&hashed))
            })?)
        }
        _ => {
            term::step("media: not included (no --source-media or NETPOINT_PROD_MEDIA_ROOT)");
            None
        }
    };
    let manifest = json!({
        "format": 1,
        "tool": {"name": "netpoint-xtask", "version": env!("CARGO_PKG_VERSION")},
        "created_at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "source": {
            "host": source.host.clone().unwrap_or_else(|| "localhost".into()),
            "port": source.port,
            "database": source.database,
            "server_version": server.version,
            "server_major": server.major,
            "encoding": encoding,
        },
        "excluded_table_data": excluded.iter().map(|(name, _)| name.clone()).collect::<Vec<_>>(),
        "sql_bytes": dumped,
        "scrub": (!scrub_flags.no_scrub).then(|| scrub.manifest(&scrub_counts)),
        "media": media_totals.map(|t| json!({"files": t.files, "bytes": t.bytes})),
    });
    fs::write(
        staging.0.join(bundle::MANIFEST),
        bundle::manifest_text(&manifest),
    )?;
    let sums = bundle::sums_for(&staging.0, &names)?;
    fs::write(staging.0.join(bundle::SUMS), sums)?;
    restore::check_interrupted()?;
    if out.exists() {
        fs::remove_dir(out)
            .with_context(|| format!("replacing the empty directory {}", out.display()))?;
    }
    fs::rename(&staging.0, out)
        .with_context(|| format!("moving the bundle into {}", out.display()))?;
    let media = media_totals
        .map(|t| format!(", {} media files ({})", t.files, term::human_bytes(t.bytes)))
        .unwrap_or_default();
    term::success(format!(
        "bundle written to {}: {} of SQL{media}; {}",
        out.display(),
        term::human_bytes(dumped),
        timings.line()
    ));
    Ok(())
}

/// A directory being filled; removed unless it was renamed into place.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

struct ProgressReader<'a, R: ?Sized> {
    inner: &'a mut R,
    on_bytes: &'a dyn Fn(u64),
}

impl<R: std::io::Read + ?Sized> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        restore::check_interrupted()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::Interrupted, "interrupted"))?;
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// How a bundle carries its media.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MediaForm {
    /// `netpoint_media.tar.gz`, as clone-prod exports it.
    Archive,
    /// `media/` unpacked, as the committed fixtures keep it.
    Tree,
}

/// Loading a bundle into a target database and media directory.
pub struct Load<'a> {
    pub dir: &'a Path,
    pub media: MediaForm,
    pub target: &'a DbUrl,
    pub target_media: Option<&'a Path>,
    pub guard: &'a LoadGuard,
}

impl Load<'_> {
    pub fn run(&self, sh: &Shell, tools: &PgTools, dry_run: bool) -> anyhow::Result<()> {
        guard_target(self.target, self.guard)?;
        let listed = bundle::verify_sums(self.dir)?;
        let media_sums = match listed.contains_key(bundle::MEDIA_SUMS) {
            true => Some(media::parse_sums(
                &fs::read(self.dir.join(bundle::MEDIA_SUMS))?,
                bundle::MEDIA_SUMS,
            )?),
            false => None,
        };
        if let Some(target_media) = self.target_media {
            atomic_file::parent_dir(target_media).context("--target-media")?;
            if media_sums.is_some() {
                check_apart("--bundle", self.dir, target_media)?;
                check_holds_nothing_else(target_media)?;
                atomic_file::check_swappable(target_media)?;
            }
        }
        let manifest = bundle::read_manifest(self.dir).ok();
        if dry_run {
            let media = match (&media_sums, self.target_media) {
                (Some(sums), Some(target)) => format!(
                    "unpack {} media files into staging, verify each against {}, swap into {}",
                    sums.len(),
                    bundle::MEDIA_SUMS,
                    target.display()
                ),
                (Some(_), None) => {
                    "media: not loaded (no --target-media or NETPOINT_MEDIA_ROOT)".to_string()
                }
                (None, _) => "media: the bundle has none".to_string(),
            };
            print_plan(&[
                format!("checksums of {} verified", self.dir.display()),
                format!(
                    "restore {} into a temporary database beside {} and swap it in place",
                    bundle::SQL,
                    self.target
                ),
                media,
            ]);
            return Ok(());
        }
        let (admin, state) = restore::inspect_target(sh, tools, self.target)?;
        let source_major = manifest
            .as_ref()
            .and_then(|m| m["source"]["server_major"].as_u64())
            .unwrap_or(0) as u32;
        let drop_settings =
            check_versions(source_major, self.target, state.server.major, self.guard)?;
        let replaced_media = self.target_media.filter(|_| media_sums.is_some());
        confirm_replace(self.target, &state, replaced_media, self.guard)?;
        restore::drop_stale(sh, tools, &admin, &state.stale);
        let mut timings = Timings::default();
        let staged = match (&media_sums, self.target_media) {
            (Some(sums), Some(target)) => {
                Some(timings.time("media", || self.stage_media(sums, target))?)
            }
            (Some(_), None) => {
                term::step("media: not loaded (no --target-media or NETPOINT_MEDIA_ROOT)");
                None
            }
            (None, _) => None,
        };
        let result = timings.time("database", || {
            let sql = self.dir.join(bundle::SQL);
            let size = fs::metadata(&sql)?.len();
            term::step(format!(
                "loading {} ({}) into {}",
                sql.display(),
                term::human_bytes(size),
                self.target
            ));
            let bar = term::bytes_progress("restore", Some(size));
            let encoding = manifest
                .as_ref()
                .and_then(|m| m["source"]["encoding"].as_str())
                .unwrap_or("UTF8")
                .to_string();
            restore::replace(sh, tools, &admin, self.target, Some(&encoding), |temp| {
                if parallel::load_file(sh, tools, temp, &sql, &drop_settings, &bar, state.exists)? {
                    return Ok(());
                }
                let psql = restore::spawn_psql_load(sh, tools, temp)?;
                let mut reader =
                    dump::normalising_reader(fs::File::open(&sql)?, drop_settings.clone());
                restore::feed_psql(temp, psql, &mut reader, &|n| bar.inc(n)).map(|_| ())
            })?;
            bar.finish_and_clear();
            Ok(())
        });
        let media = finish_media(result, staged, self.target_media)?;
        let excluded: Vec<(String, i64)> = manifest
            .as_ref()
            .and_then(|m| m["excluded_table_data"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.as_str().map(|s| (s.to_string(), 0)))
            .collect();
        summarise(sh, tools, self.target, &excluded, media, &timings);
        Ok(())
    }

    fn stage_media(
        &self,
        sums: &BTreeMap<PathBuf, String>,
        target: &Path,
    ) -> anyhow::Result<StagedMedia> {
        atomic_file::remove_stale_staging(target);
        let dir = atomic_file::staging_dir(target)?;
        let mut staged = StagedMedia {
            dir,
            totals: media::Totals::default(),
        };
        match self.media {
            MediaForm::Archive => {
                term::step(format!("unpacking {}", bundle::MEDIA_ARCHIVE));
                media::extract_archive(&self.dir.join(bundle::MEDIA_ARCHIVE), &staged.dir)?;
            }
            MediaForm::Tree => {
                let root = self.dir.join(bundle::MEDIA_DIR);
                let entries = media::scan(&root)?;
                term::step(format!("copying {}", root.display()));
                media::copy_verified(&root, &entries, &staged.dir, &|_| {})?;
            }
        }
        let bar = term::files_progress("verify", sums.len() as u64);
        staged.totals = media::verify(&staged.dir, sums, &|_| bar.inc(1))?;
        bar.finish_and_clear();
        restore::check_interrupted()?;
        Ok(staged)
    }
}
