//! How many jobs a load may run: the job count, lowered until its sessions fit in what
//! the servers, roles and databases still accept.

use anyhow::Context as _;
use xshell::Shell;

use crate::{
    context::Context,
    pg::{Access, DbUrl, PgTools},
    term,
};

/// The sessions a load keeps open at once on one database: `per_job` for each job, and
/// `fixed` more whatever the job count (the snapshot holder, the checkpoint session).
pub struct Sessions<'a> {
    pub url: &'a DbUrl,
    pub per_job: usize,
    pub fixed: usize,
}

/// How many more sessions a server, a role and a database accept, as the server reports it.
pub struct Room {
    /// The server's own identity, so that two URLs naming one server count together.
    server: String,
    role: String,
    /// `max_connections` less the reserved slots and the sessions in use (ours excluded).
    server_free: i64,
    server_detail: String,
    /// For roles and databases with a `CONNECTION LIMIT` that applies (not to superusers).
    role_free: Option<(i64, String)>,
    database_free: Option<(i64, String)>,
}

pub const ROOM_QUERY: &str = "\
with clients as (select usesysid, datid from pg_stat_activity where backend_type = 'client backend') \
select json_build_object('server', (select system_identifier from pg_control_system())::text, 'role', session_user, \
 'max', current_setting('max_connections')::int, \
 'reserved', current_setting('superuser_reserved_connections')::int \
  + coalesce(current_setting('reserved_connections', true)::int, 0), \
 'used', (select count(*) from clients) - 1, \
 'superuser', r.rolsuper, 'role_limit', r.rolconnlimit, 'role_used', (select count(*) from clients where usesysid = r.oid) - 1, \
 'db_limit', d.datconnlimit, 'db_used', (select count(*) from clients where datid = d.oid) - 1) \
from pg_roles r, pg_database d where r.rolname = session_user and d.datname = current_database()";

/// The answer to [`ROOM_QUERY`].
#[derive(serde::Deserialize)]
pub struct RoomAnswer {
    server: String,
    role: String,
    max: i64,
    reserved: i64,
    used: i64,
    superuser: bool,
    role_limit: i64,
    role_used: i64,
    db_limit: i64,
    db_used: i64,
}

pub fn room(sh: &Shell, tools: &PgTools, url: &DbUrl) -> anyhow::Result<Room> {
    let answer = tools.query(sh, url, Access::ReadOnly, ROOM_QUERY)?;
    let RoomAnswer {
        server,
        role,
        max,
        reserved,
        used,
        superuser,
        role_limit,
        role_used,
        db_limit,
        db_used,
    } = serde_json::from_str(&answer).with_context(|| {
        format!("unexpected answer about connection limits from {url}: {answer}")
    })?;
    let at = url.host_port();
    // Superusers are held to neither limit; -1 is no limit.
    let limited = |limit: i64, used: i64, what: String| -> Option<(i64, String)> {
        (!superuser && limit >= 0).then(|| {
            (
                limit - used,
                format!("{what} on {at} has CONNECTION LIMIT {limit} and {used} sessions in use"),
            )
        })
    };
    let role_free = limited(role_limit, role_used, format!("role `{role}`"));
    Ok(Room {
        server,
        role,
        server_free: max - reserved - used,
        server_detail: format!(
            "{at} allows max_connections {max}, {reserved} of them reserved, {used} in use"
        ),
        role_free,
        database_free: limited(db_limit, db_used, format!("database `{}`", url.database)),
    })
}

/// The most jobs, up to `wanted`, whose sessions fit in every room, and what limited them.
/// Demands on one server count together against it, and against a role they share there.
pub fn fit(wanted: usize, demands: &[Sessions<'_>], rooms: &[Room]) -> (usize, Option<String>) {
    // Each limit: the sessions it still accepts, and the demands that count against it.
    let mut limits: Vec<(i64, Vec<usize>, &str)> = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let same_server = |k: &usize| rooms[*k].server == room.server;
        if !(0..i).any(|k| same_server(&k)) {
            let together = (0..rooms.len()).filter(same_server).collect();
            limits.push((room.server_free, together, &room.server_detail));
        }
        let same_role = |k: &usize| same_server(k) && rooms[*k].role == room.role;
        if let Some((free, detail)) = &room.role_free {
            if !(0..i).any(|k| same_role(&k)) {
                limits.push((*free, (0..rooms.len()).filter(same_role).collect(), detail));
            }
        }
        if let Some((free, detail)) = &room.database_free {
            limits.push((*free, vec![i], detail));
        }
    }
    let mut allowed = wanted;
    let mut reason = None;
    for (free, together, detail) in limits {
        let per_job: usize = together.iter().map(|&k| demands[k].per_job).sum();
        let fixed: usize = together.iter().map(|&k| demands[k].fixed).sum();
        let fits = usize::try_from(free).unwrap_or(0).saturating_sub(fixed) / per_job.max(1);
        if fits < allowed {
            allowed = fits;
            reason = Some(format!(
                "{detail}, and a load opens {per_job} sessions there per job plus {fixed}"
            ));
        }
    }
    (allowed, reason)
}

