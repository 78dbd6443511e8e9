//! The export: production's database and media into a new bundle directory.

use std::{fs, path::Path};

use anyhow::{bail, Context as _};

use super::{subset as subset_export, SourceSide};
use crate::{
    atomic_file::{self, StagingDir},
    bundle::{self, sign::SigningKey},
    cli::SubsetRequest,
    context::Context,
    media,
    mode::{print_plan, Mode},
    pg::DbUrl,
    pipeline::{
        dump::{with_dump, Dump, ProgressReader},
        leak_scan,
        report::{excluded_text, media_plan, Timings},
        scrub,
        staged_media::MediaSource,
        subset::{load::Fill, Subset},
    },
    plain::lines,
    process::{self},
    term,
};

/// An export of the source into a new bundle directory.
pub struct Export<'a> {
    pub source: &'a DbUrl,
    pub source_media: Option<&'a Path>,
    /// The patterns whose table data is left out.
    pub patterns: &'a [String],
    /// The patterns the user gave (warned about when they match nothing).
    pub given: &'a [String],
    pub scrub: &'a scrub::Options,
    pub out: &'a Path,
    pub sign_key: Option<&'a SigningKey>,
    /// A subset of the source instead of all of it.
    pub subset: Option<&'a SubsetRequest>,
    /// With a subset, media on the SSH host: only the files the subset names are fetched,
    /// once it is computed, into a directory beside the bundle.
    pub remote_media: Option<&'a MediaSource<'a>>,
}

