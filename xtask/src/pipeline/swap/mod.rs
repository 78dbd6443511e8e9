//! Replacing a database atomically: load into a fresh temporary database on the target
//! server, and only when that succeeded swap the names and drop the old one. Beside it: the
//! target's inspection, the names and stale leftovers of temporary databases, the guards
//! and confirmation before a replace, and the locks that keep a second run out.

mod guard;
pub mod lock;
mod stale;
mod target;

pub use guard::{
    ask_to_replace, check_versions, confirm_replace, guard_target, take_locks, LoadGuard,
};
pub use stale::{
    aside_name, drop_stale, exists, is_temp_name, put_back, snapshot_key_sql, stale_of_dead_runs,
    stale_query, SCHEMA_BUILD_PREFIX, SCHEMA_TEMPLATE_PREFIX, SNAPSHOT_MARK, SPARE_PREFIX,
};
pub use target::{inspect_target, TargetState};

use stale::temp_name;

use std::{thread, time::Duration};

use anyhow::{bail, Context as _};

use crate::remedy::Remedy;
use crate::{
    context::Context,
    pg::{
        sql::{ident, literal},
        Access, DbUrl, QuerySession,
    },
    process::{self, check_interrupted},
    term,
};

/// Makes a temporary database with `create` (an empty one, or a copy of a template) and fills
/// it with `load`, then swaps it in place of the target and runs `then` (the media swap). The
/// previous database is dropped only when `then` succeeded; if it fails, the previous database
/// is put back. On any failure or interruption the target is as it was and the temporary
/// database is gone. With `keep_previous`, the previous database is left as
/// [`aside_name`] for the caller to drop (a drop forces a checkpoint, which it may do later).
/// With `session` (a session on `admin`), the swap's queries run in it rather than each in
/// a psql of its own.
#[allow(clippy::too_many_arguments)]
pub fn replace(
    cx: &Context,
    admin: &DbUrl,
    session: Option<&QuerySession>,
    target: &DbUrl,
    create: impl FnOnce(&DbUrl) -> anyhow::Result<()>,
    load: impl FnOnce(&DbUrl) -> anyhow::Result<()>,
    then: impl FnOnce() -> anyhow::Result<()>,
    keep_previous: bool,
) -> anyhow::Result<()> {
    let temp = target.with_database(&temp_name(&target.database, "load"));
    let drop_temp = || {
        if drop_database(cx, admin, &temp.database).is_err() {
            process::note_left_behind();
        }
    };
    if let Err(err) = create(&temp) {
        // A session stopped by a signal may have left the server to finish the creation.
        drop_temp();
        return Err(err);
    }
    if let Err(err) = load(&temp).and_then(|()| check_interrupted()) {
        let err = explain_load_failure(err);
        // A server that stopped (a full disk for its WAL stops it) is given time to come back.
        let started = std::time::Instant::now();
        while drop_database(cx, admin, &temp.database).is_err() {
            if started.elapsed() > Duration::from_secs(30) || process::interrupted() {
                process::note_left_behind();
                return Err(anyhow::anyhow!(
                    "{err:#}; the temporary database {} is still there, the next run removes it",
                    temp.database
                ));
            }
            thread::sleep(Duration::from_secs(1));
        }
        return Err(err);
    }
    // From here the run finishes what it started, even when a signal arrives meanwhile.
    process::critical(|| {
        let old = temp_name(&target.database, "old");
        let replaced = match swap(cx, admin, session, target, &temp.database, &old, true) {
            Ok(replaced) => replaced,
            Err(err) => {
                drop_temp();
                return Err(err);
            }
        };
        if let Err(err) = then() {
            if !replaced {
                if drop_database(cx, admin, &target.database).is_err() {
                    process::note_left_behind();
                    return Err(err.context(format!(
                        "the new {} could not be removed again",
                        target.masked()
                    )));
                }
                return Err(err.context(format!("{} was removed again", target.masked())));
            }
            return match swap(cx, admin, session, target, &old, &temp.database, false) {
                Ok(_) => {
                    drop_temp();
                    Err(err.context(format!("{} was put back as it was", target.masked())))
                }
                Err(back) => {
                    process::note_left_behind();
                    Err(err.context(format!(
                        "the previous database could not be put back ({back:#}): it is kept as `{old}` on {}; \
                         rename it to `{}` once its sessions are gone",
                        target.host_port(),
                        target.database
                    )))
                }
            };
        }
        if keep_previous {
            return Ok(());
        }
        if let Err(err) = drop_database(cx, admin, &old) {
            term::warn(format!(
                "the new database is in place, but the previous one ({old}) could not be dropped: {err}"
            ));
        }
        Ok(())
    })
}

