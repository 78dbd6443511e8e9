//! `cargo xtask clone-prod`: production's database and media into a dev environment,
//! directly or through a portable bundle, verified and atomic.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use crate::process::SpawnTool;
use anyhow::{bail, Context};
use xshell::Shell;

use crate::{
    atomic_file,
    atomic_file::StagingDir,
    bundle,
    db_url::{path_or_env, required_url, DbUrl},
    dump, leak_scan, lock, media, parallel,
    pg_tools::{self, Access, PgTools, Server, Tool},
    restore, scrub, term, toc,
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
            let target = required_url(self.target.clone(), "NETPOINT_DATABASE_URL", "--target")?;
            let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT");
            let load = Load {
                dir,
                media: MediaForm::Archive,
                target: &target,
                target_media: target_media.as_deref(),
                guard: &self.guard,
                strict: self.scrub.strict,
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
        let source = required_url(
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
                &self.exclude_table_data,
                &self.scrub,
                out,
                self.dry_run,
            ),
            None => {
                let target =
                    required_url(self.target.clone(), "NETPOINT_DATABASE_URL", "--target")?;
                let target_media = path_or_env(self.target_media.clone(), "NETPOINT_MEDIA_ROOT");
                let direct = Direct {
                    source: &source,
                    source_media: source_media.as_deref(),
                    target: &target,
                    target_media: target_media.as_deref(),
                    excluded: &excluded,
                    given: &self.exclude_table_data,
                    guard: &self.guard,
                    scrub: &self.scrub,
                };
                direct.run(sh, &tools, self.dry_run)
            }
        }
    }
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

/// Tables whose data the dump leaves out, resolved once on the source by pg_dump's own
/// pattern rules, so that every path, the manifest and the summary use the same list.
#[derive(Debug, Default)]
pub struct Exclusions {
    /// `schema.table` and the planner's estimate of its rows (`None`: never analysed).
    pub tables: Vec<(String, Option<i64>)>,
    /// The same tables as exact, quoted `--exclude-table-data` patterns.
    pub patterns: Vec<String>,
}

/// Resolves `--exclude-table-data` patterns; `given` are the user's own, which are warned
/// about when they match nothing.
fn excluded_tables(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    patterns: &[String],
    given: &[String],
) -> anyhow::Result<Exclusions> {
    if patterns.is_empty() {
        return Ok(Exclusions::default());
    }
    let mut selects = Vec::new();
    for (i, pattern) in patterns.iter().enumerate() {
        let parts = pattern_regexes(pattern)?;
        let condition = match &parts[..] {
            [name] => format!(
                "c.relname ~ {} and pg_catalog.pg_table_is_visible(c.oid)",
                restore::literal(name)
            ),
            [schema, name] => format!(
                "n.nspname ~ {} and c.relname ~ {}",
                restore::literal(schema),
                restore::literal(name)
            ),
            _ => bail!("--exclude-table-data `{pattern}`: a pattern is `table` or `schema.table`"),
        };
        selects.push(format!(
            "select {i} as i, n.nspname as s, c.relname as t, \
             case when c.reltuples >= 0 then c.reltuples::bigint end as r from pg_class c \
             join pg_namespace n on n.oid = c.relnamespace where c.relkind in ('r', 'p', 'm', 'f') and {condition}"
        ));
    }
    // One query for all patterns: every psql call is a connection.
    let answer = tools.query(
        sh,
        source,
        Access::ReadOnly,
        &format!(
            "select coalesce(json_agg(json_build_array(i, s, t, r) order by s, t), '[]') from ({}) x",
            selects.join(" union all ")
        ),
    )?;
    let rows: Vec<(usize, String, String, Option<i64>)> = serde_json::from_str(&answer)
        .with_context(|| {
            format!("unexpected answer from {source} about excluded tables: {answer}")
        })?;
    for (i, pattern) in patterns.iter().enumerate() {
        if given.contains(pattern) && !rows.iter().any(|(j, ..)| *j == i) {
            term::warn(format!(
                "--exclude-table-data `{pattern}` matches no table of {source}"
            ));
        }
    }
    let mut exclusions = Exclusions::default();
    for (_, schema, table, estimate) in rows {
        let name = format!("{schema}.{table}");
        if !exclusions.tables.iter().any(|(n, _)| *n == name) {
            exclusions.tables.push((name, estimate));
            exclusions.patterns.push(format!(
                "\"{}\".\"{}\"",
                schema.replace('"', "\"\""),
                table.replace('"', "\"\"")
            ));
        }
    }
    Ok(exclusions)
}

