//! A subset's schema copied from a template kept on the target server instead of built anew.
//!
//! Building pg_dump's pre- and post-data of NetBox's 190 tables (their 480 indexes and 650
//! constraints) takes a server about 1.7 s of work, whatever the subset holds; copying an
//! empty database that already holds them (`CREATE DATABASE ... TEMPLATE`) is a file-level
//! copy of its 20 MB, made while the closure is computed ([`Early`]). The template, `npschema_<hash>`, is named by a hash of both sections as the target gets them,
//! so a changed schema gets a template of its own. It is built once, under a temporary name
//! (`npschematmp_<hash>_<pid>`, removed as a leftover when its run dies), renamed when
//! whole, and never connected to again; a server keeps the three newest.
//!
//! Rows then load into tables whose keys exist, in one transaction with the deferrable
//! constraints deferred and the tables in an order that puts every row after those its
//! other foreign keys point at, so every constraint is checked as the classic load checks it.
//! That needs a schema whose post-data only indexes and constrains (no trigger, rule or
//! policy acting on the rows, no constraint left `NOT VALID`), keys that are not deferrable
//! forming no cycle, and a subset small enough for rows to go into indexed tables; otherwise
//! the schema is built anew as before.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    sync::{atomic::AtomicBool, mpsc, Arc},
    thread::JoinHandle,
};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use xshell::Shell;

use crate::{
    context::Context,
    media,
    pg::{
        sql::{ident, literal},
        Access, DbUrl, PgTools,
    },
    pipeline::{
        budget::{jobs_within_limits, Sessions},
        dump::{pump_dump, spawn_dump},
        load,
        parallel::schedule::{run_post_data, Event, Failure, PostData},
        swap::{self, SCHEMA_BUILD_PREFIX, SCHEMA_TEMPLATE_PREFIX},
    },
    plain::{lines, post_data::post_jobs, toc},
    term,
};

/// What a subset needs to copy its schema's template while its closure is computed: the
/// target's server, and the settings its load drops.
pub struct Early<'a> {
    pub sh: Shell,
    pub tools: &'a PgTools,
    pub admin: DbUrl,
    pub drop_settings: Vec<&'static str>,
}

/// What a subset computed beside the inspection of its source and target is given: the
/// target's server for the template's copy, sent once the run knows it may work there
/// (`None` when it may not), and a flag the run sets to abandon the subset when it stops.
pub struct Beside<'a> {
    pub early: mpsc::Receiver<Option<Early<'a>>>,
    pub abandon: Arc<AtomicBool>,
}

/// A copy of the schema's template made while the closure was computed, named as a build is
/// (`npschematmp_<hash>_<pid>`, a leftover if its run dies): renamed into place as the
/// temporary database, or dropped.
pub struct Prepared {
    name: String,
    template: String,
    admin: DbUrl,
    /// Whether it was the template's ready copy, renamed, rather than a copy made now.
    from_ready: bool,
}

impl Early<'_> {
    /// Takes the template's ready copy, or copies the template, when the server has one of
    /// this run's role for the schema. The third part says why a
    /// template the server has may not serve (another role owns it).
    pub fn prepare(
        self,
        schema: Schema,
    ) -> anyhow::Result<(Schema, Option<Prepared>, Option<String>)> {
        if schema.unfit().is_some() {
            return Ok((schema, None, None));
        }
        let template = schema.template_name(&self.drop_settings);
        let name = build_name(&template);
        let taken = self.tools.query(
            &self.sh,
            &self.admin,
            Access::ReadWrite,
            &take_sql(&template, &name),
        )?;
        let from_ready = match taken.as_str() {
            "ready" => true,
            "template" => false,
            "none" => return Ok((schema, None, None)),
            owner => {
                let owner = owner.strip_prefix("owner:").unwrap_or(owner);
                let why = format!(
                    "the template {template} belongs to the role {owner}, not to this run's"
                );
                term::warn(format!(
                    "{why}, so it is never copied and each subset builds its schema anew: ask {owner} or a superuser to drop it"
                ));
                return Ok((schema, None, Some(why)));
            }
        };
        if !from_ready {
            let copied = self.tools.query_state(
                &self.sh,
                &self.admin,
                &format!(
                    "create database {} template {}",
                    ident(&name),
                    ident(&template)
                ),
            )?;
            if copied.is_err() {
                return Ok((schema, None, None));
            }
        }
        let prepared = Prepared {
            name,
            template,
            admin: self.admin,
            from_ready,
        };
        Ok((schema, Some(prepared), None))
    }
}