/// Says in plain words what a load's SQLSTATE means when the fix lies outside the data.
pub fn explain_load_failure(err: anyhow::Error) -> anyhow::Error {
    let text = format!("{err:#}");
    let code = |code: &str| text.contains(&format!(":  {code}: "));
    if code("53100") {
        err.context("the target server ran out of disk space while loading: free space where its data directory lives, then run again; the target is untouched")
    } else if code("53200") {
        err.context(format!("the target server ran out of memory while loading: {} or give it more memory; the target is untouched", Remedy::FewerJobs))
    } else if code("57P01")
        || code("57P02")
        || code("57P03")
        || text.contains("server closed the connection unexpectedly")
        || text.contains("connection to server was lost")
    {
        err.context("the target server stopped or restarted while loading (a full disk for its write-ahead log stops it): check its log, then run again; the target is untouched")
    } else {
        err
    }
}

/// `CREATE DATABASE` for a load. A source encoding that the server's locale cannot hold
/// (LATIN1 on a UTF-8 locale) gets the server's default encoding instead, as `createdb`
/// and `psql < netpoint.sql` would: the rows are converted on the way in.
pub fn create_temp(
    cx: &Context,
    admin: &DbUrl,
    temp: &DbUrl,
    encoding: Option<&str>,
) -> anyhow::Result<()> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let create = |encoding: Option<&str>| {
        let encoding = encoding
            .map(|e| format!(" encoding {}", literal(e)))
            .unwrap_or_default();
        tools.query_state(
            sh,
            admin,
            &format!(
                "create database {} template template0{encoding}",
                ident(&temp.database)
            ),
        )
    };
    match create(encoding)? {
        Ok(_) => Ok(()),
        // invalid_parameter_value: the encoding does not match the locale.
        Err(failure) if failure.state == "22023" && encoding.is_some() => {
            create(None)?.map_err(|failure| failure.into_error(admin))?;
            let got = tools.query(
                sh,
                temp,
                Access::ReadWrite,
                "select pg_encoding_to_char(encoding) || ' (locale ' || datctype || ')' from pg_database where datname = current_database()",
            )?;
            term::warn(format!(
                "the source's encoding {} does not fit the locale of {}: the copy is {got}, as createdb would make it",
                encoding.unwrap_or_default(),
                admin.host_port()
            ));
            Ok(())
        }
        Err(failure) => Err(failure.into_error(admin)),
    }
}

/// Drops `name` in a session detached from this run (see [`crate::pg::PgTools::detached`]):
/// a drop forces a checkpoint, which nobody should wait for. In the foreground when that
/// session cannot start; should it die, the next run on the target drops what it left, a
/// temporary database of a run that is gone.
pub fn drop_in_background(cx: &Context, admin: &DbUrl, name: &str) {
    let sql = format!("drop database if exists {} with (force);\n", ident(name));
    if cx.tools.detached(&cx.sh, admin, &sql).is_err() {
        if let Err(err) = drop_database(cx, admin, name) {
            term::warn(format!(
                "the previous database ({name}) could not be dropped: {err}"
            ));
        }
    }
}

pub fn drop_database(cx: &Context, admin: &DbUrl, name: &str) -> anyhow::Result<()> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    tools
        .query(
            sh,
            admin,
            Access::ReadWrite,
            &format!("drop database if exists {} with (force)", ident(name)),
        )
        .or_else(|_| {
            tools.query(
                sh,
                admin,
                Access::ReadWrite,
                &format!("drop database if exists {}", ident(name)),
            )
        })
        .map(|_| ())
}