/// The anchored regular expressions, one per dotted part, that pg_dump makes of a name
/// pattern: unquoted letters fold to lower case, `*` and `?` are wildcards, `.` separates
/// schema from table, double quotes keep everything literal.
fn pattern_regexes(pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut parts = vec![String::new()];
    let mut in_quotes = false;
    let mut chars = pattern.trim().chars().peekable();
    while let Some(c) = chars.next() {
        let part = parts.last_mut().expect("one part at least");
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                part.push('"');
            }
            '"' => in_quotes = !in_quotes,
            '*' if !in_quotes => part.push_str(".*"),
            '?' if !in_quotes => part.push('.'),
            '.' if !in_quotes => parts.push(String::new()),
            '$' => part.push_str("\\$"),
            c if !in_quotes => part.extend(c.to_lowercase()),
            c => {
                if "|*+?()[]{}.^\\".contains(c) {
                    part.push('\\');
                }
                part.push(c);
            }
        }
    }
    if in_quotes {
        bail!("--exclude-table-data `{pattern}`: unterminated quoted name");
    }
    Ok(parts.into_iter().map(|p| format!("^({p})$")).collect())
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
        .spawn_tool()
        .with_context(|| format!("starting pg_dump for {source}"))
}

/// Streams a dump of `source` through `sink`; fails with pg_dump's error when the dump failed.
#[allow(clippy::too_many_arguments)]
fn with_dump<T>(
    sh: &Shell,
    tools: &PgTools,
    source: &DbUrl,
    patterns: &[String],
    drop_settings: Vec<&'static str>,
    scrub: &scrub::Plan,
    scan: Option<&leak_scan::Scanner>,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let child = spawn_dump(sh, tools, source, patterns, &[])?;
    pump_dump(
        child,
        source,
        drop_settings,
        &scrub.applied,
        scan,
        false,
        sink,
    )
}