/// One session's work on the server before a subset's load: renames the template's ready
/// copy to `name` when the template and the copy are both the role's (and opens it to
/// connections: a ready copy takes none), and answers in a word: `ready` (this block renamed
/// it), `template` (no ready copy could be taken), `none` (no template) or `owner:ROLE` (the
/// template is another role's: a database of that name planted by a role that may create
/// databases is never copied). The answer comes from the rename itself, never from a
/// database being there under `name`, which another role could have made. A rename that
/// fails (someone connected to the copy, `name` taken) leaves the template to be copied.
fn take_sql(template: &str, name: &str) -> String {
    let ready = ready_name(template);
    let owner = |db: &str| {
        format!(
            "(select datdba from pg_database where datname = {})",
            literal(db)
        )
    };
    let me = "(select oid from pg_roles where rolname = current_user)";
    format!(
        "do $np$ begin \
         if {t} = {me} and {r} = {me} then \
         execute format('alter database %I rename to %I', {ready}, {name}); \
         execute format('alter database %I allow_connections true', {name}); \
         perform set_config('netpoint.taken', 'ready', false); end if; \
         exception when object_in_use or duplicate_database then null; end $np$; \
         select case when current_setting('netpoint.taken', true) = 'ready' then 'ready' \
         when {t} is null then 'none' when {t} = {me} then 'template' \
         else 'owner:' || {t}::regrole::text end",
        t = owner(template),
        r = owner(&ready),
        ready = literal(&ready),
        name = literal(name),
    )
}

/// The name of the template's ready copy: a copy made in the background after a run that
/// used the template, which the next run renames into place instead of copying.
fn ready_name(template: &str) -> String {
    format!("{template}{READY_SUFFIX}")
}

const READY_SUFFIX: &str = "_ready";

/// Starts, detached from this run (see [`PgTools::detached`]), a copy of `template` under
/// its ready name for the next subset run, closed to connections. A copy that fails, because one is there already
/// or the disk is full, leaves nothing: a database exists under its name only once whole.
pub fn make_ready(cx: &Context, admin: &DbUrl, template: &str) {
    // Nobody connects to it (on PostgreSQL 13 and 14 any role that may log in could
    // otherwise leave objects in its `public` schema); the run that takes it opens it.
    let sql = format!(
        "create database {} template {} allow_connections false;\n",
        ident(&ready_name(template)),
        ident(template)
    );
    if let Err(err) = cx.tools.detached(&cx.sh, admin, &sql) {
        term::detail(format!(
            "no ready copy of the template {template} for the next run ({err:#})"
        ));
    }
}

impl Prepared {
    /// Renames the copy to `temp`; `false`, the copy dropped, when that fails.
    pub fn rename_to(self, cx: &Context, temp: &DbUrl) -> anyhow::Result<bool> {
        let renamed = cx.tools.query_state(
            &cx.sh,
            &self.admin,
            &format!(
                "alter database {} rename to {}",
                ident(&self.name),
                ident(&temp.database)
            ),
        )?;
        match renamed {
            Ok(_) => {
                term::detail(match self.from_ready {
                    true => format!(
                        "schema from the ready copy of the template {}",
                        self.template
                    ),
                    false => format!(
                        "schema copied from the template {} while the subset was computed",
                        self.template
                    ),
                });
                Ok(true)
            }
            Err(failure) => {
                term::detail(format!(
                    "the copy of the template {} could not take its place ({:#})",
                    self.template,
                    failure.into_error(&self.admin)
                ));
                self.discard(cx);
                Ok(false)
            }
        }
    }

    /// Unused, the copy is still the template's as made (nothing ever connected to it): it
    /// becomes the ready copy unless there is one, else it is dropped.
    pub fn discard(self, cx: &Context) {
        let kept = cx.tools.query_state(
            &cx.sh,
            &self.admin,
            &format!(
                "alter database {0} rename to {1}; alter database {1} allow_connections false",
                ident(&self.name),
                ident(&ready_name(&self.template))
            ),
        );
        if !matches!(kept, Ok(Ok(_))) {
            let _ = swap::drop_database(cx, &self.admin, &self.name);
        }
    }
}

