//! `cargo xtask seed-dev`: a working dev database and media from the committed fixtures,
//! in a local Docker container when no database is configured; and `--refresh`, which
//! regenerates those fixtures deterministically from a database.

use std::{
    collections::BTreeMap,
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use xshell::Shell;

use crate::{
    atomic_file, bundle,
    cli::{self, GuardFlags, ScrubFlags, SubsetFlags, SubsetRequest},
    context::Context,
    media,
    mode::{self, Mode},
    pg::{self, dev_container::DevContainer, Access, DbUrl, Tool},
    pipeline::{
        import::{Import, MediaForm, Trust},
        leak_scan, schema, scrub, source,
        subset::{files::media_entries, load::Fill, Subset},
    },
    plain::{copy, lines},
    term,
};

/// Seed a dev database and media from fixtures/, or regenerate the fixtures (--refresh).
#[derive(Debug, clap::Args)]
pub struct SeedDev {
    /// Fixtures to load or regenerate [default: fixtures/].
    #[arg(long, value_name = "DIR")]
    fixtures: Option<PathBuf>,
    /// Dev database to replace [default: $NETPOINT_DATABASE_URL, else a local Docker container].
    #[arg(long, value_name = "URL", conflicts_with = "refresh")]
    target: Option<String>,
    /// Dev media directory to replace [default: $NETPOINT_MEDIA_ROOT, else netpoint/media].
    #[arg(long, value_name = "DIR", conflicts_with = "refresh")]
    target_media: Option<PathBuf>,
    #[command(flatten)]
    guard: GuardFlags,
    /// Regenerate the fixtures from --source instead of seeding.
    #[arg(long)]
    refresh: bool,
    /// With --refresh: the database to read [default: $NETPOINT_DATABASE_URL].
    #[arg(long, value_name = "URL", requires = "refresh")]
    source: Option<String>,
    /// With --refresh: the media directory to copy [default: keep the fixtures' media].
    #[arg(long, value_name = "DIR", requires = "refresh")]
    source_media: Option<PathBuf>,
    /// With --refresh: write nothing; fail with a summary when the fixtures are out of date.
    #[arg(long, requires = "refresh", conflicts_with = "dry_run")]
    check: bool,
    /// Print the plan and change nothing (no container is started).
    #[arg(long, conflicts_with_all = ["stop", "destroy"])]
    dry_run: bool,
    #[command(flatten)]
    scrub: ScrubFlags,
    /// Stop the local dev-database container (its data is kept).
    #[arg(long, conflicts_with_all = ["refresh", "destroy", "target"])]
    stop: bool,
    /// Remove the local dev-database container and its data volume.
    #[arg(long, conflicts_with_all = ["refresh", "target"])]
    destroy: bool,
    /// With --refresh: fixtures made from a subset of the source.
    #[command(flatten)]
    subset: SubsetFlags,
}

impl SeedDev {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let mode = Mode::from_flags(self.check, self.dry_run);
        let fixtures = self
            .fixtures
            .clone()
            .unwrap_or_else(|| sh.current_dir().join("fixtures"));
        if self.stop {
            return DevContainer::new(sh).stop(sh);
        }
        if self.destroy {
            return DevContainer::new(sh).destroy(sh, self.guard.yes);
        }
        if let (Some(flag), false) = (self.subset.given().first(), self.refresh) {
            anyhow::bail!(
                "{flag} shapes the fixtures a refresh makes: use it with --refresh --source URL"
            );
        }
        if self.refresh {
            let source = cli::required_dev_database(self.source.clone(), "--source")?;
            let subset = self.subset.request()?;
            let refresh = Refresh {
                source: &source,
                source_media: self.source_media.as_deref(),
                fixtures: &fixtures,
                scrub: &self.scrub.options(),
                fix: self.refresh_command(sh, &source, &fixtures),
                subset: subset.as_ref(),
            };
            return refresh.run(cx, mode);
        }
        let mut provides_target = None;
        let target = match cli::dev_database(self.target.clone())? {
            Some(url) => url,
            None if mode == Mode::DryRun => {
                let container = DevContainer::new(sh);
                provides_target = Some(container.plan(sh)?);
                container.planned_url()?
            }
            None => DevContainer::new(sh).ensure(sh, tools)?,
        };
        let target_media = cli::dev_media(self.target_media.clone()).unwrap_or_else(|| {
            let default = sh.current_dir().join("netpoint/media");
            if mode != Mode::DryRun {
                let _ = fs::create_dir_all(default.parent().unwrap());
            }
            default
        });
        let import = Import {
            dir: &fixtures,
            // Fixtures, and any --fixtures directory, are reviewed in the repository, not signed.
            trust: Trust::Reviewed,
            media: MediaForm::Tree,
            target: &target,
            target_media: Some(&target_media),
            guard: &self.guard.guard(),
            strict: self.scrub.strict,
            provides_target,
        };
        import.run(cx, mode)?;
        if mode == Mode::DryRun {
            return Ok(());
        }
        println!("NETPOINT_DATABASE_URL={}", shareable_url(&target));
        println!("NETPOINT_MEDIA_ROOT={}", target_media.display());
        Ok(())
    }
}