/// Puts database `new` in place of `target`'s database, which becomes `aside`; both renames
/// commit together, so the target name always names a whole database. Sessions on the target
/// that we may end are ended, but only once no other session is there (another role's, which
/// we may not end): those are waited for briefly and then named, and a run that gives up
/// has ended no session. Autovacuum yields by itself. An interrupt ends the wait when
/// `stoppable` (the swap forward, before anything changed; never the swap back). Returns
/// whether there was a database to put aside. With `session` (on `admin`), the queries run
/// in it.
pub fn swap(
    cx: &Context,
    admin: &DbUrl,
    session: Option<&QuerySession>,
    target: &DbUrl,
    new: &str,
    aside: &str,
    stoppable: bool,
) -> anyhow::Result<bool> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    #[derive(serde::Deserialize)]
    struct Sessions {
        exists: bool,
        ended: u64,
        others: Vec<String>,
    }
    let query = |sql: &str| match session {
        Some(session) => session.query(sh, tools, sql),
        None => tools.query(sh, admin, Access::ReadWrite, sql),
    };
    let query_state = |sql: &str| match session {
        Some(session) => session.query_state(sh, tools, sql),
        None => tools.query_state(sh, admin, sql),
    };
    // From PostgreSQL 14 an ended session is waited for (up to a second), so that the
    // rename right after it does not find it still there.
    let terminate = match tools.server_major(admin) {
        Some(major) if major >= 14 => "pg_terminate_backend(pid, 1000)",
        _ => "pg_terminate_backend(pid)",
    };
    let name = literal(&target.database);
    let started = std::time::Instant::now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let answer = query(&format!(
                "with sessions as (select pid, usename, application_name, backend_type, \
                 backend_type = 'client backend' \
                 and (pg_has_role(usesysid, 'member') or pg_has_role('pg_signal_backend', 'member')) \
                 and (not coalesce((select rolsuper from pg_roles r where r.oid = a.usesysid), false) \
                      or (select rolsuper from pg_roles where rolname = current_user)) as ours \
                 from pg_stat_activity a where datname = {name} and pid <> pg_backend_pid()), \
                 blockers as (select * from sessions where not coalesce(ours, false) \
                              and backend_type is distinct from 'autovacuum worker'), \
                 mine as (select count({terminate}) as n from sessions \
                          where coalesce(ours, false) and not exists (select 1 from blockers)) \
                 select json_build_object('exists', exists (select 1 from pg_database where datname = {name}), \
                 'ended', (select n from mine), \
                 'others', coalesce((select json_agg(format('pid %s (%s%s)', pid, \
                     coalesce('user ' || usename || ', ', ''), \
                     coalesce(nullif(application_name, ''), backend_type, 'another role''s session'))) \
                   from blockers), '[]'))"
        ))?;
        let sessions: Sessions = serde_json::from_str(&answer)
            .with_context(|| format!("unexpected answer from {admin} while swapping: {answer}"))?;
        if sessions.ended > 0 {
            term::step(format!(
                "ended {} other session(s) on {}",
                sessions.ended,
                target.masked()
            ));
        }
        let sql = if sessions.exists {
            format!(
                "begin; alter database {0} rename to {1}; alter database {2} rename to {0}; commit;",
                ident(&target.database),
                ident(aside),
                ident(new)
            )
        } else {
            format!(
                "alter database {} rename to {}",
                ident(new),
                ident(&target.database)
            )
        };
        match query_state(&sql)? {
            Ok(_) => return Ok(sessions.exists),
            // object_in_use: a session we may not end, or one that just arrived.
            Err(failure) if failure.state == "55006" => {
                if stoppable && process::interrupted() {
                    bail!(
                        "interrupted while waiting for other sessions to leave {}",
                        target.masked()
                    );
                }
                if started.elapsed() > Duration::from_secs(15) {
                    let who = if sessions.others.is_empty() {
                        "sessions keep arriving".to_string()
                    } else {
                        sessions.others.join(", ")
                    };
                    bail!(
                        "cannot replace {}: other sessions use it and may not be ended by user `{}` ({who}); \
                         disconnect them or end them as a superuser, then run again",
                        target.masked(),
                        target.user.as_deref().unwrap_or("(default user)")
                    );
                }
                thread::sleep(Duration::from_millis((100 * attempt).min(1000)));
            }
            Err(failure) => {
                return Err(failure.into_error(admin)).context(format!(
                    "swapping the new database into {}",
                    target.masked()
                ))
            }
        }
    }
}
