//! `cargo xtask clone-prod`: production's database and media into a dev environment,
//! directly or through a portable bundle, verified and atomic.
//!
//! Three flows share the pipeline: [`direct`] (source to target), [`export`] (source to a
//! bundle) and the import of a bundle ([`crate::pipeline::import`]); `--media-only` is below.

mod direct;
mod export;
mod subset;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

use crate::{
    atomic_file,
    bundle::{allowed_signers::AllowedSigners, sign::SigningKey},
    cli::{self, GuardFlags, ScrubFlags, SubsetFlags},
    context::Context,
    mode::{print_plan, Mode},
    pg::{DbUrl, Server},
    pipeline::{
        import::{Import, MediaForm, Trust},
        report::{media_plan, Timings},
        scrub,
        source::{
            self, database_encoding, excluded_tables, source_server, Exclusions, CHANGELOG_TABLES,
        },
        staged_media::{check_media_pair, finish_media, has_entries, MediaSource},
        swap::{ask_to_replace, lock, LoadGuard},
    },
    ssh, term,
};

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
    /// Export: sign the bundle with this SSH key, a private key file without a passphrase or
    /// a .pub file whose private key is in ssh-agent [default: $NETPOINT_BUNDLE_SIGNING_KEY].
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Import: who may sign bundles, an OpenSSH allowed_signers file
    /// [default: $NETPOINT_ALLOWED_SIGNERS, else .github/allowed_signers].
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// Import: load an unsigned bundle on purpose (one you made yourself); its functions and
    /// defaults run with the loading role's rights. A signature that fails is still refused.
    #[arg(long)]
    trust_unsigned: bool,
    /// Reach production over SSH: [user@]host, ssh://[user@]host[:port] or a ~/.ssh/config
    /// alias; --source then names the database as seen from there [default: $NETPOINT_PROD_SSH].
    #[arg(long, value_name = "DEST", conflicts_with = "bundle")]
    source_ssh: Option<String>,
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
    guard: GuardFlags,
    #[command(flatten)]
    scrub: ScrubFlags,
    #[command(flatten)]
    subset: SubsetFlags,
}

