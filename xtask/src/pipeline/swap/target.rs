//! The target before a load: its server, whether it exists, its size, and a connection
//! to its server that is not the target itself.

use anyhow::{bail, Context};
use xshell::Shell;

use crate::{
    pg::{sql::literal, Access, DbUrl, PgTools, Server},
    remedy::{refuse, Remedy},
};

/// What is known about the database a run is about to replace.
pub struct TargetState {
    pub server: Server,
    pub exists: bool,
    /// The target database's OID, when it exists.
    pub oid: Option<String>,
    pub tables: u64,
    pub size: u64,
    /// The key of the target's `dev-db` snapshots on this server (see `snapshot_key_sql`).
    pub snapshot_key: String,
}

/// Checks the target server before anything is loaded: reachable, allowed to create
/// databases, and allowed to replace the target. Only reads: it changes nothing. The
/// target's tables are counted (a session on it) only with `count_tables`: only the
/// question before replacing it shows them.
pub fn inspect_target(
    sh: &Shell,
    tools: &PgTools,
    target: &DbUrl,
    count_tables: bool,
) -> anyhow::Result<(DbUrl, TargetState)> {
    #[derive(serde::Deserialize)]
    struct Answer {
        can_create: bool,
        may_replace: bool,
        oid: Option<String>,
        size: i64,
        snapshot: bool,
        snapshot_key: String,
    }
    // Asked in the session that learns the server's version.
    let inspect = format!(
            "select json_build_object('can_create', r.rolcreatedb or r.rolsuper, \
             'may_replace', coalesce(pg_get_userbyid(d.datdba) = current_user or r.rolsuper, true), \
             'oid', d.oid::text, 'size', coalesce(pg_database_size(d.oid), 0), \
             'snapshot', coalesce(starts_with(shobj_description(d.oid, 'pg_database'), {}), false), \
             'snapshot_key', {}) \
             from pg_roles r left join pg_database d on d.datname = {} where r.rolname = current_user",
            literal(super::SNAPSHOT_MARK),
            super::snapshot_key_sql(target),
            literal(&target.database)
        );
    let (admin, server, answer) = admin_url(sh, tools, target, Some(&inspect))?;
    let Answer {
        can_create,
        may_replace,
        oid,
        size,
        snapshot,
        snapshot_key,
    } = serde_json::from_str(&answer).with_context(|| {
        format!("unexpected answer from {admin} while inspecting the target: {answer}")
    })?;
    let exists = oid.is_some();
    if snapshot {
        return Err(refuse(
            Remedy::NotASnapshot,
            format!(
                "database `{}` on {} is a snapshot of the dev database, not a dev database",
                target.database,
                target.host_port()
            ),
        ));
    }
    let user = target.user.as_deref().unwrap_or("(default user)");
    if !can_create {
        bail!(
            "user `{user}` may not create databases on {}: grant it with `ALTER ROLE \"{user}\" CREATEDB` or use a user that can",
            target.host_port()
        );
    }
    if exists && !may_replace {
        bail!(
            "user `{user}` does not own database `{}` on {} and cannot replace it: connect as its owner or a superuser",
            target.database,
            target.host_port()
        );
    }
    let mut state = TargetState {
        server,
        exists,
        oid,
        tables: 0,
        size: size.max(0) as u64,
        snapshot_key,
    };
    if state.exists && count_tables {
        let tables = tools.query(
            sh,
            target,
            Access::ReadWrite,
            "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace \
             where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema') \
             and n.nspname not like 'pg_toast%'",
        )?;
        state.tables = tables.trim().parse().unwrap_or(0);
    }
    Ok((admin, state))
}

/// A connection to the target server that is not the target database itself, the
/// server's version, learnt on the way, and the answer of query `then` asked there in the
/// same session.
fn admin_url(
    sh: &Shell,
    tools: &PgTools,
    target: &DbUrl,
    then: Option<&str>,
) -> anyhow::Result<(DbUrl, Server, String)> {
    let candidates: &[&str] = if target.database == "postgres" {
        &["template1"]
    } else {
        &["postgres", "template1"]
    };
    // No decision on the error's text, which comes in the server's language: when the first
    // fails for any reason, the second is tried, and the first error stands if both fail.
    let mut first = None;
    for name in candidates {
        let url = target.with_database(name);
        match tools.server_and(sh, &url, Access::ReadWrite, then) {
            Ok((server, answer)) => return Ok((url, server, answer)),
            Err(err) => {
                first.get_or_insert(err);
            }
        }
    }
    Err(first.expect("one candidate at least"))
}