/// `wanted` jobs, lowered so that the sessions of a load on that many jobs fit in what the
/// servers, the roles and the databases still accept; a step line says when and why. Below
/// 2, the load goes in one stream. Where the limits cannot be read, `wanted`.
pub fn jobs_within_limits(cx: &Context, wanted: usize, demands: &[Sessions<'_>]) -> usize {
    let (allowed, reason) = fitting_jobs(cx, wanted, demands);
    if let Some(reason) = reason {
        match allowed {
            0 | 1 => term::step(format!(
                "loading in one stream instead of on {wanted} jobs: {reason}"
            )),
            _ => term::step(format!(
                "loading on {allowed} jobs instead of {wanted}: {reason}"
            )),
        }
    }
    allowed
}

/// `wanted` jobs, lowered so that `demands` fit in what the servers, roles and databases
/// still accept, and what lowered it; `wanted` where the limits cannot be read.
pub fn fitting_jobs(
    cx: &Context,
    wanted: usize,
    demands: &[Sessions<'_>],
) -> (usize, Option<String>) {
    let (sh, tools) = (&cx.sh, &cx.tools);
    if wanted < 2 {
        return (wanted, None);
    }
    let rooms = std::thread::scope(|scope| {
        let asked: Vec<_> = demands
            .iter()
            .map(|demand| {
                let sh = sh.clone();
                scope.spawn(move || room(&sh, tools, demand.url))
            })
            .collect();
        asked
            .into_iter()
            .map(|a| a.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<anyhow::Result<Vec<Room>>>()
    });
    let rooms = match rooms {
        Ok(rooms) => rooms,
        Err(err) => {
            term::detail(format!("connection limits not checked: {err:#}"));
            return (wanted, None);
        }
    };
    fit(wanted, demands, &rooms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_fit_in_every_limit_they_count_against() {
        let room = |server: &str, role: &str, free: i64| Room {
            server: server.into(),
            role: role.into(),
            server_free: free,
            server_detail: format!("server {server}"),
            role_free: None,
            database_free: None,
        };
        let (source, target) = (
            DbUrl::parse("postgres://u@prod/netpoint").unwrap(),
            DbUrl::parse("postgres://u@dev/netpoint").unwrap(),
        );
        let demands = [
            Sessions {
                url: &source,
                per_job: 2,
                fixed: 1,
            },
            Sessions {
                url: &target,
                per_job: 3,
                fixed: 1,
            },
        ];
        // Roomy servers: as asked.
        assert_eq!(
            fit(16, &demands, &[room("a", "u", 97), room("b", "u", 97)]),
            (16, None)
        );
        // Two servers, each its own limit: (17 - 1) / 2 on the source, (17 - 1) / 3 on the target.
        let (jobs, why) = fit(16, &demands, &[room("a", "u", 17), room("b", "u", 17)]);
        assert_eq!(jobs, 5);
        assert!(why
            .unwrap()
            .starts_with("server b, and a load opens 3 sessions there per job plus 1"));
        // One server: both count against it, (17 - 2) / 5.
        let (jobs, why) = fit(16, &demands, &[room("a", "u", 17), room("a", "u", 17)]);
        assert_eq!(jobs, 3);
        assert!(why.unwrap().contains("5 sessions there per job plus 2"));
        // A role's limit counts both sides when they share the role on one server.
        let mut limited = [room("a", "u", 97), room("a", "u", 97)];
        limited[0].role_free = Some((12, "role u".into()));
        limited[1].role_free = Some((12, "role u".into()));
        assert_eq!(fit(16, &demands, &limited).0, 2);
        limited[1].role = "other".into();
        limited[1].role_free = None;
        assert_eq!(fit(16, &demands, &limited).0, 5);
        // A database's limit counts only the sessions on it; no room at all is no job.
        let mut full = [room("a", "u", 97), room("b", "u", 97)];
        full[1].database_free = Some((7, "database".into()));
        assert_eq!(fit(16, &demands, &full).0, 2);
        full[0].server_free = -3;
        assert_eq!(fit(16, &demands, &full).0, 0);
    }
}