impl CloneProd {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let mode = Mode::from_flags(false, self.dry_run);
        // clap's `requires` gives way to `conflicts_with`: these pairings are checked here.
        if self.sign_key.is_some() && self.out.is_none() {
            bail!("--sign-key signs a bundle as it is exported: use it with --out DIR");
        }
        if self.bundle.is_none() && (self.allowed_signers.is_some() || self.trust_unsigned) {
            bail!("--allowed-signers and --trust-unsigned apply to an import: use them with --bundle DIR");
        }
        if let Some(flag) = self.subset.given().first() {
            let mode = [
                (self.bundle.is_some(), "--bundle"),
                (self.media_only, "--media-only"),
            ]
            .into_iter()
            .find_map(|(given, mode)| given.then_some(mode));
            if let Some(mode) = mode {
                bail!("{flag} does not work with {mode}: a subset is chosen where the source is read (--target or --out); a bundle already holds the subset it was exported with");
            }
        }
        if let Some(dir) = &self.bundle {
            let target = cli::required_dev_database(self.target.clone(), "--target")?;
            let target_media = cli::dev_media(self.target_media.clone());
            let allowed =
                cli::path_or_env(self.allowed_signers.clone(), "NETPOINT_ALLOWED_SIGNERS")
                    .unwrap_or_else(|| cx.sh.current_dir().join(DEFAULT_ALLOWED_SIGNERS));
            let allowed = AllowedSigners::read(&allowed)?;
            let import = Import {
                dir,
                trust: match self.trust_unsigned {
                    true => Trust::UnsignedOnPurpose(&allowed),
                    false => Trust::Signers(&allowed),
                },
                media: MediaForm::Archive,
                target: &target,
                target_media: target_media.as_deref(),
                guard: &self.guard.guard(),
                strict: self.scrub.strict,
                provides_target: None,
            };
            return import.run(cx, mode);
        }
        for pattern in &self.exclude_table_data {
            source::pattern_regexes(pattern)
                .with_context(|| format!("--exclude-table-data `{pattern}`"))?;
        }
        let source_media = cli::prod_media(self.source_media.clone());
        let remote = ssh::Remote::from_flag(self.source_ssh.clone())?;
        let media_from = |tunnel| media_source(source_media.as_deref(), tunnel);
        if self.media_only {
            let target_media = cli::dev_media(self.target_media.clone());
            if source_media.is_none() || target_media.is_none() {
                bail!("--media-only needs --source-media and --target-media (or NETPOINT_PROD_MEDIA_ROOT and NETPOINT_MEDIA_ROOT)");
            }
            let mut tunnel = remote
                .as_ref()
                .map(|remote| ssh::Tunnel::open(remote, None))
                .transpose()?;
            let result = {
                let source = media_from(tunnel.as_ref());
                media_only(
                    source.as_ref(),
                    target_media.as_deref(),
                    &self.guard.guard(),
                    mode,
                )
            };
            return match &mut tunnel {
                Some(tunnel) => result.map_err(|err| tunnel.explain_error(err)),
                None => result,
            };
        }
        let source = cli::prod_database(self.source.clone())?;
        // A dry run too reads the source, through the same connection.
        let mut tunnel = remote
            .as_ref()
            .map(|remote| ssh::Tunnel::open(remote, Some(&source)))
            .transpose()?;
        let result = {
            let db = tunnel
                .as_ref()
                .and_then(|t| t.url.clone())
                .unwrap_or(source);
            let media = media_from(tunnel.as_ref());
            self.run_database(cx, &db, media.as_ref(), mode)
        };
        match &mut tunnel {
            Some(tunnel) => result.map_err(|err| tunnel.explain_error(err)),
            None => result,
        }
    }

    fn run_database(
        &self,
        cx: &Context,
        source: &DbUrl,
        source_media: Option<&MediaSource<'_>>,
        mode: Mode,
    ) -> anyhow::Result<()> {
        let mut excluded: Vec<String> = if self.with_changelog {
            Vec::new()
        } else {
            CHANGELOG_TABLES.iter().map(|t| t.to_string()).collect()
        };
        excluded.extend(self.exclude_table_data.iter().cloned());
        match &self.out {
            Some(out) => {
                let subset = self.subset.request()?;
                let sign_key =
                    cli::path_or_env(self.sign_key.clone(), "NETPOINT_BUNDLE_SIGNING_KEY")
                        .map(|path| SigningKey::open(&path))
                        .transpose()?;
                // A remote tree is fetched (verified) beside the bundle, then archived as a
                // local one is; a subset's export fetches only the files its rows name, once
                // it is computed.
                let remote_media = source_media
                    .filter(|m| matches!(m, MediaSource::Remote(_)) && subset.is_some());
                let fetched = match source_media.filter(|_| remote_media.is_none()) {
                    Some(remote @ MediaSource::Remote(_)) => {
                        let count = remote.count()?;
                        if mode == Mode::DryRun {
                            print_plan(&[format!(
                                "fetch media {} ({} files, {}) to archive them",
                                remote.shown(),
                                count.totals.files,
                                term::human_bytes(count.totals.bytes)
                            )]);
                            None
                        } else {
                            let parent = atomic_file::parent_dir(out).context("--out")?;
                            let dir = tempfile::Builder::new()
                                .prefix(".netpoint-media-fetch-")
                                .tempdir_in(parent)
                                .context("creating a directory beside --out for the media")?;
                            let into = dir.path().join("media");
                            remote.fetch_into(&count, None, &into)?;
                            Some((dir, into))
                        }
                    }
                    _ => None,
                };
                let local = match &fetched {
                    Some((_, into)) => Some(into.as_path()),
                    None => source_media.and_then(|m| m.local()),
                };
                let export = export::Export {
                    source,
                    source_media: local,
                    patterns: &excluded,
                    given: &self.exclude_table_data,
                    scrub: &self.scrub.options(),
                    out,
                    sign_key: sign_key.as_ref(),
                    subset: subset.as_ref(),
                    remote_media,
                };
                export.run(cx, mode)
            }
            None => {
                let target = cli::required_dev_database(self.target.clone(), "--target")?;
                let target_media = cli::dev_media(self.target_media.clone());
                let subset = self.subset.request()?;
                let (guard, scrub) = (self.guard.guard(), self.scrub.options());
                let direct = direct::Direct {
                    source,
                    source_media,
                    target: &target,
                    target_media: target_media.as_deref(),
                    excluded: &excluded,
                    given: &self.exclude_table_data,
                    guard: &guard,
                    scrub: &scrub,
                    subset: subset.as_ref(),
                };
                direct.run(cx, mode)
            }
        }
    }
}

