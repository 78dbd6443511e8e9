//! A reviewer's summary of the difference between two schema dumps: each object pg_dump
//! writes (tables and their columns, indexes, constraints, views, sequences, functions, types,
//! extensions, triggers, rules, policies, row-level security, publications, comments, ...)
//! that was added, removed or changed, with a diagram of the tables it touches above the list.
//! Two dumps that differ never summarise as unchanged.

use std::collections::{BTreeMap, BTreeSet};

pub mod diagram;
mod mermaid;
pub mod model;

use crate::plain::entry_header::EntryHeader;

/// One object of a dump, keyed by pg_dump's `-- Name: ...; Type: ...; Schema: ...` header.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: String,
    schema: String,
    name: String,
}

/// A dump split at its object headers.
struct Dump {
    /// What comes before the first object (the snapshot header and the session settings),
    /// and the settings pg_dump writes between objects, before the tables they apply to.
    settings: String,
    objects: BTreeMap<Key, String>,
}

/// Lines of the dump itself that follow whichever object precedes them: the settings
/// pg_dump writes where they first apply, and its closing comment. Kept apart, so that an
/// object added before them does not change its neighbour.
const INTERLUDES: &[&str] = &[
    "SET default_tablespace = ",
    "SET default_table_access_method = ",
    "SET default_with_oids = ",
    "-- PostgreSQL database dump complete",
];