/// The temporary name of a build or copy of `template`: this run's.
fn build_name(template: &str) -> String {
    let hash = &template[SCHEMA_TEMPLATE_PREFIX.len()..];
    format!(
        "{SCHEMA_BUILD_PREFIX}{}_{}",
        &hash[..12],
        std::process::id()
    )
}

/// Templates a server keeps: the newest, by creation.
const KEPT: usize = 3;

/// Rows picked above which the rows go into bare tables and the indexes are built after
/// them, as a full load does: faster for large subsets.
pub const MAX_ROWS: usize = 100_000;

/// Changes when what a template holds for the same sections changes.
const FORMAT: &str = "netpoint schema template 2";

/// The post-data entries a template may hold: they only index and constrain the rows.
const KEY_KINDS: [&str; 6] = [
    "INDEX",
    "CONSTRAINT",
    "FK CONSTRAINT",
    "INDEX ATTACH",
    "COMMENT",
    "STATISTICS",
];

/// pg_dump's two schema sections of a subset's snapshot.
pub struct Schema {
    pub pre: Vec<u8>,
    pub post: Vec<u8>,
}

/// The two sections being dumped in the background, side by side with the closure.
pub struct Dumping {
    pre: JoinHandle<anyhow::Result<Vec<u8>>>,
    post: JoinHandle<anyhow::Result<Vec<u8>>>,
}

impl Dumping {
    pub fn start(cx: &Context, source: &DbUrl, snapshot: &str) -> anyhow::Result<Dumping> {
        let section = |name: &'static str| -> anyhow::Result<JoinHandle<_>> {
            let extra = [
                format!("--section={name}"),
                format!("--snapshot={snapshot}"),
            ];
            let child = spawn_dump(cx, source, &[], &extra)?;
            let source = source.clone();
            Ok(std::thread::spawn(move || {
                let (text, _) = pump_dump(child, &source, Vec::new(), &[], None, false, |r| {
                    let mut text = Vec::new();
                    r.read_to_end(&mut text)?;
                    Ok(text)
                })
                .with_context(|| format!("dumping the schema's {name} section"))?;
                Ok(text)
            }))
        };
        Ok(Dumping {
            post: section("post-data")?,
            pre: section("pre-data")?,
        })
    }

    pub fn wait(self) -> anyhow::Result<Schema> {
        let join = |handle: JoinHandle<anyhow::Result<Vec<u8>>>| {
            handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        };
        Ok(Schema {
            pre: join(self.pre)?,
            post: join(self.post)?,
        })
    }
}

impl Schema {
    /// A section as the target gets it: the `SET` lines it would reject dropped.
    pub fn section<'a>(text: &'a [u8], drop_settings: Vec<&'static str>) -> impl Read + 'a {
        lines::edit_lines(text, lines::normaliser(drop_settings))
    }

    /// The template's name: a hash of both sections and of the settings dropped for the
    /// target (the dumps' run-dependent lines are already gone).
    pub fn template_name(&self, drop_settings: &[&str]) -> String {
        let mut hash = Sha256::new();
        hash.update(FORMAT);
        for part in [&self.pre, &self.post] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        for setting in drop_settings {
            hash.update([0]);
            hash.update(setting);
        }
        let hex = media::hex(&hash.finalize());
        format!("{SCHEMA_TEMPLATE_PREFIX}{}", &hex[..20])
    }

    /// Why rows cannot load into a copy of this schema's template, if they cannot.
    pub fn unfit(&self) -> Option<String> {
        let toc = toc::scan(self.post.as_slice()).expect("reading memory");
        if let Some(entry) = toc
            .entries
            .iter()
            .find(|e| !KEY_KINDS.contains(&e.kind.as_str()))
        {
            return Some(format!("the schema has a {} after its data", entry.kind));
        }
        let text = String::from_utf8_lossy(&self.post);
        text.contains(" NOT VALID")
            .then(|| "a constraint of the schema is NOT VALID".to_string())
    }