impl SeedDev {
    /// The command that regenerates the fixtures as this run would: what `--check` names.
    fn refresh_command(&self, sh: &Shell, source: &DbUrl, fixtures: &Path) -> String {
        let mut command = String::from("cargo xtask seed-dev --refresh");
        if self.source.is_some() {
            command.push_str(&format!(" --source '{}'", source.masked()));
        }
        if let Some(media) = &self.source_media {
            command.push_str(&format!(
                " --source-media {}",
                term::display_path(sh, media)
            ));
        }
        if fixtures != sh.current_dir().join("fixtures") {
            command.push_str(&format!(" --fixtures {}", term::display_path(sh, fixtures)));
        }
        for root in &self.subset.subset {
            command.push_str(&format!(" --subset {}", quoted(root)));
        }
        if let Some(rules) = &self.subset.subset_rules {
            command.push_str(&format!(
                " --subset-rules {}",
                term::display_path(sh, rules)
            ));
        }
        if let Some(sample) = &self.subset.sample {
            command.push_str(&format!(" --sample {}", quoted(sample)));
        }
        command
    }
}

/// `word` as a shell reads it back: bare when it is plain, else in single quotes.
fn quoted(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "=%._-/:".contains(c);
    match !word.is_empty() && word.chars().all(plain) {
        true => word.to_string(),
        false => format!("'{}'", word.replace('\'', "'\\''")),
    }
}

/// The URL to give the application: as configured, but never with a password in it.
fn shareable_url(url: &DbUrl) -> String {
    let mut text = url.masked();
    if let Some((_, passfile)) = url.params.iter().find(|(key, _)| key == "PGPASSFILE") {
        text.push_str(&format!("?passfile={passfile}"));
    }
    text
}

/// Regenerating the fixtures from a database.
struct Refresh<'a> {
    source: &'a DbUrl,
    source_media: Option<&'a Path>,
    fixtures: &'a Path,
    scrub: &'a scrub::Options,
    /// The command that regenerates these fixtures, named when a check finds them stale.
    fix: String,
    subset: Option<&'a SubsetRequest>,
}