fn parse(dump: &str) -> Dump {
    let mut settings = String::new();
    let mut objects: BTreeMap<Key, String> = BTreeMap::new();
    let mut current: Option<(Key, String)> = None;
    let store = |objects: &mut BTreeMap<Key, String>, (key, body): (Key, String)| {
        // Two entries under one header are kept together, so neither hides a change.
        let kept = objects.entry(key).or_default();
        if !kept.is_empty() {
            kept.push('\n');
        }
        kept.push_str(body.trim());
    };
    for line in dump.lines() {
        if let Some(key) = parse_header(line) {
            if let Some(done) = current.take() {
                store(&mut objects, done);
            }
            current = Some((key, String::new()));
        } else if line != "--" {
            let interlude = INTERLUDES.iter().any(|set| line.starts_with(set));
            let body = match current.as_mut() {
                Some((_, body)) if !interlude => body,
                _ => &mut settings,
            };
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some(done) = current {
        store(&mut objects, done);
    }
    Dump {
        settings: settings.trim().to_string(),
        objects,
    }
}

fn parse_header(line: &str) -> Option<Key> {
    // Schema dumps hold no data; a data header is no object of the schema.
    if !line.starts_with("-- Name: ") {
        return None;
    }
    let header = EntryHeader::parse(line)?;
    Some(Key {
        kind: header.kind,
        schema: header.schema,
        name: header.name,
    })
}

/// What a `CREATE TABLE` body holds: column name → definition, inline constraint name →
/// definition (`CONSTRAINT x CHECK (...)` lines), and every other line (the `CREATE` line
/// itself, storage parameters, `FORCE ROW LEVEL SECURITY`, ...).
#[derive(Default)]
struct TableItems {
    columns: BTreeMap<String, String>,
    constraints: BTreeMap<String, String>,
    others: BTreeSet<String>,
}

fn table_items(body: &str) -> TableItems {
    let mut items = TableItems::default();
    // Before, inside and after the column list.
    let mut inside = None;
    for line in body.lines() {
        let def = line.trim().trim_end_matches(',');
        match inside {
            None if line.starts_with("CREATE ") && line.ends_with('(') => inside = Some(true),
            Some(true) if line.starts_with(')') => inside = Some(false),
            Some(true) => {
                if let Some(constraint) = def.strip_prefix("CONSTRAINT ") {
                    if let Some((name, rest)) = split_identifier(constraint) {
                        items.constraints.insert(name, rest.to_string());
                    }
                } else if let Some((name, rest)) = split_identifier(def) {
                    items.columns.insert(name, rest.to_string());
                }
                continue;
            }
            _ => {}
        }
        if !matches!(def, "" | ")" | ");") {
            items.others.insert(def.to_string());
        }
    }
    items
}

fn split_identifier(def: &str) -> Option<(String, &str)> {
    if let Some(quoted) = def.strip_prefix('"') {
        let end = quoted.find("\" ")?;
        Some((format!("\"{}\"", &quoted[..end]), &quoted[end + 2..]))
    } else {
        let (name, rest) = def.split_once(' ')?;
        Some((name.to_string(), rest))
    }
}

/// How a reviewer calls an object kind: pg_dump's own name, in sentence case, where that
/// reads well.
fn label(kind: &str) -> String {
    let named = match kind {
        "FK CONSTRAINT" => "Foreign key",
        "CHECK CONSTRAINT" => "Constraint",
        "DEFAULT" => "Column default",
        "PROCEDURAL LANGUAGE" => "Language",
        "STATISTICS" => "Extended statistics",
        "SERVER" => "Foreign server",
        "SHELL TYPE" => "Type",
        "SEQUENCE OWNED BY" => "Sequence ownership",
        "TABLE ATTACH" => "Partition attachment",
        "INDEX ATTACH" => "Partition index attachment",
        _ => {
            let lower = kind.to_lowercase();
            let mut chars = lower.chars();
            return match chars.next() {
                Some(first) => first.to_uppercase().chain(chars).collect(),
                None => "Object".to_string(),
            };
        }
    };
    named.to_string()
}

fn qualified(key: &Key, name: &str) -> String {
    if key.schema.is_empty() || key.schema == "-" {
        name.to_string()
    } else {
        format!("{}.{}", key.schema, name)
    }
}

fn object_name(key: &Key) -> String {
    match key.kind.as_str() {
        // pg_dump names these "<table> <object>".
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" | "TRIGGER" | "POLICY" | "RULE" => {
            match key.name.split_once(' ') {
                Some((table, object)) => format!("`{object}` on `{}`", qualified(key, table)),
                None => format!("`{}`", qualified(key, &key.name)),
            }
        }
        "DEFAULT" => match key.name.split_once(' ') {
            Some((table, column)) => format!("`{}.{column}`", qualified(key, table)),
            None => format!("`{}`", qualified(key, &key.name)),
        },
        // "<KIND> <name>", the kind in capitals: `TABLE dcim_site`, `COLUMN dcim_site.name`.
        "COMMENT" | "SECURITY LABEL" => {
            let words: Vec<&str> = key.name.split(' ').collect();
            let kind_words = words
                .iter()
                .take(words.len().saturating_sub(1))
                .take_while(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase()))
                .count();
            if kind_words == 0 {
                return format!("on `{}`", key.name);
            }
            let target = words[..kind_words].join(" ").to_lowercase();
            let rest = words[kind_words..].join(" ");
            match rest.split_once(" ON ") {
                Some((object, table)) => {
                    format!("on {target} `{object}` on `{}`", qualified(key, table))
                }
                None => format!("on {target} `{}`", qualified(key, &rest)),
            }
        }
        _ => format!("`{}`", qualified(key, &key.name)),
    }
}

#[derive(Clone, Copy)]
enum Change {
    Added,
    Changed,
    Removed,
}

fn describe(key: &Key, change: Change) -> String {
    let verb = match change {
        Change::Added => "added",
        Change::Changed => "changed",
        Change::Removed => "removed",
    };
    match key.kind.as_str() {
        "ROW SECURITY" => {
            let state = match change {
                Change::Added => "enabled",
                Change::Changed => "changed",
                Change::Removed => "disabled",
            };
            format!(
                "- Row-level security {state} on `{}`",
                qualified(key, &key.name)
            )
        }
        "PUBLICATION TABLE" => match key.name.split_once(' ') {
            Some((publication, table)) => {
                let how = match change {
                    Change::Added => "added to",
                    Change::Changed => "changed in",
                    Change::Removed => "removed from",
                };
                format!(
                    "- Table `{}` {how} publication `{publication}`",
                    qualified(key, table)
                )
            }
            None => format!("- Publication table `{}` {verb}", key.name),
        },
        _ => format!("- {} {} {verb}", label(&key.kind), object_name(key)),
    }
}

