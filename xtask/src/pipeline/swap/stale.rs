//! The names of a run's temporary databases, those an interrupted run left behind, and
//! putting back a swap a killed run left half done.
//!
//! A run's temporary databases are `<target>__npload_<pid>` (the load) and
//! `<target>__npold_<pid>` (the previous database during the swap); `dev-db save` makes
//! `npsnaptmp_<key>_<pid>` (the new snapshot) and `npsnapold_<key>_<pid>` (the one it
//! replaces), where the key stands for the dev database on its server. All of them are
//! found, and removed, only while the target's lock is held, and only when the run their pid
//! names is not alive here.

use sha2::{Digest, Sha256};

use crate::{
    context::Context,
    media,
    pg::{
        sql::{ident, literal},
        Access, DbUrl,
    },
    process, term,
};

use super::{drop_database, swap};

/// The part of a temporary database's name that stands for its target: the name itself up
/// to 40 bytes; a longer one is cut and a hash of the whole appended, so that two targets
/// that begin alike never share temporary names.
pub fn base_name(database: &str) -> String {
    if database.len() <= 40 {
        return database.to_string();
    }
    let mut end = 31;
    while !database.is_char_boundary(end) {
        end -= 1;
    }
    let hash = media::hex(&Sha256::digest(database.as_bytes()));
    format!("{}_{}", &database[..end], &hash[..8])
}

pub fn temp_name(database: &str, kind: &str) -> String {
    format!("{}__np{kind}_{}", base_name(database), std::process::id())
}

/// The name the target's previous database has during this run's swap.
pub fn aside_name(database: &str) -> String {
    temp_name(database, "old")
}

/// The prefixes of `dev-db save`'s temporary databases: the new snapshot, and the one it
/// replaces once the new one has its name.
pub const SNAPSHOT_TEMP_PREFIXES: [&str; 2] = ["npsnaptmp_", "npsnapold_"];

/// The prefix of a snapshot's spare, `npspare_<key>_<name>`: a copy `dev-db restore` renames
/// into place, removed by `dev-db` when stale, never a dev database.
pub const SPARE_PREFIX: &str = "npspare_";

/// The prefix of a subset's schema template, `npschema_<hash>`: an empty database holding
/// a source's schema, copied for each subset of it, never a dev database.
pub const SCHEMA_TEMPLATE_PREFIX: &str = "npschema_";

/// The prefix of a schema template being built, `npschematmp_<hash>_<pid>`.
pub const SCHEMA_BUILD_PREFIX: &str = "npschematmp_";

/// The prefix of a snapshot database's comment, which marks it as one: the target's
/// inspection tells a snapshot from a dev database by it, and `dev-db` writes it.
pub const SNAPSHOT_MARK: &str = "{\"netpoint_dev_db_snapshot\":";

/// Whether `name` has the shape of a temporary database of some run: a target of that name
/// could be removed later as a leftover, so no command replaces one.
pub fn is_temp_name(name: &str) -> bool {
    let pid_after = |marker: &str| {
        name.rfind(marker).is_some_and(|at| {
            let pid = &name[at + marker.len()..];
            at > 0 && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())
        })
    };
    pid_after("__npload_")
        || pid_after("__npold_")
        || SNAPSHOT_TEMP_PREFIXES.iter().any(|p| name.starts_with(p))
        || name.starts_with(SPARE_PREFIX)
        || name.starts_with(SCHEMA_TEMPLATE_PREFIX)
        || name.starts_with(SCHEMA_BUILD_PREFIX)
}

/// SQL for the key of a dev database's snapshots, `dev-db`'s and every command's one
/// definition: the server by what it says of itself (the cluster's system identifier, the
/// same however the URL spells the host), and the database's name. A role that may not read
/// the identifier gets the URL's port and host (any spelling of this machine as one).
pub fn snapshot_key_sql(target: &DbUrl) -> String {
    let host = match target.is_loopback() {
        true => "this machine".to_string(),
        false => target
            .host
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('.')
            .to_ascii_lowercase(),
    };
    format!(
        "left(encode(sha256(convert_to(coalesce(\
         case when has_function_privilege('pg_catalog.pg_control_system()', 'execute') \
         then (select system_identifier::text from pg_catalog.pg_control_system()) end, {}) \
         || '/' || {}, 'UTF8')), 'hex'), 8)",
        literal(&format!("{host}:{}", target.port)),
        literal(&target.database)
    )
}

/// Undoes a swap that a killed run left half done: `aside` (the previous database) goes back
/// in place of the target, and the database the run had put there is dropped.
pub fn put_back(cx: &Context, admin: &DbUrl, target: &DbUrl, aside: &str) -> anyhow::Result<()> {
    let unwanted = temp_name(&target.database, "load");
    process::critical(|| {
        swap(cx, admin, None, target, aside, &unwanted, false)?;
        drop_database(cx, admin, &unwanted)
    })
}