/// Streams a running pg_dump's output, normalised and scrubbed, through `sink`; then checks
/// that pg_dump succeeded. Returns `sink`'s result and the rows each scrub rule changed.
pub fn pump_dump<T>(
    mut child: std::process::Child,
    source: &DbUrl,
    drop_settings: Vec<&'static str>,
    rules: &[scrub::Rule],
    scan: Option<&leak_scan::Scanner>,
    mark_loaded: bool,
    sink: impl FnOnce(&mut dyn std::io::Read) -> anyhow::Result<T>,
) -> anyhow::Result<(T, BTreeMap<String, u64>)> {
    let stderr = restore::collect_stderr(child.stderr.take().unwrap());
    let output = child.stdout.take().unwrap();
    let output: Box<dyn std::io::Read + '_> = match scan {
        Some(scan) => Box::new(scan.reader(output)),
        None => Box::new(output),
    };
    // One pass over the lines for everything done to them: every pass is a copy.
    let mut normalise = dump::normaliser(drop_settings);
    let (mut scrub, counts) = scrub::scrubber(rules);
    let mut mark = mark_loaded.then(parallel::loaded_marker);
    let mut reader = dump::edit_lines(output, move |line| {
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
        && !crate::process::interrupted()
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
    if ["template0", "template1"].contains(&target.database.as_str()) {
        bail!(
            "target {target} is a template database, which every CREATE DATABASE copies: refusing to replace it; name the dev database in the URL"
        );
    }
    if !target.is_loopback() && !guard.allow_remote_target {
        bail!("target {target} is not on this machine: pass --allow-remote-target if you really mean to replace a remote database");
    }
    Ok(())
}

/// Takes the locks on the target database and media directory that keep a second run out,
/// then undoes what a run killed in the middle of its swap left: the new database in place
/// with the old media.
fn take_locks(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    target: &DbUrl,
    media: Option<&Path>,
) -> anyhow::Result<(lock::TargetLock, Option<lock::MediaLock>)> {
    let media = media.map(lock::MediaLock::take).transpose()?;
    let lock = lock::TargetLock::take(sh, tools, admin, target)?;
    if let Some(journal) = media.as_ref().and_then(|m| m.left.clone()) {
        let ours = journal.target == format!("{}/{}", target.host_port(), target.database);
        if ours && journal.staging.exists() && restore::exists(sh, tools, admin, &journal.aside)? {
            term::warn(format!(
                "a run killed during its swap left {target} with the new database but the old media: putting the previous database back"
            ));
            restore::put_back(sh, tools, admin, target, &journal.aside)?;
            let _ = fs::remove_dir_all(&journal.staging);
        }
    }
    Ok((lock, media))
}

/// Records, before the swap, what the next run needs to undo it should this one be killed
/// between the database swap and the media swap.
fn record_swap(
    media_lock: &mut Option<lock::MediaLock>,
    target: &DbUrl,
    staged: &Option<StagedMedia>,
) -> anyhow::Result<()> {
    if let (Some(media_lock), Some(staged)) = (media_lock.as_mut(), staged) {
        media_lock.record(&lock::Journal {
            target: format!("{}/{}", target.host_port(), target.database),
            aside: restore::aside_name(&target.database),
            staging: fs::canonicalize(&staged.dir).unwrap_or_else(|_| staged.dir.to_path_buf()),
        })?;
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
    /// The patterns the user gave (warned about when they match nothing).
    given: &'a [String],
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
            let excluded = excluded_tables(sh, tools, self.source, self.excluded, self.given)?;
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
        let (server, exclusions, media_totals, scrub, encoding) = source_side?;
        let excluded = &exclusions.tables;
        if dry_run {
            print_plan(&[
                format!(
                    "read {} (PostgreSQL {}, read-only session)",
                    self.source, server.version
                ),
                format!(
                    "dump it with pg_dump --no-owner --no-privileges{}",
                    excluded_text(excluded)
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
        if server.same_database(&state.server, state.oid.as_deref()) {
            bail!(
                "source and target are the same database ({} and {} name one database on one server, or on a replica of it): refusing to replace a database with itself",
                self.source,
                self.target
            );
        }
        let drop_settings =
            check_versions(server.major, self.target, state.server.major, self.guard)?;
        let (lock, mut media_lock) = take_locks(sh, tools, &admin, self.target, self.target_media)?;
        confirm_replace(self.target, &state, self.target_media, self.guard)?;
        restore::drop_stale(sh, tools, &admin, &lock.stale);
        let mut timings = Timings::default();
        let staged = match (self.source_media, self.target_media, media_totals) {
            (Some(src), Some(dst), Some(totals)) => {
                Some(timings.time("media copy", || stage_media_copy(src, totals, dst))?)
            }
            _ => None,
        };
        record_swap(&mut media_lock, self.target, &staged)?;
        let mut media = None;
        let mut leaks = None;
        timings.time("database", || {
            term::step(format!("cloning {} into {}", self.source, self.target));
            let bar = term::bytes_progress("restore", None);
            let estimates: Vec<(String, i64)> = excluded
                .iter()
                .map(|(name, rows)| (name.clone(), rows.unwrap_or(0)))
                .collect();
            let left_out: Vec<String> = excluded.iter().map(|(t, _)| t.clone()).collect();
            let load = |temp: &DbUrl| {
                // Uncovered columns are copied verbatim: the scan reads them as they pass.
                let covered = leak_scan::Covered::by_rules(&scrub.applied, &left_out);
                let scanner = leak_scan::Scanner::start(sh, tools, self.source, &covered)?;
                let parallel = parallel::DirectClone {
                    source: self.source,
                    patterns: &exclusions.patterns,
                    excluded: &estimates,
                    drop_settings: drop_settings.clone(),
                    rules: &scrub.applied,
                    bar: &bar,
                    replaces: state.exists,
                    encoding: &encoding,
                    scan: scanner.as_ref(),
                };
                let counts = match parallel.run(sh, tools, temp)? {
                    Some(counts) => counts,
                    None => {
                        let psql = restore::spawn_psql_load(sh, tools, temp)?;
                        with_dump(
                            sh,
                            tools,
                            self.source,
                            &exclusions.patterns,
                            drop_settings.clone(),
                            &scrub,
                            scanner.as_ref(),
                            |reader| {
                                restore::feed_psql(temp, psql, reader, &|n| bar.inc(n)).map(|_| ())
                            },
                        )?
                        .1
                    }
                };
                bar.finish_and_clear();
                if !scrub.applied.is_empty() {
                    scrub.verify(sh, tools, self.source, temp, &left_out)?;
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
            // The media go in after the database; a failure there puts the database back.
            let swap_media = || {
                media = finish_media(Ok(()), staged, self.target_media)?;
                Ok(())
            };
            restore::replace(
                sh,
                tools,
                &admin,
                self.target,
                Some(&encoding),
                load,
                swap_media,
            )
        })?;
        summarise(
            sh,
            tools,
            self.target,
            excluded,
            media,
            leaks.as_ref(),
            &timings,
        );
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

fn excluded_text(excluded: &[(String, Option<i64>)]) -> String {
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
fn left_out_text(excluded: &[(String, Option<i64>)]) -> String {
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
    dir: StagingDir,
    totals: media::Totals,
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
        dir: StagingDir(atomic_file::staging_dir(target)?),
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
    crate::process::check_interrupted()?;
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
    let _lock = lock::MediaLock::take(target)?;
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
    excluded: &[(String, Option<i64>)],
    media: Option<media::Totals>,
    leaks: Option<&leak_scan::Report>,
    timings: &Timings,
) {
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
    term::success(format!(
        "{target}: {tables} tables, {}, {}, {media}; {}; {}",
        term::human_bytes(size),
        left_out_text(excluded),
        leak_scan::summary(leaks),
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
    given: &[String],
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
    if let Some(media) = source_media {
        if resolved(out).starts_with(resolved(media)) {
            bail!(
                "--out {} is inside --source-media {}: the bundle would be written into the media it archives; choose a directory outside it",
                out.display(),
                media.display()
            );
        }
    }
    let server = source_server(sh, tools, source)?;
    let exclusions = excluded_tables(sh, tools, source, patterns, given)?;
    let excluded = &exclusions.tables;
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
                excluded_text(excluded)
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
    let staging = StagingDir(atomic_file::sibling(out, "staging"));
    fs::create_dir(&staging.0).with_context(|| format!("creating {}", staging.0.display()))?;
    let mut timings = Timings::default();
    // Uncovered columns are copied verbatim: the scan reads them as they pass.
    let excluded_names: Vec<String> = excluded.iter().map(|(name, _)| name.clone()).collect();
    let covered = leak_scan::Covered::by_rules(&scrub.applied, &excluded_names);
    let scanner = leak_scan::Scanner::start(sh, tools, source, &covered)?;
    let dumped = timings.time("dump", || {
        term::step(format!("dumping {source} into {}", bundle::SQL));
        let bar = term::bytes_progress("dump", None);
        let path = staging.0.join(bundle::SQL);
        let file =
            fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
        let mut file = dump::RowCounter::new(file);
        let (bytes, counts) = with_dump(
            sh,
            tools,
            source,
            &exclusions.patterns,
            Vec::new(),
            &scrub,
            scanner.as_ref(),
            |reader| {
                let mut counted = ProgressReader {
                    inner: reader,
                    on_bytes: &|n| bar.inc(n),
                };
                Ok(std::io::copy(&mut counted, &mut file)?)
            },
        )?;
        let rows = std::mem::take(&mut file.counts);
        let toc_entries = file.entries;
        file.into_inner().sync_all()?;
        bar.finish_and_clear();
        Ok((bytes, counts, rows, toc_entries))
    })?;
    let (dumped, scrub_counts, rows, toc_entries) = dumped;
    if !scrub.applied.is_empty() {
        term::step(scrub.report(&scrub_counts));
    }
    let leaks = scanner.map(leak_scan::Scanner::report);
    leak_scan::check(leaks.as_ref(), scrub_flags.strict, "no bundle was written")?;
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
    let manifest = bundle::Manifest {
        format: bundle::FORMAT,
        tool: bundle::Manifest::tool(),
        created_at: Some(
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        ),
        source: bundle::SourceInfo {
            host: Some(source.host.clone().unwrap_or_else(|| "localhost".into())),
            port: Some(source.port),
            database: Some(source.database.clone()),
            server_version: Some(server.version.clone()),
            server_major: server.major,
            encoding,
        },
        excluded_table_data: excluded_names,
        entries: toc_entries,
        rows,
        sql_bytes: Some(dumped),
        scrub: (!scrub_flags.no_scrub).then(|| scrub.manifest(Some(&scrub_counts))),
        leaks: leaks
            .as_ref()
            .map(|report| report.findings.clone())
            .unwrap_or_default(),
        media: media_totals.map(|t| bundle::MediaRecord {
            files: t.files,
            bytes: t.bytes,
        }),
    };
    fs::write(staging.0.join(bundle::MANIFEST), manifest.text())?;
    let sums = bundle::sums_for(&staging.0, &names)?;
    fs::write(staging.0.join(bundle::SUMS), sums)?;
    crate::process::check_interrupted()?;
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
        "bundle written to {}: {} of SQL{media}; {}; {}",
        out.display(),
        term::human_bytes(dumped),
        leak_scan::summary(leaks.as_ref()),
        timings.line()
    ));
    Ok(())
}

/// A directory being filled; removed unless it was renamed into place.
struct ProgressReader<'a, R: ?Sized> {
    inner: &'a mut R,
    on_bytes: &'a dyn Fn(u64),
}

impl<R: std::io::Read + ?Sized> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        crate::process::check_interrupted()
            // Not `ErrorKind::Interrupted`: `io::copy` retries that kind for ever.
            .map_err(|_| std::io::Error::other("interrupted"))?;
        let n = self.inner.read(buf)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}

/// Reads `sql` once and checks that it is whole before anything is loaded: it ends as
/// pg_dump ends a finished dump, and holds exactly the rows the manifest recorded.
/// Refuses a dump whose lines before its first table-of-contents entry are not the session
/// settings pg_dump writes there: a parallel load runs them in every session.
fn check_preamble(sql: &Path, end: u64) -> anyhow::Result<()> {
    const MOST: u64 = 64 << 10;
    let mut text = Vec::new();
    fs::File::open(sql)
        .and_then(|file| {
            use std::io::Read;
            file.take(end.min(MOST + 1)).read_to_end(&mut text)
        })
        .with_context(|| format!("reading {}", sql.display()))?;
    // The settings pg_dump 9.6 to 17 put there, one statement a line.
    const SETTINGS: &[&str] = &[
        "statement_timeout",
        "lock_timeout",
        "idle_in_transaction_session_timeout",
        "transaction_timeout",
        "client_encoding",
        "standard_conforming_strings",
        "check_function_bodies",
        "xmloption",
        "client_min_messages",
        "row_security",
        "default_with_oids",
        "default_tablespace",
        "default_table_access_method",
    ];
    let setting = |line: &[u8]| {
        let line = std::str::from_utf8(line).ok()?;
        let (name, value) = line
            .strip_prefix("SET ")?
            .strip_suffix(';')?
            .split_once(" = ")?;
        let plain = value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "'_-.".contains(c));
        (SETTINGS.contains(&name) && plain).then_some(())
    };
    let pg_dump_writes = |line: &&[u8]| {
        line.is_empty()
            || line.starts_with(b"--")
            || setting(line).is_some()
            || *line == b"SELECT pg_catalog.set_config('search_path', '', false);"
            || [&b"\\restrict "[..], b"\\unrestrict "]
                .iter()
                .any(|command| {
                    line.strip_prefix(*command)
                        .is_some_and(|key| key.iter().all(u8::is_ascii_alphanumeric))
                })
    };
    let odd = text
        .split(|&b| b == b'\n')
        .find(|line| !pg_dump_writes(line));
    if end > MOST || odd.is_some() {
        let line = String::from_utf8_lossy(odd.unwrap_or_default());
        let line: String = line.chars().take(60).collect();
        bail!(
            "{} holds `{line}` before its first table-of-contents entry, where pg_dump writes only session settings: not a dump this tool loads, nothing was changed; export the bundle again",
            sql.display()
        );
    }
    Ok(())
}

fn check_complete(sql: &Path, manifest: &bundle::Manifest) -> anyhow::Result<toc::Toc> {
    let file = fs::File::open(sql).with_context(|| format!("reading {}", sql.display()))?;
    let toc = toc::scan(std::io::BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("reading {}", sql.display()))?;
    if !toc.complete {
        bail!(
            "{} is cut short: it does not end as a finished pg_dump ends, nothing was changed; export the bundle again",
            sql.display()
        );
    }
    check_preamble(sql, toc.header_end)?;
    if let Some((line, words)) = &toc.foreign {
        bail!(
            "{}, line {line}: a {words} statement, which acts beyond the database and which pg_dump never writes into a dump: \
             not a dump this tool loads, nothing was changed",
            sql.display()
        );
    }
    if toc.entries.len() as u64 != manifest.entries {
        bail!(
            "{} has {} table-of-contents entries where {} recorded {}, nothing was changed; export the bundle again",
            sql.display(),
            toc.entries.len(),
            bundle::MANIFEST,
            manifest.entries
        );
    }
    if toc.rows.contains_key("") {
        bail!(
            "{} has a COPY line that names its table in a way pg_dump does not write: not a dump this tool loads, nothing was changed",
            sql.display()
        );
    }
    if toc.rows != manifest.rows {
        let differ = toc
            .rows
            .keys()
            .chain(manifest.rows.keys())
            .find(|table| toc.rows.get(*table) != manifest.rows.get(*table))
            .expect("the maps differ");
        let count = |rows: &BTreeMap<String, u64>| {
            rows.get(differ).map_or("no".to_string(), |n| n.to_string())
        };
        bail!(
            "{} holds {} rows of {differ} where {} recorded {}, nothing was changed; export the bundle again",
            sql.display(),
            count(&toc.rows),
            bundle::MANIFEST,
            count(&manifest.rows)
        );
    }
    Ok(toc)
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
    /// Fail when the leak scan finds anything (--strict).
    pub strict: bool,
}

impl Load<'_> {
    pub fn run(&self, sh: &Shell, tools: &PgTools, dry_run: bool) -> anyhow::Result<()> {
        guard_target(self.target, self.guard)?;
        let listed = bundle::verify_sums(self.dir)?;
        let manifest = bundle::Manifest::read(self.dir)?;
        manifest.check_files(self.dir, &listed, self.media == MediaForm::Archive)?;
        let media_sums = match listed.contains_key(bundle::MEDIA_SUMS) {
            true => Some(media::parse_sums(
                &fs::read(self.dir.join(bundle::MEDIA_SUMS))?,
                bundle::MEDIA_SUMS,
            )?),
            false => None,
        };
        if let (Some(sums), Some(record)) = (&media_sums, &manifest.media) {
            if sums.len() as u64 != record.files {
                bail!(
                    "bundle {}: {} lists {} media files while {} records {}, nothing was changed: export the bundle again",
                    self.dir.display(),
                    bundle::MEDIA_SUMS,
                    sums.len(),
                    bundle::MANIFEST,
                    record.files
                );
            }
        }
        if let Some(target_media) = self.target_media {
            atomic_file::parent_dir(target_media).context("--target-media")?;
            if media_sums.is_some() {
                check_apart("--bundle", self.dir, target_media)?;
                check_holds_nothing_else(target_media)?;
                atomic_file::check_swappable(target_media)?;
            }
        }
        let sql = self.dir.join(bundle::SQL);
        let toc = check_complete(&sql, &manifest)?;
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
        let source_major = manifest.source.server_major;
        let drop_settings =
            check_versions(source_major, self.target, state.server.major, self.guard)?;
        let replaced_media = self.target_media.filter(|_| media_sums.is_some());
        let (lock, mut media_lock) = take_locks(sh, tools, &admin, self.target, replaced_media)?;
        confirm_replace(self.target, &state, replaced_media, self.guard)?;
        restore::drop_stale(sh, tools, &admin, &lock.stale);
        let mut timings = Timings::default();
        let staged = match (&media_sums, self.target_media) {
            (Some(sums), Some(target)) => {
                let expected = manifest.media.as_ref();
                Some(timings.time("media", || self.stage_media(sums, expected, target))?)
            }
            (Some(_), None) => {
                term::step("media: not loaded (no --target-media or NETPOINT_MEDIA_ROOT)");
                None
            }
            (None, _) => None,
        };
        record_swap(&mut media_lock, self.target, &staged)?;
        let mut media = None;
        let mut leaks = None;
        timings.time("database", || {
            let size = toc.len;
            term::step(format!(
                "loading {} ({}) into {}",
                sql.display(),
                term::human_bytes(size),
                self.target
            ));
            let bar = term::bytes_progress("restore", Some(size));
            let encoding = &manifest.source.encoding;
            let covered = leak_scan::Covered::by_manifest(&manifest);
            let load = |temp: &DbUrl| {
                let parallel = parallel::load_file(
                    sh,
                    tools,
                    temp,
                    &sql,
                    &toc,
                    &drop_settings,
                    &bar,
                    state.exists,
                    &covered,
                )?;
                let streamed = match parallel {
                    parallel::FileLoad::Loaded(report) => Some(report),
                    parallel::FileLoad::OneStream => {
                        let psql = restore::spawn_psql_load(sh, tools, temp)?;
                        let mut reader =
                            dump::normalising_reader(fs::File::open(&sql)?, drop_settings.clone());
                        restore::feed_psql(temp, psql, &mut reader, &|n| bar.inc(n))?;
                        None
                    }
                };
                restore::check_row_counts(sh, tools, temp, &manifest.rows)?;
                bar.finish_and_clear();
                // One stream holds schema and rows: the loaded database is scanned instead.
                let report = match streamed {
                    Some(report) => report,
                    None => leak_scan::scan(sh, tools, temp, &covered)?,
                };
                leak_scan::check(report.as_ref(), self.strict, "the target is untouched")?;
                leaks = report;
                Ok(())
            };
            let swap_media = || {
                media = finish_media(Ok(()), staged, self.target_media)?;
                Ok(())
            };
            restore::replace(
                sh,
                tools,
                &admin,
                self.target,
                Some(encoding),
                load,
                swap_media,
            )
        })?;
        let excluded: Vec<(String, Option<i64>)> = manifest
            .excluded_table_data
            .iter()
            .map(|name| (name.clone(), None))
            .collect();
        summarise(
            sh,
            tools,
            self.target,
            &excluded,
            media,
            leaks.as_ref(),
            &timings,
        );
        Ok(())
    }

    fn stage_media(
        &self,
        sums: &BTreeMap<PathBuf, String>,
        expected: Option<&bundle::MediaRecord>,
        target: &Path,
    ) -> anyhow::Result<StagedMedia> {
        atomic_file::remove_stale_staging(target);
        let dir = StagingDir(atomic_file::staging_dir(target)?);
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
        if let Some(record) = expected {
            if (staged.totals.files, staged.totals.bytes) != (record.files, record.bytes) {
                bail!(
                    "bundle {}: its media hold {} files of {} bytes while {} records {} files of {} bytes, nothing was changed: export the bundle again",
                    self.dir.display(),
                    staged.totals.files,
                    staged.totals.bytes,
                    bundle::MANIFEST,
                    record.files,
                    record.bytes
                );
            }
        }
        crate::process::check_interrupted()?;
        Ok(staged)
    }
}