/// The source as the direct clone and the export read it before anything is written.
struct SourceSide {
    server: Server,
    exclusions: Exclusions,
    scrub: scrub::Plan,
    encoding: String,
}

impl SourceSide {
    /// Reads the source; `media` reads the media between the exclusions and the scrub plan.
    fn inspect<M>(
        cx: &Context,
        source: &DbUrl,
        patterns: &[String],
        given: &[String],
        scrub: &scrub::Options,
        media: impl FnOnce() -> anyhow::Result<M>,
    ) -> anyhow::Result<(SourceSide, M)> {
        let server = source_server(cx, source)?;
        let exclusions = excluded_tables(cx, source, patterns, given)?;
        let media = media()?;
        let scrub = scrub.plan(cx, source)?;
        let encoding = database_encoding(cx, source)?;
        let side = SourceSide {
            server,
            exclusions,
            scrub,
            encoding,
        };
        Ok((side, media))
    }

    /// The dry run's line for reading the source.
    fn read_plan(&self, source: &DbUrl) -> String {
        format!(
            "read {} (PostgreSQL {}, read-only session)",
            source, self.server.version
        )
    }

    /// The dry run's line for the scrub.
    fn scrub_plan(&self) -> String {
        format!(
            "scrub {} rules in the stream ({} skipped)",
            self.scrub.applied.len(),
            self.scrub.skipped.len()
        )
    }
}

/// The allowed signers file an import reads when neither the flag nor the environment names
/// one, in the checkout: a team commits its signers' keys there.
const DEFAULT_ALLOWED_SIGNERS: &str = ".github/allowed_signers";

/// The media source: the path on the SSH host when there is a tunnel, else here.
fn media_source<'a>(
    path: Option<&'a Path>,
    tunnel: Option<&'a ssh::Tunnel>,
) -> Option<MediaSource<'a>> {
    let path = path?;
    Some(match tunnel {
        Some(tunnel) => MediaSource::Remote(ssh::RemoteMedia {
            tunnel,
            dir: path.to_string_lossy().into_owned(),
        }),
        None => MediaSource::Local(path),
    })
}

/// `--media-only`: the media directory alone, copied, verified and swapped into place.
fn media_only(
    source: Option<&MediaSource<'_>>,
    target: Option<&Path>,
    guard: &LoadGuard,
    mode: Mode,
) -> anyhow::Result<()> {
    let (Some(source), Some(target)) = (source, target) else {
        bail!("--media-only needs --source-media and --target-media (or NETPOINT_PROD_MEDIA_ROOT and NETPOINT_MEDIA_ROOT)");
    };
    check_media_pair(source.local(), Some(target))?;
    let count = source.count()?;
    if mode == Mode::DryRun {
        print_plan(&[media_plan(
            Some(&source.shown()),
            Some(target),
            Some(count.totals),
        )]);
        return Ok(());
    }
    let _lock = lock::MediaLock::take(target)?;
    if has_entries(target) && !guard.yes {
        ask_to_replace(&format!("media directory {}", target.display()))?;
    }
    let mut timings = Timings::default();
    let staged = timings.time("media copy", || source.stage(&count, target))?;
    let totals = finish_media(Some(staged), Some(target))?;
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