/// Markdown bullet lines naming each change from `old` to `new`: empty exactly when the two
/// texts are equal.
pub fn changes(old_text: &str, new_text: &str) -> Vec<String> {
    let old = parse(old_text);
    let new = parse(new_text);
    let mut lines = Vec::new();
    if old.settings != new.settings {
        lines.push(
            "- Session settings (`SET ...` lines of the dump) changed: see the diff".to_string(),
        );
    }
    for (key, body) in &new.objects {
        match old.objects.get(key) {
            None => lines.push(describe(key, Change::Added)),
            Some(old_body) if old_body != body => {
                if key.kind == "TABLE" {
                    lines.extend(table_changes(key, old_body, body));
                } else {
                    lines.push(describe(key, Change::Changed));
                }
            }
            Some(_) => {}
        }
    }
    for key in old
        .objects
        .keys()
        .filter(|key| !new.objects.contains_key(*key))
    {
        lines.push(describe(key, Change::Removed));
    }
    // Whatever the objects say, different dumps are a change: blank lines, order, text
    // outside any object.
    if lines.is_empty() && old_text != new_text {
        lines.push("- Other changes (layout or order of the dump): see the diff".to_string());
    }
    lines
}

fn table_changes(key: &Key, old: &str, new: &str) -> Vec<String> {
    let table = qualified(key, &key.name);
    let old = table_items(old);
    let new = table_items(new);
    let mut lines = Vec::new();
    for (name, def) in &new.columns {
        match old.columns.get(name) {
            None => lines.push(format!("- Column `{table}.{name}` added: `{def}`")),
            Some(old_def) if old_def != def => lines.push(format!(
                "- Column `{table}.{name}` changed: `{old_def}` → `{def}`"
            )),
            Some(_) => {}
        }
    }
    for name in old.columns.keys().filter(|n| !new.columns.contains_key(*n)) {
        lines.push(format!("- Column `{table}.{name}` removed"));
    }
    // CHECK constraints live inside CREATE TABLE: name them like the separate ones.
    for (name, def) in &new.constraints {
        match old.constraints.get(name) {
            None => lines.push(format!("- Constraint `{name}` on `{table}` added: `{def}`")),
            Some(old_def) if old_def != def => lines.push(format!(
                "- Constraint `{name}` on `{table}` changed: `{old_def}` → `{def}`"
            )),
            Some(_) => {}
        }
    }
    for name in old
        .constraints
        .keys()
        .filter(|n| !new.constraints.contains_key(*n))
    {
        lines.push(format!("- Constraint `{name}` on `{table}` removed"));
    }
    for line in new.others.difference(&old.others) {
        lines.push(format!("- Table `{table}`: `{line}` added"));
    }
    for line in old.others.difference(&new.others) {
        lines.push(format!("- Table `{table}`: `{line}` removed"));
    }
    if lines.is_empty() {
        lines.push(format!("- Table `{table}` changed"));
    }
    lines
}

