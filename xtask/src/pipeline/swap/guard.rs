//! The guards before a database is replaced: the target's name and host, the server
//! versions, the locks that keep a second run out, and the user's confirmation.

use std::{fs, path::Path};

use anyhow::bail;

use crate::{
    context::Context,
    pg::DbUrl,
    pipeline::staged_media::has_entries,
    plain::lines,
    remedy::{refuse, Remedy},
    term,
};

use super::{exists, is_temp_name, lock, put_back, TargetState};

/// What the user allowed before a database is replaced.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadGuard {
    /// Replace a database that has tables, or media that is not empty, without asking.
    pub yes: bool,
    /// Replace a database on another machine.
    pub allow_remote_target: bool,
    /// Load a dump of a newer PostgreSQL major into an older server.
    pub allow_downgrade: bool,
}

/// Refuses a dump of a newer major unless a downgrade is allowed; then returns the `SET`
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
             may not load into an older one; {}",
            Remedy::AllowDowngrade
        );
    }
    term::warn(format!(
        "loading a PostgreSQL {source_major} dump into PostgreSQL {target_major}, as allowed"
    ));
    Ok(lines::settings_unknown_to(target_major))
}

pub fn guard_target(target: &DbUrl, guard: &LoadGuard) -> anyhow::Result<()> {
    if ["template0", "template1"].contains(&target.database.as_str()) {
        bail!(
            "target {target} is a template database, which every CREATE DATABASE copies: refusing to replace it; name the dev database in the URL"
        );
    }
    if is_temp_name(&target.database) {
        bail!(
            "target {target} has the name of a temporary database (`<name>__npload_<pid>`, `<name>__npold_<pid>`, `npsnaptmp_…`, `npsnapold_…`, `npspare_…`, `npschema_…`), which a later run would remove as a leftover: choose another name"
        );
    }
    if !target.is_loopback() && !guard.allow_remote_target {
        return Err(refuse(
            Remedy::AllowRemoteTarget,
            format!("target {target} is not on this machine"),
        ));
    }
    Ok(())
}

/// Takes the locks on the target database and media directory that keep a second run out,
/// then undoes what a run killed in the middle of its swap left: the new database in place
/// with the old media.
pub fn take_locks(
    cx: &Context,
    admin: &DbUrl,
    target: &DbUrl,
    media: Option<&Path>,
) -> anyhow::Result<(lock::TargetLock, Option<lock::MediaLock>)> {
    let media = media.map(lock::MediaLock::take).transpose()?;
    let lock = lock::TargetLock::take(cx, admin, target)?;
    if let Some(journal) = media.as_ref().and_then(|m| m.left.clone()) {
        let ours = journal.target == format!("{}/{}", target.host_port(), target.database);
        if ours && journal.staging.exists() && exists(cx, admin, &journal.aside)? {
            term::warn(format!(
                "a run killed during its swap left {target} with the new database but the old media: putting the previous database back"
            ));
            put_back(cx, admin, target, &journal.aside)?;
            let _ = fs::remove_dir_all(&journal.staging);
        }
    }
    Ok((lock, media))
}

/// Asks before replacing a database that has tables or a media directory that is not empty;
/// refuses without a terminal unless confirmed beforehand.
pub fn confirm_replace(
    target: &DbUrl,
    state: &TargetState,
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

/// Asks on a terminal whether `what` may be replaced; without a terminal, refuses.
pub fn ask_to_replace(what: &str) -> anyhow::Result<()> {
    if !term::stdin_is_terminal() {
        return Err(refuse(
            Remedy::Confirm,
            format!("{what} would be replaced (standard input is not a terminal)"),
        ));
    }
    if !term::confirm(&format!("Replace {what}?"))? {
        bail!("cancelled: nothing was changed");
    }
    Ok(())
}
