//! The names of a run's temporary databases, those an interrupted run left behind, and
//! putting back a swap a killed run left half done.

use xshell::Shell;

use crate::{
    pg::{
        sql::{ident, literal},
        Access, DbUrl, PgTools,
    },
    process, term,
};

use super::{drop_database, swap};

pub fn base_name(database: &str) -> String {
    let mut end = database.len().min(40);
    while !database.is_char_boundary(end) {
        end -= 1;
    }
    database[..end].to_string()
}

pub fn temp_name(database: &str, kind: &str) -> String {
    format!("{}__np{kind}_{}", base_name(database), std::process::id())
}

/// The name the target's previous database has during this run's swap.
pub fn aside_name(database: &str) -> String {
    temp_name(database, "old")
}

/// Undoes a swap that a killed run left half done: `aside` (the previous database) goes back
/// in place of the target, and the database the run had put there is dropped.
pub fn put_back(
    sh: &Shell,
    tools: &PgTools,
    admin: &DbUrl,
    target: &DbUrl,
    aside: &str,
) -> anyhow::Result<()> {
    let unwanted = temp_name(&target.database, "load");
    process::critical(|| {
        swap(sh, tools, admin, target, aside, &unwanted, false)?;
        drop_database(sh, tools, admin, &unwanted)
    })
}

/// Whether a database of this name exists on the server `admin` connects to.
pub fn exists(sh: &Shell, tools: &PgTools, admin: &DbUrl, name: &str) -> anyhow::Result<bool> {
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

/// The temporary databases an interrupted run left beside `database` that nobody uses, as
/// a JSON array (see [`temp_name`]).
pub fn stale_query(database: &str) -> String {
    let base = base_name(database)
        .replace('\\', "\\\\")
        .replace('_', "\\_")
        .replace('%', "\\%");
    format!(
        "coalesce((select json_agg(datname) from pg_database where (datname like {0} or datname like {1}) \
         and not exists (select 1 from pg_stat_activity a where a.datname = pg_database.datname)), '[]')",
        literal(&format!("{base}\\_\\_npload\\_%")),
        literal(&format!("{base}\\_\\_npold\\_%")),
    )
}

/// Removes the `<target>__npload_*` and `<target>__npold_*` databases [`stale_query`] found.
pub fn drop_stale(sh: &Shell, tools: &PgTools, admin: &DbUrl, names: &[String]) {
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
        assert_eq!(base_name("ü".repeat(30).as_str()).len(), 40);
    }
}