impl Refresh<'_> {
    fn run(&self, cx: &Context, mode: Mode) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let server = tools.server(sh, self.source, Access::ReadOnly)?;
        tools.check_dump_compatible(sh, &server)?;
        atomic_file::parent_dir(self.fixtures)?;
        // Computed before anything is written: a bad root changes nothing.
        let mut subset = self
            .subset
            .map(|r| Subset::compute(cx, self.source, &r.rules, &r.roots, r.sample))
            .transpose()?;
        if mode == Mode::DryRun {
            let scrub = self.scrub.plan(cx, self.source)?;
            let media = match self.source_media {
                Some(media) => format!(
                    "copy the media of {} into {}/{}",
                    media.display(),
                    self.fixtures.display(),
                    bundle::MEDIA_DIR
                ),
                None => format!(
                    "keep the media in {}/{}",
                    self.fixtures.display(),
                    bundle::MEDIA_DIR
                ),
            };
            mode::print_plan(&[
                format!(
                    "read {} (PostgreSQL {}, read-only session)",
                    self.source, server.version
                ),
                format!(
                    "dump {} with rows sorted and without the data of {}",
                    match &self.subset {
                        Some(r) => format!("the subset {}", r.record.roots.join(", ")),
                        None => "it".to_string(),
                    },
                    source::CHANGELOG_TABLES.join(", ")
                ),
                format!(
                    "scrub {} rules in the stream ({} skipped)",
                    scrub.applied.len(),
                    scrub.skipped.len()
                ),
                format!(
                    "write {}, schema.sql and {} beside {}, then {}",
                    bundle::SQL,
                    bundle::MANIFEST,
                    self.fixtures.display(),
                    bundle::SUMS
                ),
                media,
                format!("swap the new fixtures into {}", self.fixtures.display()),
            ]);
            return Ok(());
        }
        atomic_file::remove_stale_siblings(self.fixtures);
        let staging = atomic_file::StagingDir(atomic_file::sibling(self.fixtures, "staging"));
        fs::create_dir(&staging.0).with_context(|| format!("creating {}", staging.0.display()))?;
        self.write(cx, &server, &staging.0, subset.as_mut())?;
        if mode == Mode::Check {
            let changes = compare(self.fixtures, &staging.0)?;
            if changes.is_empty() {
                mode::up_to_date(format!(
                    "fixtures in {} are up to date",
                    self.fixtures.display()
                ));
                return Ok(());
            }
            for change in &changes {
                println!("{change}");
            }
            return Err(mode::out_of_date(
                format!(
                    "fixtures in {} are out of date ({} changes)",
                    self.fixtures.display(),
                    changes.len()
                ),
                &self.fix,
            ));
        }
        // Files in fixtures/ that the refresh does not produce are kept as they are.
        if let Ok(entries) = fs::read_dir(self.fixtures) {
            for entry in entries.flatten() {
                let to = staging.0.join(entry.file_name());
                if !to.exists() && entry.file_type()?.is_file() {
                    fs::copy(entry.path(), &to)?;
                }
            }
        }
        atomic_file::replace_dir(&staging.0, self.fixtures)?;
        term::success(format!(
            "fixtures in {} regenerated from {}",
            self.fixtures.display(),
            self.source
        ));
        Ok(())
    }

    fn write(
        &self,
        cx: &Context,
        server: &pg::Server,
        dir: &Path,
        mut subset: Option<&mut Subset>,
    ) -> anyhow::Result<()> {
        term::step(format!(
            "dumping {} (rows sorted, no changelog data)",
            self.source
        ));
        let excluded: Vec<String> = source::CHANGELOG_TABLES
            .iter()
            .map(|t| format!("public.{t}"))
            .collect();
        let dump = match subset.as_deref_mut() {
            Some(subset) => {
                let fill = Fill {
                    left_out: &excluded,
                    rules: &[],
                    scan: None,
                    drop_settings: Vec::new(),
                };
                let mut script = Vec::new();
                let schema = subset.schema()?;
                subset.write_script(&fill, &schema, &mut script)?;
                script
            }
            None => self.dump(cx)?,
        };
        self.write_from(cx, server, dir, &dump, excluded, subset)
    }

    /// The whole source, as pg_dump writes it.
    fn dump(&self, cx: &Context) -> anyhow::Result<Vec<u8>> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let excludes: Vec<String> = source::CHANGELOG_TABLES
            .iter()
            .map(|t| format!("--exclude-table-data={t}"))
            .collect();
        let cmd = tools
            .cmd(sh, Tool::PgDump, self.source, Access::ReadOnly)?
            .args(["--format=plain", "--no-owner", "--no-privileges"])
            .args(&excludes)
            .ignore_status();
        pg::log(&cmd, self.source);
        let out = cmd
            .output()
            .with_context(|| format!("running pg_dump against {}", self.source))?;
        if !out.status.success() {
            return Err(pg::explain_failure(
                self.source,
                &String::from_utf8_lossy(&out.stderr),
            ))
            .context("pg_dump failed");
        }
        Ok(out.stdout)
    }

    /// The fixtures from `dump`: scrubbed, sorted, scanned, with their schema and media.
    fn write_from(
        &self,
        cx: &Context,
        server: &pg::Server,
        dir: &Path,
        dump: &[u8],
        excluded: Vec<String>,
        subset: Option<&mut Subset>,
    ) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        let scrub = self.scrub.plan(cx, self.source)?;
        let (scrubbed, counts) = scrub::scrubbing_reader(dump, &scrub.applied);
        let (mut rows, mut entries) = Default::default();
        atomic_file::write(&dir.join(bundle::SQL), |file| {
            let mut counter = lines::RowCounter::new(file);
            lines::normalise_sorted(io::BufReader::new(scrubbed), &mut counter)?;
            (rows, entries) = (counter.counts, counter.entries);
            Ok(())
        })?;
        let counts = counts.borrow().clone();
        if !scrub.applied.is_empty() {
            term::step(scrub.report(&counts));
        }
        let covered = leak_scan::Covered::by_rules(&scrub.applied, &excluded);
        let leaks = leak_scan::Scanner::start(cx, self.source, &covered)?.map(|scanner| {
            scanner.scan_bytes(dump);
            scanner.report()
        });
        leak_scan::check(
            leaks.as_ref(),
            self.scrub.strict,
            "the fixtures are unchanged",
        )?;
        term::step(leak_scan::summary(leaks.as_ref()));
        let schema = schema::snapshot(cx, self.source, None)?;
        fs::write(dir.join("schema.sql"), schema)?;

        let media_root = dir.join(bundle::MEDIA_DIR);
        let current_media = self.fixtures.join(bundle::MEDIA_DIR);
        let from = match self.source_media {
            Some(from) => Some(from.to_path_buf()),
            None if current_media.is_dir() => {
                term::step("media: keeping the fixtures' media (no --source-media given)");
                Some(current_media)
            }
            None => None,
        };
        // A subset's own media: only the files its rows name.
        let names = match (subset, self.subset, self.source_media) {
            (Some(subset), Some(request), Some(_)) => Some(subset.media_files(&request.rules)?),
            _ => None,
        };
        let totals = match from {
            Some(from) => {
                let mut entries = media::scan(&from)?;
                if let Some(names) = &names {
                    let (kept, missing) = media_entries(entries, names);
                    if let Some(first) = missing.first() {
                        term::warn(format!(
                            "{} media files the subset names are not in {} (such as {first}): the rows keep their names",
                            missing.len(),
                            from.display()
                        ));
                    }
                    entries = kept;
                }
                let hashed = media::copy_verified(&from, &entries, &media_root, &|_| {})?;
                fs::write(dir.join(bundle::MEDIA_SUMS), media::sha256_list(&hashed))?;
                Some(media::totals(&hashed))
            }
            None => None,
        };
        let encoding = tools.query(sh, self.source, Access::ReadOnly, "select pg_encoding_to_char(encoding) from pg_database where datname = current_database()")?;
        // No time, host or tool version: two refreshes of one database give the same bytes.
        let manifest = bundle::Manifest {
            format: bundle::FORMAT,
            tool: bundle::ToolInfo {
                name: bundle::Manifest::tool().name,
                version: None,
            },
            created_at: None,
            source: bundle::SourceInfo {
                host: None,
                port: None,
                ssh: None,
                database: None,
                server_version: None,
                server_major: server.major,
                encoding,
            },
            excluded_table_data: excluded,
            entries,
            rows,
            sql_bytes: None,
            scrub: (!self.scrub.no_scrub).then(|| scrub.manifest(None)),
            // Columns and counts only, in name order: the same data gives the same bytes.
            leaks: leaks.map(|report| report.findings).unwrap_or_default(),
            media: totals.map(|t| bundle::MediaRecord {
                files: t.files,
                bytes: t.bytes,
            }),
            subset: self.subset.map(|r| r.record.clone()),
        };
        fs::write(dir.join(bundle::MANIFEST), manifest.text())?;
        let mut names = vec![bundle::SQL, bundle::MANIFEST];
        if totals.is_some() {
            names.push(bundle::MEDIA_SUMS);
        }
        fs::write(dir.join(bundle::SUMS), bundle::sums_for(dir, &names)?)?;
        Ok(())
    }
}