/// Whether a database of this name exists on the server `admin` connects to.
pub fn exists(cx: &Context, admin: &DbUrl, name: &str) -> anyhow::Result<bool> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let answer = tools.query(
        sh,
        admin,
        Access::ReadWrite,
        &format!(
            "select exists (select 1 from pg_database where datname = {})",
            literal(name)
        ),
    )?;
    Ok(answer == "t")
}

/// The temporary databases interrupted runs left for `target` that nobody uses, as a JSON
/// array: `<target>__npload_<pid>`, `<target>__npold_<pid>`, and `dev-db save`'s
/// `npsnaptmp_<key>_<pid>` and `npsnapold_<key>_<pid>` (see [`stale_of_dead_runs`]).
pub fn stale_query(target: &DbUrl) -> String {
    let base = base_name(&target.database);
    let key = snapshot_key_sql(target);
    let with_pid = |prefix: String| {
        format!(
            "(starts_with(datname, {0}) and substr(datname, length({0}) + 1) ~ '^[0-9]+$')",
            prefix
        )
    };
    let mut shapes = vec![
        with_pid(literal(&format!("{base}__npload_"))),
        with_pid(literal(&format!("{base}__npold_"))),
    ];
    for prefix in SNAPSHOT_TEMP_PREFIXES {
        shapes.push(with_pid(format!("{} || {key} || '_'", literal(prefix))));
    }
    // A schema template being built serves every target of its server.
    shapes.push(format!(
        "datname ~ '^{SCHEMA_BUILD_PREFIX}[0-9a-f]+_[0-9]+$'"
    ));
    // Nobody connected to it, and no session dropping it: a run hands the drop of the
    // database it replaced to a session that outlives it (`swap::drop_in_background`).
    format!(
        "coalesce((select json_agg(datname) from pg_database where ({}) \
         and not exists (select 1 from pg_stat_activity a where a.datname = pg_database.datname) \
         and not exists (select 1 from pg_stat_activity d where d.query ~* '^\\s*drop\\s+database' \
         and position(pg_database.datname in d.query) > 0)), '[]')",
        shapes.join(" or ")
    )
}

/// Of the names [`stale_query`] found, those whose run is not alive on this machine (a run
/// elsewhere that is alive holds the target's lock, which the caller holds).
pub fn stale_of_dead_runs(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter(|name| {
            let pid = name.rsplit('_').next().and_then(|p| p.parse::<u32>().ok());
            pid.is_none_or(|pid| pid != std::process::id() && !process::alive(pid))
        })
        .collect()
}

/// Removes the leftovers [`stale_query`] found. A database that cannot be removed is named
/// in a warning; the next run tries again.
pub fn drop_stale(cx: &Context, admin: &DbUrl, names: &[String]) {
    let (sh, tools) = (&cx.sh, &cx.tools);
    for name in names {
        term::step(format!(
            "removing {name}, left behind by an interrupted run"
        ));
        if let Err(err) = tools.query(
            sh,
            admin,
            Access::ReadWrite,
            &format!("drop database if exists {}", ident(name)),
        ) {
            term::warn(format!("could not remove {name}: {err}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(literal("o'neil"), "'o''neil'");
        assert!(temp_name(&"x".repeat(80), "load").len() < 63);
        assert_eq!(base_name("netpoint"), "netpoint");
        assert!(base_name("ü".repeat(30).as_str()).len() <= 40);
    }

    #[test]
    fn long_names_that_begin_alike_get_their_own_temporary_names() {
        let (a, b) = ("a".repeat(40) + "one", "a".repeat(40) + "two");
        assert_ne!(base_name(&a), base_name(&b));
        assert!(!base_name(&b).starts_with(&base_name(&a)));
        assert_eq!(base_name(&a), base_name(&a));
    }

    #[test]
    fn temporary_shapes_are_recognised() {
        for temp in [
            "netpoint__npload_123",
            "netpoint__npold_9",
            &temp_name("netpoint", "load"),
            &temp_name(&"x".repeat(60), "old"),
            "npsnaptmp_0123abcd_42",
            "npsnapold_0123abcd_42",
            "npspare_0123abcd_base",
            "npschema_1dd494b860175345f68e",
            "npschematmp_1dd494b86017_42",
        ] {
            assert!(is_temp_name(temp), "{temp}");
        }
        for plain in [
            "netpoint",
            "netpoint__npload_",
            "netpoint__npload_backup",
            "__npload_12",
            "npsnap_0123abcd_base",
            "netpoint_npold_1",
        ] {
            assert!(!is_temp_name(plain), "{plain}");
        }
    }

    #[test]
    fn only_dead_runs_leave_stale_databases() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let alive = child.id();
        let names = vec![
            format!("netpoint__npload_{alive}"),
            format!("netpoint__npload_{me}"),
            "netpoint__npold_4194999".to_string(),
        ];
        let stale = stale_of_dead_runs(names);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(stale, ["netpoint__npold_4194999"]);
    }
}
