//! Loading a dump directory (an exported bundle, or the committed fixtures) into a target
//! database and media directory: its signer checked first, then its files verified, then
//! loaded and swapped atomically.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _};

use crate::{
    atomic_file::{self, StagingDir},
    bundle::{self, allowed_signers::AllowedSigners, check::check_complete, sign},
    context::Context,
    media,
    mode::{print_plan, Mode},
    pg::DbUrl,
    pipeline::{
        leak_scan, load, parallel,
        replace::{Create, Database, Replacement},
        report::{summarise, Summary, Timings},
        staged_media::{check_apart, check_holds_nothing_else, StagedMedia},
        swap::LoadGuard,
    },
    plain::lines,
    process,
    remedy::{refuse, Remedy},
    term,
};

/// How a bundle carries its media.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MediaForm {
    /// `netpoint_media.tar.gz`, as clone-prod exports it.
    Archive,
    /// `media/` unpacked, as the committed fixtures keep it.
    Tree,
}

/// Why a bundle's SQL may run: the command decides, the import applies it before it reads
/// anything else.
pub enum Trust<'a> {
    /// Signed by a key that this allowed signers file lists for `netpoint-bundle`, now.
    Signers(&'a AllowedSigners),
    /// Loaded unsigned on purpose (`--trust-unsigned`); a signature that is there must still
    /// verify and be allowed by the file.
    UnsignedOnPurpose(&'a AllowedSigners),
    /// The committed fixtures: trusted through the repository's review, never signed.
    Reviewed,
}

impl Trust<'_> {
    /// Checks the signature over the bytes of `SHA256SUMS`; the text the closing summary
    /// gives the bundle's provenance, if any.
    fn check(&self, dir: &Path, sums: &[u8]) -> anyhow::Result<Option<String>> {
        let allowed = match self {
            Trust::Reviewed => return Ok(None),
            Trust::Signers(allowed) | Trust::UnsignedOnPurpose(allowed) => allowed,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match (sign::read_signature(dir)?, self) {
            (Some(signature), _) => {
                let signed = sign::verify(dir, sums, &signature, allowed, now)?;
                term::step(format!("{}: {}", dir.display(), signed.summary()));
                Ok(Some(signed.summary()))
            }
            (None, Trust::UnsignedOnPurpose(_)) => {
                term::warn(format!(
                    "{} is unsigned and loaded on purpose: its functions and defaults run with the loading role's rights",
                    dir.display()
                ));
                Ok(Some("unsigned, trusted on purpose".to_string()))
            }
            (None, _) => Err(refuse(
                Remedy::SignOrTrustUnsigned,
                format!(
                    "bundle {} is not signed (it has no {}), nothing was changed",
                    dir.display(),
                    sign::SIG
                ),
            )),
        }
    }
}

/// Loading a bundle into a target database and media directory.
pub struct Import<'a> {
    pub dir: &'a Path,
    pub trust: Trust<'a>,
    pub media: MediaForm,
    pub target: &'a DbUrl,
    pub target_media: Option<&'a Path>,
    pub guard: &'a LoadGuard,
    /// Fail when the leak scan finds anything (--strict).
    pub strict: bool,
    /// On a dry run, the step that will provide the target first (seed-dev's container).
    pub provides_target: Option<String>,
}