    /// Makes `temp` a copy of this schema's template on the server `admin` connects to,
    /// building the template first when the server lacks it. `false`, having said why in a
    /// detail line, when no template could serve: `temp` is then not there.
    pub fn create_from_template(
        &self,
        cx: &Context,
        admin: &DbUrl,
        temp: &DbUrl,
        drop_settings: &[&'static str],
        encoding: Option<&str>,
    ) -> anyhow::Result<bool> {
        let name = self.template_name(drop_settings);
        let create = || {
            cx.tools.query_state(
                &cx.sh,
                admin,
                &format!(
                    "create database {} template {}",
                    ident(&temp.database),
                    ident(&name)
                ),
            )
        };
        match create()? {
            Ok(_) => {
                term::detail(format!("schema copied from the template {name}"));
                return Ok(true);
            }
            // undefined_database: not built yet.
            Err(failure) if failure.state == "3D000" => {}
            Err(failure) => {
                term::detail(format!(
                    "building the schema anew: the template {name} could not be copied ({:#})",
                    failure.into_error(admin)
                ));
                return Ok(false);
            }
        }
        if let Err(err) = self.build(cx, admin, &name, drop_settings, encoding) {
            term::detail(format!(
                "building the schema anew: the template {name} could not be made ({err:#})"
            ));
            return Ok(false);
        }
        match create()? {
            Ok(_) => {
                term::detail(format!("schema copied from the new template {name}"));
                Ok(true)
            }
            Err(failure) => {
                term::detail(format!(
                    "building the schema anew: the new template {name} could not be copied ({:#})",
                    failure.into_error(admin)
                ));
                Ok(false)
            }
        }
    }

    /// Builds the template `name` under a temporary name and renames it when whole; one
    /// another run finished first is taken as it is. The oldest beyond [`KEPT`] go.
    fn build(
        &self,
        cx: &Context,
        admin: &DbUrl,
        name: &str,
        drop_settings: &[&'static str],
        encoding: Option<&str>,
    ) -> anyhow::Result<()> {
        let building = admin.with_database(&build_name(name));
        swap::create_temp(cx, admin, &building, encoding)?;
        let built = (|| {
            let psql = load::spawn_psql_load(cx, &building)?;
            let mut pre = Schema::section(&self.pre, drop_settings.to_vec());
            load::feed_psql(&building, psql, &mut pre, &|_| {})
                .context("loading the schema's pre-data section")?;
            run_post(
                cx,
                &building,
                &self.post,
                drop_settings,
                &HashMap::new(),
                false,
            )?;
            let renamed = cx.tools.query_state(
                &cx.sh,
                admin,
                &format!(
                    "alter database {} rename to {}",
                    ident(&building.database),
                    ident(name)
                ),
            )?;
            match renamed {
                // Nobody connects to it again: copies need no connection.
                Ok(_) => cx
                    .tools
                    .query_state(
                        &cx.sh,
                        admin,
                        &format!("alter database {} allow_connections false", ident(name)),
                    )?
                    .map(|_| true)
                    .map_err(|failure| failure.into_error(admin)),
                // duplicate_database: another run built the same template meanwhile.
                Err(failure) if failure.state == "42P04" => Ok(false),
                Err(failure) => Err(failure.into_error(admin)),
            }
        })();
        if !matches!(built, Ok(true)) {
            let _ = swap::drop_database(cx, admin, &building.database);
        }
        built?;
        prune(cx, admin);
        Ok(())
    }
}

/// Drops the templates beyond the newest [`KEPT`], with their ready copies; one being
/// copied right now stays.
fn prune(cx: &Context, admin: &DbUrl) {
    let query = format!(
        "select coalesce(json_agg(datname), '[]') from (select datname from pg_database \
         where datname ~ '^{SCHEMA_TEMPLATE_PREFIX}[0-9a-f]+$' order by oid desc offset {KEPT}) t"
    );
    let Ok(answer) = cx.tools.query(&cx.sh, admin, Access::ReadWrite, &query) else {
        return;
    };
    let old: Vec<String> = serde_json::from_str(&answer).unwrap_or_default();
    for name in old {
        // Without FORCE: a copy in progress keeps it.
        for db in [ready_name(&name), name] {
            let _ = cx.tools.query_state(
                &cx.sh,
                admin,
                &format!("drop database if exists {}", ident(&db)),
            );
        }
    }
    // Ready copies whose template is gone (dropped by hand, or pruned while the copy was
    // being made).
    let orphans = format!(
        "select coalesce(json_agg(r.datname), '[]') from pg_database r \
         where r.datname ~ '^{SCHEMA_TEMPLATE_PREFIX}[0-9a-f]+{READY_SUFFIX}$' and not exists \
         (select 1 from pg_database t where t.datname = left(r.datname, -{}))",
        READY_SUFFIX.len()
    );
    let Ok(answer) = cx.tools.query(&cx.sh, admin, Access::ReadWrite, &orphans) else {
        return;
    };
    let orphans: Vec<String> = serde_json::from_str(&answer).unwrap_or_default();
    for name in orphans {
        let _ = cx.tools.query_state(
            &cx.sh,
            admin,
            &format!("drop database if exists {}", ident(&name)),
        );
    }
}

/// Runs a post-data section on `url` on up to `cx.jobs` sessions, the statements that
/// would lock each other out never together; with `flush`, a checkpoint runs beside them
/// (see [`crate::pipeline::parallel::schedule::spawn_flush`]).
pub fn run_post(
    cx: &Context,
    url: &DbUrl,
    post: &[u8],
    drop_settings: &[&'static str],
    sizes: &HashMap<String, u64>,
    flush: bool,
) -> anyhow::Result<()> {
    let mut text = String::new();
    Schema::section(post, drop_settings.to_vec())
        .read_to_string(&mut text)
        .context("reading the schema's post-data section")?;
    let (header, jobs) = post_jobs(&text, sizes);
    // The post-data sessions, and the one that asks for a checkpoint.
    let sessions = jobs_within_limits(
        cx,
        cx.jobs,
        &[Sessions {
            url,
            per_job: 1,
            fixed: 1,
        }],
    );
    let (tx, rx) = mpsc::channel();
    // The rows are in: a checkpoint may start with the first index.
    let _ = tx.send(Event::StreamEnded);
    let post = PostData {
        header,
        jobs,
        loading: HashSet::new(),
        streams: 1,
        flush,
    };
    run_post_data(cx, url, post, sessions, (tx, rx), &Failure::default())
        .context("loading the schema's post-data section")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(post: &str) -> Schema {
        Schema {
            pre: b"CREATE TABLE public.t (id integer);\n".to_vec(),
            post: post.as_bytes().to_vec(),
        }
    }

    const INDEX: &str = "--\n-- Name: t_i; Type: INDEX; Schema: public; Owner: -\n--\n\nCREATE INDEX t_i ON public.t USING btree (id);\n\n\n";

    #[test]
    fn the_name_follows_the_schema_and_the_settings_dropped() {
        let a = schema(INDEX);
        assert_eq!(a.template_name(&[]), schema(INDEX).template_name(&[]));
        assert!(a.template_name(&[]).starts_with(SCHEMA_TEMPLATE_PREFIX));
        assert!(a.template_name(&[]).len() < 63);
        assert_ne!(a.template_name(&[]), schema("").template_name(&[]));
        assert_ne!(
            a.template_name(&[]),
            a.template_name(&["transaction_timeout"])
        );
        // Where one section ends and the next begins is part of the hash.
        let moved = Schema {
            pre: b"CREATE TABLE public.t (id integer);".to_vec(),
            post: format!("\n{INDEX}").into_bytes(),
        };
        assert_ne!(a.template_name(&[]), moved.template_name(&[]));
    }

    #[test]
    fn only_indexes_and_constraints_fit_a_template() {
        assert_eq!(schema(INDEX).unfit(), None);
        let trigger = format!("{INDEX}--\n-- Name: t x; Type: TRIGGER; Schema: public; Owner: -\n--\n\nCREATE TRIGGER x AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f();\n\n\n");
        assert_eq!(
            schema(&trigger).unfit().as_deref(),
            Some("the schema has a TRIGGER after its data")
        );
        let not_valid = "--\n-- Name: t c; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE public.t\n    ADD CONSTRAINT c CHECK ((id > 0)) NOT VALID;\n\n\n";
        assert!(schema(not_valid).unfit().is_some());
    }
}