/// What a refresh would change, one line each: tables whose rows changed, the schema,
/// media added, removed or changed.
fn compare(current: &Path, fresh: &Path) -> anyhow::Result<Vec<String>> {
    let mut changes = Vec::new();
    let read = |dir: &Path, name: &str| fs::read_to_string(dir.join(name)).unwrap_or_default();
    let (old_sql, new_sql) = (read(current, bundle::SQL), read(fresh, bundle::SQL));
    if old_sql != new_sql {
        let old_rows: BTreeMap<String, Vec<&str>> =
            copy::copy_blocks(&old_sql).into_iter().collect();
        let new_rows: BTreeMap<String, Vec<&str>> =
            copy::copy_blocks(&new_sql).into_iter().collect();
        for (table, rows) in &new_rows {
            match old_rows.get(table) {
                None => changes.push(format!("table {table}: new ({} rows)", rows.len())),
                Some(old) if old != rows => {
                    let added = rows.iter().filter(|r| !old.contains(r)).count();
                    let removed = old.iter().filter(|r| !rows.contains(r)).count();
                    changes.push(format!("table {table}: rows changed (+{added} -{removed})"));
                }
                Some(_) => {}
            }
        }
        for table in old_rows.keys().filter(|t| !new_rows.contains_key(*t)) {
            changes.push(format!("table {table}: removed"));
        }
        if schema_part(&old_sql) != schema_part(&new_sql) {
            changes.push(format!(
                "{}: schema or sequence values changed",
                bundle::SQL
            ));
        }
    }
    let old_media = media_on_disk(current)?;
    let new_media = media_on_disk(fresh)?;
    for (name, hash) in &new_media {
        let shown = name.display();
        match old_media.get(name) {
            None => changes.push(format!("media {shown}: added")),
            Some(old) if old != hash => changes.push(format!("media {shown}: changed")),
            Some(_) => {}
        }
    }
    for name in old_media.keys().filter(|n| !new_media.contains_key(*n)) {
        changes.push(format!("media {}: removed", name.display()));
    }
    if read(current, "schema.sql") != read(fresh, "schema.sql") {
        changes.push("schema.sql: changed".to_string());
    }
    if changes.is_empty() {
        let bytes = |dir: &Path, name: &str| fs::read(dir.join(name)).unwrap_or_default();
        if bytes(current, bundle::MEDIA_SUMS) != bytes(fresh, bundle::MEDIA_SUMS) {
            changes.push(format!("{}: changed", bundle::MEDIA_SUMS));
        } else if [bundle::MANIFEST, bundle::SUMS]
            .iter()
            .any(|n| read(current, n) != read(fresh, n))
        {
            changes.push(format!("{}: changed", bundle::MANIFEST));
        }
    }
    Ok(changes)
}

/// `file → SHA-256` of the media a fixtures directory holds, read from the files themselves:
/// a file edited or dropped in by hand differs from its media.sha256 line, and the files are
/// what a seed loads.
fn media_on_disk(fixtures: &Path) -> anyhow::Result<BTreeMap<PathBuf, String>> {
    let root = fixtures.join(bundle::MEDIA_DIR);
    if !root.is_dir() {
        return Ok(BTreeMap::new());
    }
    let entries = media::scan(&root)?;
    let hashed = media::hash_all(&root, &entries, &|_| {})?;
    Ok(hashed.into_iter().map(|f| (f.rel, f.sha256)).collect())
}

/// A dump without its COPY data, for telling schema changes from data changes.
fn schema_part(sql: &str) -> String {
    let mut out = String::new();
    let mut in_copy = false;
    for line in sql.lines() {
        if in_copy {
            in_copy = line != "\\.";
            continue;
        }
        in_copy = copy::is_copy_start(line.as_bytes());
        out.push_str(line);
        out.push('\n');
    }
    out
}