impl Import<'_> {
    pub fn run(&self, cx: &Context, mode: Mode) -> anyhow::Result<()> {
        let (sh, tools) = (&cx.sh, &cx.tools);
        // Who made it comes first: nothing in the bundle is trusted, not even its checksums,
        // before its signer is.
        let sums = bundle::read_sums(self.dir)?;
        let provenance = self.trust.check(self.dir, &sums)?;
        let replacement = Replacement {
            target: self.target,
            target_media: None,
            guard: self.guard,
        };
        replacement.check()?;
        // From here on every listed file is read through the opening it was hashed by.
        let verified = bundle::verify_sums(self.dir, &sums)?;
        let manifest = bundle::Manifest::read(&verified)?;
        manifest.check_files(
            self.dir,
            &verified.listed(),
            self.media == MediaForm::Archive,
        )?;
        let media_sums = match verified.contains(bundle::MEDIA_SUMS) {
            true => Some(media::parse_sums(
                &verified.read(bundle::MEDIA_SUMS)?,
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
            atomic_file::parent_dir(target_media).context("target media directory")?;
            if media_sums.is_some() {
                check_apart("bundle", self.dir, target_media)?;
                check_holds_nothing_else(target_media)?;
                atomic_file::check_swappable(target_media)?;
            }
        }
        let pinned = verified.file(bundle::SQL)?;
        let sql = &pinned.path;
        let toc = check_complete(pinned, &manifest)?;
        if mode == Mode::DryRun {
            let media = match (&media_sums, self.target_media) {
                (Some(sums), Some(target)) => format!(
                    "unpack {} media files into staging, verify each against {}, swap into {}",
                    sums.len(),
                    bundle::MEDIA_SUMS,
                    target.display()
                ),
                (Some(_), None) => {
                    "media: not loaded (no target media directory given)".to_string()
                }
                (None, _) => "media: the bundle has none".to_string(),
            };
            let mut steps: Vec<String> = self.provides_target.iter().cloned().collect();
            steps.extend(
                provenance
                    .iter()
                    .map(|text| format!("{}: {text}", self.dir.display())),
            );
            steps.extend([
                format!("checksums of {} verified", self.dir.display()),
                format!(
                    "restore {} into a temporary database beside {} and swap it in place",
                    bundle::SQL,
                    self.target
                ),
                media,
            ]);
            print_plan(&steps);
            return Ok(());
        }
        // The media are replaced only when the bundle has some and there is a place for them.
        let replacement = Replacement {
            target_media: self.target_media.filter(|_| media_sums.is_some()),
            ..replacement
        };
        let target = replacement.inspect(sh, tools)?;
        let source_major = manifest.source.server_major;
        let locked = replacement.lock(cx, &target, Some(source_major))?;
        let drop_settings = locked.drop_settings.clone();
        let stage = |timings: &mut Timings| {
            let staged = match (&media_sums, self.target_media) {
                (Some(sums), Some(target)) => {
                    let expected = manifest.media.as_ref();
                    Some(timings.time("media", || self.stage_media(sums, expected, target))?)
                }
                (Some(_), None) => {
                    term::step("media: not loaded (no target media directory given)");
                    None
                }
                (None, _) => None,
            };
            // Checked again after the prompt and the media; nothing has run yet.
            pinned.check_unchanged()?;
            Ok(staged)
        };
        let size = toc.len;
        let covered = leak_scan::Covered::by_manifest(&manifest);
        let mut leaks = None;
        let fill = |temp: &DbUrl| {
            let bar = term::bytes_progress("restore", Some(size));
            let file = parallel::DumpFile {
                pinned,
                toc: &toc,
                drop_settings: &drop_settings,
                bar: &bar,
                replaces: target.state.exists,
                covered: &covered,
            };
            let streamed = match file.load(cx, temp)? {
                parallel::FileLoad::Loaded(report) => Some(report),
                parallel::FileLoad::OneStream => {
                    let psql = load::spawn_psql_load(cx, temp)?;
                    let mut reader =
                        lines::normalising_reader(pinned.reader(), drop_settings.clone());
                    load::feed_psql(temp, psql, &mut reader, &|n| bar.inc(n))?;
                    None
                }
            };
            // Rewritten while it loaded: the temporary database is never swapped in.
            pinned.check_unchanged()?;
            load::check_row_counts(cx, temp, &manifest.rows)?;
            bar.finish_and_clear();
            // One stream holds schema and rows: the loaded database is scanned instead.
            let report = match streamed {
                Some(report) => report,
                None => leak_scan::scan(cx, temp, &covered)?,
            };
            leak_scan::check(report.as_ref(), self.strict, "the target is untouched")?;
            leaks = report;
            Ok(())
        };
        let database = Database {
            announce: Some(format!(
                "loading {} ({}) into {}",
                sql.display(),
                term::human_bytes(size),
                self.target
            )),
            create: Create::Empty {
                encoding: Some(&manifest.source.encoding),
            },
            fill: Box::new(fill),
        };
        let replaced = locked.replace(cx, stage, database)?;
        let excluded: Vec<(String, Option<i64>)> = manifest
            .excluded_table_data
            .iter()
            .map(|name| (name.clone(), None))
            .collect();
        summarise(
            cx,
            &Summary {
                target: self.target,
                excluded: &excluded,
                media: replaced.media,
                leaks: leaks.as_ref(),
                provenance: provenance.as_deref(),
                timings: &replaced.timings,
            },
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
            linked: media::Totals::default(),
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
        process::check_interrupted()?;
        Ok(staged)
    }
}
