//! The one replace sequence every command that replaces a dev database runs: the target
//! guarded and inspected, the versions checked, the locks taken (and a killed run's half swap
//! put back), the user asked, leftovers of dead runs removed, the media staged and the swap
//! journalled, then a new temporary database made and filled and swapped in with its media.
//! What a command brings: how the media are staged and how the new database is filled.

use std::{fs, path::Path};

use xshell::Shell;

use crate::{
    context::Context,
    media,
    pg::{DbUrl, PgTools, QuerySession},
    pipeline::{
        report::Timings,
        staged_media::{finish_media, StagedMedia},
        swap::{
            self, aside_name, check_versions, confirm_replace, guard_target, inspect_target,
            lock::{Journal, MediaLock, TargetLock},
            take_locks, LoadGuard, TargetState,
        },
    },
    term,
};

/// A database (and, with it, a media directory) about to be replaced.
pub struct Replacement<'a> {
    pub target: &'a DbUrl,
    /// The media directory replaced with the database: locked, asked about, swapped.
    pub target_media: Option<&'a Path>,
    pub guard: &'a LoadGuard,
}

/// The target as it was before anything changed.
pub struct Inspected {
    /// A connection to the target's server that is not the target itself.
    pub admin: DbUrl,
    pub state: TargetState,
}

impl<'a> Replacement<'a> {
    /// The guards that need no server: the target's name and host.
    pub fn check(&self) -> anyhow::Result<()> {
        guard_target(self.target, self.guard)
    }

    /// Reads the target's server; changes nothing.
    pub fn inspect(&self, sh: &Shell, tools: &PgTools) -> anyhow::Result<Inspected> {
        let (admin, state) = inspect_target(sh, tools, self.target, true)?;
        Ok(Inspected { admin, state })
    }

    /// [`Replacement::inspect`] without a session on the target to count its tables when
    /// the run will not ask before replacing it (`--yes`), the one place they are shown:
    /// for a command whose whole run is a few queries.
    pub fn inspect_unless_confirmed(
        &self,
        sh: &Shell,
        tools: &PgTools,
    ) -> anyhow::Result<Inspected> {
        let (admin, state) = inspect_target(sh, tools, self.target, !self.guard.yes)?;
        Ok(Inspected { admin, state })
    }

    /// Checks a source of PostgreSQL `source_major` against the target (none: a copy made on
    /// the target's own server), then takes the locks that keep a second run out.
    pub fn lock<'t>(
        &self,
        cx: &Context,
        inspected: &'t Inspected,
        source_major: Option<u32>,
    ) -> anyhow::Result<Locked<'a, 't>> {
        let drop_settings = match source_major {
            Some(major) => {
                check_versions(major, self.target, inspected.state.server.major, self.guard)?
            }
            None => Vec::new(),
        };
        let (lock, media_lock) = take_locks(cx, &inspected.admin, self.target, self.target_media)?;
        Ok(Locked {
            target: self.target,
            target_media: self.target_media,
            asked_media: self.target_media,
            guard: self.guard,
            inspected,
            drop_settings,
            lock,
            media_lock,
            stale_dropped: false,
            keep_previous: false,
            session: None,
        })
    }
}

/// A replacement whose locks are held: nothing is changed yet.
pub struct Locked<'a, 't> {
    target: &'a DbUrl,
    target_media: Option<&'a Path>,
    /// The media the confirmation names: the locked ones unless they stay as they are.
    asked_media: Option<&'a Path>,
    guard: &'a LoadGuard,
    inspected: &'t Inspected,
    /// The `SET` lines of the source's dump an older target would reject.
    pub drop_settings: Vec<&'static str>,
    lock: TargetLock,
    media_lock: Option<MediaLock>,
    stale_dropped: bool,
    keep_previous: bool,
    /// A session on the admin connection the swap's queries run in.
    session: Option<&'t QuerySession>,
}

/// A step on the new temporary database, given its URL.
pub type OnTemp<'f> = Box<dyn FnOnce(&DbUrl) -> anyhow::Result<()> + 'f>;

/// A step that makes the new temporary database, given the server's maintenance database
/// and the temporary one.
pub type OnServer<'f> = Box<dyn FnOnce(&DbUrl, &DbUrl) -> anyhow::Result<()> + 'f>;