impl Export<'_> {
    pub fn run(&self, cx: &Context, mode: Mode) -> anyhow::Result<()> {
        let Export {
            source,
            source_media,
            patterns,
            given,
            scrub: scrub_flags,
            out,
            sign_key,
            subset: request,
            remote_media,
        } = *self;
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
            if atomic_file::resolved(out).starts_with(atomic_file::resolved(media)) {
                bail!(
                    "--out {} is inside --source-media {}: the bundle would be written into the media it archives; choose a directory outside it",
                    out.display(),
                    media.display()
                );
            }
        }
        let media = || source_media.map(media::scan).transpose();
        let (side, entries) = SourceSide::inspect(cx, source, patterns, given, scrub_flags, media)?;
        let SourceSide {
            server,
            exclusions,
            scrub,
            encoding,
        } = &side;
        let excluded = &exclusions.tables;
        // Computed before anything is written: a bad root writes nothing.
        let mut subset = request
            .map(|request| {
                let session = Subset::open(cx, source, &request.roots)?;
                subset_export::compute(cx, session, request, None)
            })
            .transpose()?;
        let mut missing_files = Vec::new();
        // The files a subset over SSH names, fetched into a directory removed at the end.
        let mut fetched = None;
        let entries = match (&mut subset, request, entries, remote_media) {
            (Some(subset), Some(request), _, Some(remote)) => {
                let names = subset.media_files(&request.rules)?;
                let count = remote.count()?;
                if mode == Mode::DryRun {
                    print_plan(&[format!(
                        "fetch the {} media files the subset names from {}, to archive them",
                        names.len(),
                        remote.shown()
                    )]);
                    None
                } else {
                    let dir = tempfile::Builder::new()
                        .prefix(".netpoint-media-fetch-")
                        .tempdir_in(atomic_file::parent_dir(out).context("--out")?)
                        .context("creating a directory beside --out for the media")?;
                    let into = dir.path().join("media");
                    term::step(format!(
                        "fetching the {} media files the subset names from {}",
                        names.len(),
                        remote.shown()
                    ));
                    missing_files = remote.fetch_listed_into(&count, &names, &into)?;
                    let entries = media::scan(&into)?;
                    fetched = Some((dir, into));
                    Some(entries)
                }
            }
            (Some(subset), Some(request), Some(entries), None) => {
                let names = subset.media_files(&request.rules)?;
                let (kept, missing) =
                    crate::pipeline::subset::files::media_entries(entries, &names);
                missing_files = missing;
                Some(kept)
            }
            (_, _, entries, _) => entries,
        };
        let source_media = match &fetched {
            Some((_, into)) => Some(into.as_path()),
            None => source_media,
        };
        if mode == Mode::DryRun {
            print_plan(&[
                side.scrub_plan(),
                side.read_plan(source),
                match &subset {
                    Some(subset) => format!(
                        "{}; write it to {}/{}",
                        subset_export::plan_line(subset),
                        out.display(),
                        bundle::SQL
                    ),
                    None => format!(
                        "dump it to {}/{}{}",
                        out.display(),
                        bundle::SQL,
                        excluded_text(excluded)
                    ),
                },
                media_plan(
                    source_media.map(|p| p.display().to_string()).as_deref(),
                    None,
                    entries.as_deref().map(media::scan_totals),
                ),
                format!(
                    "write {}, {} and {}",
                    bundle::MEDIA_SUMS,
                    bundle::MANIFEST,
                    bundle::SUMS
                ),
                signing_plan(sign_key),
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
        let scanner = leak_scan::Scanner::start(cx, source, &covered)?;
        let dumped = timings.time("dump", || {
            term::step(format!("dumping {source} into {}", bundle::SQL));
            let bar = term::bytes_progress("dump", None);
            let path = staging.0.join(bundle::SQL);
            let file =
                fs::File::create(&path).with_context(|| format!("writing {}", path.display()))?;
            let mut file = lines::RowCounter::new(file);
            if let Some(subset) = subset.as_mut() {
                let fill = Fill {
                    left_out: &excluded_names,
                    rules: &scrub.applied,
                    scan: scanner.as_ref(),
                    drop_settings: Vec::new(),
                };
                let schema = subset.schema()?;
                let loaded = subset.write_script(&fill, &schema, &mut file)?;
                let rows = std::mem::take(&mut file.counts);
                let toc_entries = file.entries;
                let file = file.into_inner();
                file.sync_all()?;
                let bytes = file.metadata()?.len();
                bar.finish_and_clear();
                return Ok((bytes, loaded.scrubbed, rows, toc_entries));
            }
            let dump = Dump {
                source,
                patterns: &exclusions.patterns,
                drop_settings: Vec::new(),
                scrub,
                scan: scanner.as_ref(),
            };
            let (bytes, counts) = with_dump(cx, dump, |reader| {
                let mut counted = ProgressReader {
                    inner: reader,
                    on_bytes: &|n| bar.inc(n),
                };
                Ok(std::io::copy(&mut counted, &mut file)?)
            })?;
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
        match (remote_media, source_media) {
            (Some(remote), _) if subset.is_some() => {
                subset_export::warn_missing(&missing_files, &remote.shown())
            }
            (_, Some(root)) if subset.is_some() => {
                subset_export::warn_missing(&missing_files, &root.display().to_string())
            }
            _ => {}
        }
        let manifest = bundle::Manifest {
            format: bundle::FORMAT,
            tool: bundle::Manifest::tool(),
            created_at: Some(
                humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ),
            source: bundle::SourceInfo {
                host: Some(source.shown_host().unwrap_or("localhost").to_string()),
                port: Some(source.shown_port()),
                ssh: source.via.as_ref().map(|via| via.ssh.clone()),
                database: Some(source.database.clone()),
                server_version: Some(server.version.clone()),
                server_major: server.major,
                encoding: encoding.clone(),
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
            subset: request.map(|r| r.record.clone()),
        };
        fs::write(staging.0.join(bundle::MANIFEST), manifest.text())?;
        let sums = bundle::sums_for(&staging.0, &names)?;
        fs::write(staging.0.join(bundle::SUMS), &sums)?;
        if let Some(key) = sign_key {
            let signature = key.sign(sums.as_bytes())?;
            fs::write(staging.0.join(bundle::sign::SIG), signature)?;
        }
        process::check_interrupted()?;
        if out.exists() {
            fs::remove_dir(out)
                .with_context(|| format!("replacing the empty directory {}", out.display()))?;
        }
        fs::rename(&staging.0, out)
            .with_context(|| format!("moving the bundle into {}", out.display()))?;
        let media = media_totals
            .map(|t| format!(", {} media files ({})", t.files, term::human_bytes(t.bytes)))
            .unwrap_or_default();
        let signed = match sign_key {
            Some(key) => format!("signed with {}", key.describe()),
            None => "unsigned (an import needs --trust-unsigned)".to_string(),
        };
        for line in subset.iter().flat_map(|s| s.derived_lines()) {
            term::step(line);
        }
        term::success(format!(
            "bundle written to {}: {} of SQL{media}; {signed}; {}; {}",
            out.display(),
            term::human_bytes(dumped),
            leak_scan::summary(leaks.as_ref()),
            timings.line()
        ));
        Ok(())
    }
}

fn signing_plan(key: Option<&SigningKey>) -> String {
    match key {
        Some(key) => format!(
            "sign {} with {} into {}",
            bundle::SUMS,
            key.describe(),
            bundle::sign::SIG
        ),
        None => "leave the bundle unsigned (no --sign-key or NETPOINT_BUNDLE_SIGNING_KEY): an import will need --trust-unsigned".to_string(),
    }
}