/// The pull-request summary of the change from `old_text` (the file `file`) to `new_text`:
/// a diagram of the touched tables (or why there is none), then every change.
pub fn markdown(old_text: &str, new_text: &str, file: &str) -> String {
    let changes = changes(old_text, new_text);
    if changes.is_empty() {
        return format!("No schema changes: the database matches `{file}`.\n");
    }
    let mut out = format!("### Schema changes against `{file}`\n\n");
    match diagram::of_change(old_text, new_text) {
        diagram::Drawing::Nothing => {}
        diagram::Drawing::TooBig(why) => {
            out.push_str(&format!(
                "_No diagram: {why}; the list below names every change._\n\n"
            ));
        }
        diagram::Drawing::Diagram(source) => {
            out.push_str(&format!("```mermaid\n{source}```\n\n"));
        }
    }
    for line in changes {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "\
--
-- Name: dcim_site; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.dcim_site (
    id bigint NOT NULL,
    name character varying(100) NOT NULL,
    status character varying(50) NOT NULL,
    CONSTRAINT dcim_site_check CHECK ((id > 0))
);

--
-- Name: dcim_site dcim_site_name_key; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.dcim_site
    ADD CONSTRAINT dcim_site_name_key UNIQUE (name);

--
-- Name: old_view; Type: VIEW; Schema: public; Owner: -
--

CREATE VIEW public.old_view AS SELECT 1;
";

    #[test]
    fn names_each_change() {
        let new = OLD
            .replace("    status character varying(50) NOT NULL,\n", "    status text,\n    facility text DEFAULT ''::text,\n")
            .replace("    name character varying(100) NOT NULL,\n", "")
            .replace("    facility text DEFAULT ''::text,\n    CONSTRAINT dcim_site_check CHECK ((id > 0))\n", "    facility text DEFAULT ''::text\n")
            .replace("ADD CONSTRAINT dcim_site_name_key UNIQUE (name);", "")
            .replace(
                "-- Name: dcim_site dcim_site_name_key; Type: CONSTRAINT; Schema: public; Owner: -",
                "-- Name: dcim_site_status_idx; Type: INDEX; Schema: public; Owner: -",
            );
        let lines = changes(OLD, &new).join("\n");
        for expected in [
            "Column `public.dcim_site.facility` added: `text DEFAULT ''::text`",
            "Column `public.dcim_site.status` changed: `character varying(50) NOT NULL` → `text`",
            "Column `public.dcim_site.name` removed",
            "Index `public.dcim_site_status_idx` added",
            "Constraint `dcim_site_name_key` on `public.dcim_site` removed",
            "Constraint `dcim_site_check` on `public.dcim_site` removed",
        ] {
            assert!(lines.contains(expected), "missing {expected:?} in\n{lines}");
        }
        assert!(!lines.contains("old_view"));
    }

    #[test]
    fn no_changes_is_one_line() {
        assert!(changes(OLD, OLD).is_empty());
        assert_eq!(markdown(OLD, OLD, "fixtures/schema.sql").lines().count(), 1);
    }

    const PREAMBLE: &str = "\
-- NetPoint schema snapshot, PostgreSQL 15
--
-- PostgreSQL database dump
--

SET statement_timeout = 0;
SET client_encoding = 'UTF8';
SELECT pg_catalog.set_config('search_path', '', false);
SET row_security = off;

";

    /// A dump laid out as pg_dump writes it, from `(header, statements)` pairs.
    fn dump(objects: &[(&str, &str)]) -> String {
        let mut out = PREAMBLE.to_string();
        for (header, sql) in objects {
            out.push_str(&format!(
                "--\n-- Name: {header}; Owner: -\n--\n\n{sql}\n\n\n"
            ));
        }
        out + "--\n-- PostgreSQL database dump complete\n--\n\n"
    }

    const FUNCTION: (&str, &str) = (
        "trg(); Type: FUNCTION; Schema: public",
        "CREATE FUNCTION public.trg() RETURNS trigger\n    LANGUAGE plpgsql\n    AS $$ begin return new; end $$;",
    );
    const TABLE_SETTINGS: &str =
        "SET default_tablespace = '';\n\nSET default_table_access_method = heap;\n";
    const LOG: (&str, &str) = (
        "log; Type: TABLE; Schema: public",
        "CREATE TABLE public.log (\n    id integer\n);",
    );
    const T: (&str, &str) = (
        "t; Type: TABLE; Schema: public",
        "CREATE TABLE public.t (\n    id integer NOT NULL,\n    name text\n);",
    );
    const T_FORCED: (&str, &str) = (
        "t; Type: TABLE; Schema: public",
        "CREATE TABLE public.t (\n    id integer NOT NULL,\n    name text\n);\n\nALTER TABLE ONLY public.t FORCE ROW LEVEL SECURITY;",
    );
    const T_PKEY: (&str, &str) = (
        "t t_pkey; Type: CONSTRAINT; Schema: public",
        "ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);",
    );

    /// What pg_dump 15 writes for each kind an earlier summary left out, and the line that
    /// names it when it appears.
    const KINDS: &[((&str, &str), &str)] = &[
        (
            ("pg_trgm; Type: EXTENSION; Schema: -", "CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;"),
            "- Extension `pg_trgm` added",
        ),
        (
            ("EXTENSION pg_trgm; Type: COMMENT; Schema: -", "COMMENT ON EXTENSION pg_trgm IS 'x';"),
            "- Comment on extension `pg_trgm` added",
        ),
        (
            ("mood; Type: TYPE; Schema: public", "CREATE TYPE public.mood AS ENUM (\n    'a',\n    'b'\n);"),
            "- Type `public.mood` added",
        ),
        (
            ("posint; Type: DOMAIN; Schema: public", "CREATE DOMAIN public.posint AS integer\n\tCONSTRAINT posint_check CHECK ((VALUE > 0));"),
            "- Domain `public.posint` added",
        ),
        (
            ("myagg(integer); Type: AGGREGATE; Schema: public", "CREATE AGGREGATE public.myagg(integer) (\n    SFUNC = int4pl,\n    STYPE = integer\n);"),
            "- Aggregate `public.myagg(integer)` added",
        ),
        (
            ("TABLE t; Type: COMMENT; Schema: public", "COMMENT ON TABLE public.t IS 'hello';"),
            "- Comment on table `public.t` added",
        ),
        (
            ("COLUMN t.name; Type: COMMENT; Schema: public", "COMMENT ON COLUMN public.t.name IS 'n';"),
            "- Comment on column `public.t.name` added",
        ),
        (
            ("CONSTRAINT t_pkey ON t; Type: COMMENT; Schema: public", "COMMENT ON CONSTRAINT t_pkey ON public.t IS 'k';"),
            "- Comment on constraint `t_pkey` on `public.t` added",
        ),
        (
            ("st1; Type: STATISTICS; Schema: public", "CREATE STATISTICS public.st1 ON id, name FROM public.t;"),
            "- Extended statistics `public.st1` added",
        ),
        (
            ("log r1; Type: RULE; Schema: public", "CREATE RULE r1 AS\n    ON INSERT TO public.log DO INSTEAD NOTHING;"),
            "- Rule `r1` on `public.log` added",
        ),
        (
            ("t tg1; Type: TRIGGER; Schema: public", "CREATE TRIGGER tg1 BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.trg();"),
            "- Trigger `tg1` on `public.t` added",
        ),
        (
            ("t p1; Type: POLICY; Schema: public", "CREATE POLICY p1 ON public.t FOR SELECT USING ((id > 0));"),
            "- Policy `p1` on `public.t` added",
        ),
        (
            ("t; Type: ROW SECURITY; Schema: public", "ALTER TABLE public.t ENABLE ROW LEVEL SECURITY;"),
            "- Row-level security enabled on `public.t`",
        ),
        (
            ("pub1; Type: PUBLICATION; Schema: -", "CREATE PUBLICATION pub1 WITH (publish = 'insert, update, delete, truncate');"),
            "- Publication `pub1` added",
        ),
        (
            ("pub1 t; Type: PUBLICATION TABLE; Schema: public", "ALTER PUBLICATION pub1 ADD TABLE ONLY public.t;"),
            "- Table `public.t` added to publication `pub1`",
        ),
        (
            ("et; Type: EVENT TRIGGER; Schema: -", "CREATE EVENT TRIGGER et ON ddl_command_start\n   EXECUTE FUNCTION public.trg();"),
            "- Event trigger `et` added",
        ),
        (
            ("srv; Type: SERVER; Schema: -", "CREATE SERVER srv FOREIGN DATA WRAPPER fdw;"),
            "- Foreign server `srv` added",
        ),
        (
            ("CAST (public.mood AS text); Type: CAST; Schema: -", "CREATE CAST (public.mood AS text) WITH INOUT;"),
            "- Cast `CAST (public.mood AS text)` added",
        ),
        (
            ("nothing_known; Type: A KIND OF ITS OWN; Schema: public", "CREATE SOMETHING;"),
            "- A kind of its own `public.nothing_known` added",
        ),
    ];

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![FUNCTION, LOG, T, T_PKEY]
    }

    #[test]
    fn names_each_kind_added_and_removed() {
        let before = dump(&base());
        for (object, added) in KINDS {
            let mut objects = base();
            objects.push(*object);
            let after = dump(&objects);
            assert_eq!(changes(&before, &after), vec![added.to_string()]);
            let removed = changes(&after, &before);
            assert_eq!(removed.len(), 1, "{removed:?}");
            assert_ne!(removed[0], *added);
            assert!(!removed[0].contains("added"), "{removed:?}");
        }
        let mut secured = base();
        secured.push(
            KINDS
                .iter()
                .find(|(_, l)| l.contains("Row-level"))
                .unwrap()
                .0,
        );
        assert_eq!(
            changes(&dump(&secured), &before),
            vec!["- Row-level security disabled on `public.t`"]
        );
        let mut published = base();
        published.push(
            KINDS
                .iter()
                .find(|(_, l)| l.contains("publication `pub1`"))
                .unwrap()
                .0,
        );
        assert_eq!(
            changes(&dump(&published), &before),
            vec!["- Table `public.t` removed from publication `pub1`"]
        );
    }

    #[test]
    fn names_changes_inside_objects() {
        let before = dump(&base());
        let forced = dump(&[FUNCTION, LOG, T_FORCED, T_PKEY]);
        assert_eq!(
            changes(&before, &forced),
            vec!["- Table `public.t`: `ALTER TABLE ONLY public.t FORCE ROW LEVEL SECURITY;` added"]
        );
        let unlogged = before.replace(
            "CREATE TABLE public.log (",
            "CREATE UNLOGGED TABLE public.log (",
        );
        let lines = changes(&before, &unlogged);
        assert!(
            lines.contains(
                &"- Table `public.log`: `CREATE UNLOGGED TABLE public.log (` added".to_string()
            ),
            "{lines:?}"
        );
        assert!(!lines.iter().any(|l| l.contains("Column")), "{lines:?}");
        let body = before.replace("return new;", "return null;");
        assert_eq!(
            changes(&before, &body),
            vec!["- Function `public.trg()` changed"]
        );
    }

    #[test]
    fn settings_between_objects_belong_to_none() {
        // pg_dump writes the table settings once, after whatever object precedes the first
        // table: a function added there moves them, and is the only change.
        let with_settings = |objects: &[(&str, &str)]| {
            let text = dump(objects);
            let at = text.find("--\n-- Name: log;").unwrap();
            format!("{}{TABLE_SETTINGS}\n{}", &text[..at], &text[at..])
        };
        let before = with_settings(&base());
        let added = (
            "zz(); Type: FUNCTION; Schema: public",
            "CREATE FUNCTION public.zz() RETURNS integer\n    LANGUAGE sql\n    AS $$ select 1 $$;",
        );
        let after = with_settings(&[FUNCTION, added, LOG, T, T_PKEY]);
        assert_eq!(
            changes(&before, &after),
            vec!["- Function `public.zz()` added"]
        );
        let other_method = before.replace("= heap;", "= columnar;");
        assert_eq!(
            changes(&before, &other_method),
            vec!["- Session settings (`SET ...` lines of the dump) changed: see the diff"]
        );
    }

    /// However two dumps differ, the summary says they do: every line removed, every line
    /// edited, blank lines, objects in another order.
    #[test]
    fn different_dumps_never_summarise_as_unchanged() {
        let mut objects = base();
        objects.extend(KINDS.iter().map(|(object, _)| *object));
        let text = dump(&objects);
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut variants = Vec::new();
        for i in 0..lines.len() {
            let mut removed = lines.clone();
            removed.remove(i);
            variants.push(removed.concat());
            let mut edited: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            edited[i] = edited[i].replacen('\n', " \n", 1);
            variants.push(edited.concat());
            let mut doubled = lines.clone();
            doubled.insert(i, "\n");
            variants.push(doubled.concat());
        }
        let mut swapped = objects.clone();
        swapped.swap(0, 1);
        variants.push(dump(&swapped));
        variants.push(format!("{text}-- a trailing comment\n"));
        for variant in variants {
            assert_ne!(variant, text);
            for (old, new) in [(&text, &variant), (&variant, &text)] {
                let found = changes(old, new);
                assert!(
                    !found.is_empty(),
                    "no change found between\n{old}\nand\n{new}"
                );
                assert!(!markdown(old, new, "schema.sql").contains("No schema changes"));
            }
        }
        assert!(changes(&text, &text).is_empty());
    }
}