/// How the new temporary database comes to be.
pub enum Create<'f> {
    /// Empty, in the source's encoding when the server's locale can hold it; then filled.
    Empty { encoding: Option<&'f str> },
    /// Made whole by this step (a file-level copy of a template, say).
    By(OnTemp<'f>),
    /// Made by this step, given the server's maintenance database first.
    Beside(OnServer<'f>),
}

/// The database side of a replacement.
pub struct Database<'f> {
    /// The step line that opens the database step.
    pub announce: Option<String>,
    pub create: Create<'f>,
    /// Fills the new database; a failure leaves the target as it was.
    pub fill: OnTemp<'f>,
}

/// Media staged beside the target, swapped in once the database is.
pub trait Staged: Sized {
    /// The staging directory, journalled so that the next run can undo a half swap.
    fn dir(&self) -> &Path;
    /// Swaps the staged media (when there are any) into `target` after the database; the
    /// totals for the summary.
    fn swap_in(
        staged: Option<Self>,
        target: Option<&Path>,
    ) -> anyhow::Result<Option<media::Totals>>;
}

impl Staged for StagedMedia {
    fn dir(&self) -> &Path {
        &self.dir
    }

    fn swap_in(
        staged: Option<Self>,
        target: Option<&Path>,
    ) -> anyhow::Result<Option<media::Totals>> {
        finish_media(staged, target)
    }
}

/// What a replacement leaves the summary. It holds the locks until it is dropped.
pub struct Replaced {
    pub media: Option<media::Totals>,
    pub timings: Timings,
    _locks: (TargetLock, Option<MediaLock>),
}

impl<'t> Locked<'_, 't> {
    /// The media directory stays as it is: the confirmation does not name it.
    pub fn keep_media(&mut self) {
        self.asked_media = None;
    }

    /// The previous database is left as [`aside_name`] once replaced, for the caller to drop.
    pub fn keep_previous(&mut self) {
        self.keep_previous = true;
    }

    /// The swap's queries run in `session` (on [`Inspected::admin`]), not each in a psql
    /// of its own.
    pub fn query_in(&mut self, session: &'t QuerySession) {
        self.session = Some(session);
    }

    /// Removes the temporary databases of dead runs found while taking the lock (once).
    pub fn drop_stale(&mut self, cx: &Context) {
        if !std::mem::replace(&mut self.stale_dropped, true) {
            swap::drop_stale(cx, &self.inspected.admin, &self.lock.stale);
        }
    }

    /// Asks, stages the media with `stage` (which times itself), journals the swap, then
    /// makes, fills and swaps in the new database and the media after it. On any failure
    /// the target and its media are as they were.
    pub fn replace<M: Staged>(
        mut self,
        cx: &Context,
        stage: impl FnOnce(&mut Timings) -> anyhow::Result<Option<M>>,
        database: Database<'_>,
    ) -> anyhow::Result<Replaced> {
        confirm_replace(
            self.target,
            &self.inspected.state,
            self.asked_media,
            self.guard,
        )?;
        self.drop_stale(cx);
        let mut timings = Timings::default();
        let staged = stage(&mut timings)?;
        record_swap(
            &mut self.media_lock,
            self.target,
            staged.as_ref().map(M::dir),
        )?;
        let (target, target_media) = (self.target, self.target_media);
        let admin = &self.inspected.admin;
        let mut media = None;
        timings.time("database", || {
            if let Some(line) = database.announce {
                term::step(line);
            }
            let create = |temp: &DbUrl| match database.create {
                Create::Empty { encoding } => swap::create_temp(cx, admin, temp, encoding),
                Create::By(create) => create(temp),
                Create::Beside(create) => create(admin, temp),
            };
            // The media go in after the database; a failure there puts the database back.
            let swap_media = || {
                media = M::swap_in(staged, target_media)?;
                Ok(())
            };
            swap::replace(
                cx,
                admin,
                self.session,
                target,
                create,
                database.fill,
                swap_media,
                self.keep_previous,
            )
        })?;
        Ok(Replaced {
            media,
            timings,
            _locks: (self.lock, self.media_lock),
        })
    }
}

/// Records, before the swap, what the next run needs to undo it should this one be killed
/// between the database swap and the media swap.
fn record_swap(
    media_lock: &mut Option<MediaLock>,
    target: &DbUrl,
    staged: Option<&Path>,
) -> anyhow::Result<()> {
    if let (Some(media_lock), Some(staged)) = (media_lock.as_mut(), staged) {
        media_lock.record(&Journal {
            target: format!("{}/{}", target.host_port(), target.database),
            aside: aside_name(&target.database),
            staging: fs::canonicalize(staged).unwrap_or_else(|_| staged.to_path_buf()),
        })?;
    }
    Ok(())
}
