//! A schema change as a Mermaid `erDiagram`: the tables it touches with their columns, their
//! direct foreign-key neighbours with their key columns, and what changed marked in the
//! attributes' comments, the tables' labels and the relationships' labels. The same two
//! schemas give the same bytes.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::mermaid;
use super::model::{Schema, Table, TableDef};
use crate::remedy::{self, Remedy};

/// More tables than this make a diagram nobody reads.
pub const MAX_TABLES: usize = 25;
/// Mermaid's default `maxTextSize` is 50,000 characters, and a code host's comment holds
/// about 65,000 with the list below it.
pub const MAX_CHARS: usize = 40_000;

/// What the summary of a change shows above its list.
#[derive(Debug, PartialEq, Eq)]
pub enum Drawing {
    /// No table was touched (functions, views, comments, layout only).
    Nothing,
    /// Why there is no diagram: the change is too big for one.
    TooBig(String),
    /// The diagram's Mermaid source, ending in a newline.
    Diagram(String),
}

/// The diagram of the change from `old_text` to `new_text`, two schema dumps.
pub fn of_change(old_text: &str, new_text: &str) -> Drawing {
    let old = Schema::read(old_text);
    let new = Schema::read(new_text);
    let touched: BTreeSet<Table> = old
        .tables
        .keys()
        .chain(new.tables.keys())
        .filter(|table| {
            old.tables.get(*table).map(|def| &def.entries)
                != new.tables.get(*table).map(|def| &def.entries)
        })
        .cloned()
        .collect();
    if touched.is_empty() {
        return Drawing::Nothing;
    }
    if touched.len() > MAX_TABLES {
        return Drawing::TooBig(format!(
            "{} tables changed, more than the {MAX_TABLES} one diagram shows",
            touched.len()
        ));
    }
    let text = draw(&old, &new, &touched);
    if text.len() > MAX_CHARS {
        return Drawing::TooBig(format!(
            "the diagram of the {} changed tables takes {} characters, more than the {MAX_CHARS} a comment has room for",
            touched.len(),
            text.len()
        ));
    }
    Drawing::Diagram(text)
}

/// The tables of a schema dump, by schema and name.
pub fn tables(text: &str) -> Vec<Table> {
    Schema::read(text).tables.into_keys().collect()
}

/// The diagram of `selected` tables of one schema dump and their neighbours; refused past
/// the limits of one diagram.
pub fn of_tables(text: &str, selected: &BTreeSet<Table>) -> anyhow::Result<String> {
    if selected.len() > MAX_TABLES {
        return Err(remedy::refuse(
            Remedy::FewerTables,
            format!(
                "{} tables are more than the {MAX_TABLES} one diagram shows",
                selected.len()
            ),
        ));
    }
    let schema = Schema::read(text);
    let diagram = draw(&schema, &schema, selected);
    if diagram.len() > MAX_CHARS {
        return Err(remedy::refuse(
            Remedy::FewerTables,
            format!(
                "the diagram of {} tables takes {} characters, more than the {MAX_CHARS} Mermaid and a comment have room for",
                selected.len(),
                diagram.len()
            ),
        ));
    }
    Ok(diagram)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Same,
    Added,
    Removed,
    Changed,
}

fn state<T: PartialEq>(old: Option<T>, new: Option<T>) -> State {
    match (old, new) {
        (None, Some(_)) => State::Added,
        (Some(_), None) => State::Removed,
        (Some(old), Some(new)) if old != new => State::Changed,
        _ => State::Same,
    }
}

/// The relationship of one foreign key: which schema it is read from, and its state.
struct Link<'a> {
    child: &'a Table,
    name: &'a str,
    state: State,
    schema: &'a Schema,
}

fn draw(old: &Schema, new: &Schema, touched: &BTreeSet<Table>) -> String {
    let names: BTreeSet<&(Table, String)> = old
        .foreign_keys
        .keys()
        .chain(new.foreign_keys.keys())
        .collect();
    let links: Vec<Link> = names
        .into_iter()
        .filter_map(|(child, name)| {
            let state = state(
                old.foreign_keys.get(&(child.clone(), name.clone())),
                new.foreign_keys.get(&(child.clone(), name.clone())),
            );
            let schema = if state == State::Removed { old } else { new };
            let fk = &schema.foreign_keys[&(child.clone(), name.clone())];
            (touched.contains(child) || touched.contains(&fk.target)).then_some(Link {
                child,
                name,
                state,
                schema,
            })
        })
        .collect();
    // Each neighbour's key columns: its primary key and the columns its drawn links use.
    let mut neighbours: BTreeMap<&Table, BTreeSet<&str>> = BTreeMap::new();
    for link in &links {
        let fk = &link.schema.foreign_keys[&(link.child.clone(), link.name.to_string())];
        for (table, columns) in [(link.child, &fk.columns), (&fk.target, &fk.target_columns)] {
            if !touched.contains(table) {
                let keys = neighbours.entry(table).or_default();
                keys.extend(columns.iter().map(String::as_str));
            }
        }
    }
    let drawn: BTreeSet<&Table> = touched.iter().chain(neighbours.keys().copied()).collect();
    let mut ids: BTreeMap<&Table, String> = BTreeMap::new();
    let mut used = BTreeSet::new();
    for table in &drawn {
        let base = mermaid::entity_name(&label(table));
        let mut id = base.clone();
        let mut n = 1;
        while !used.insert(id.clone()) {
            n += 1;
            id = format!("{base}_{n}");
        }
        ids.insert(table, id);
    }

    let mut out = String::from("erDiagram\n");
    for table in &drawn {
        let (old_def, new_def) = (old.tables.get(*table), new.tables.get(*table));
        let mut title = label(table);
        let is_touched = touched.contains(*table);
        if is_touched {
            match state(old_def.map(|d| &d.entries), new_def.map(|d| &d.entries)) {
                State::Added => title.push_str(" (new)"),
                State::Removed => title.push_str(" (dropped)"),
                State::Changed => title.push_str(" (changed)"),
                State::Same => {}
            }
        }
        let id = &ids[*table];
        let head = if *id == title {
            id.clone()
        } else {
            format!("{id}[{}]", mermaid::quoted(&title, true))
        };
        let Some(def) = new_def.or(old_def) else {
            continue;
        };
        let schema = if new_def.is_some() { new } else { old };
        let lines = if is_touched {
            let before = old_def.filter(|_| new_def.is_some());
            touched_lines(table, def, before, schema, old)
        } else {
            neighbour_lines(table, def, schema, &neighbours[*table])
        };
        if lines.is_empty() {
            let _ = writeln!(out, "    {head}");
        } else {
            let _ = writeln!(out, "    {head} {{");
            for line in lines {
                let _ = writeln!(out, "        {line}");
            }
            let _ = writeln!(out, "    }}");
        }
    }
    for link in &links {
        let fk = &link.schema.foreign_keys[&(link.child.clone(), link.name.to_string())];
        let child = &link.schema.tables[link.child];
        let nullable = fk
            .columns
            .iter()
            .any(|c| child.column(c).is_some_and(|c| !c.not_null));
        let parent_end = if nullable { "|o" } else { "||" };
        let child_end = if child.is_unique(&fk.columns) {
            "o|"
        } else {
            "o{"
        };
        let mut text = fk.columns.join(", ");
        text.push_str(match link.state {
            State::Same => "",
            State::Added => " (added)",
            State::Removed => " (removed)",
            State::Changed => " (changed)",
        });
        let _ = writeln!(
            out,
            "    {} {parent_end}--{child_end} {} : {}",
            ids[&fk.target],
            ids[link.child],
            mermaid::quoted(&text, false)
        );
    }
    out
}

fn label(table: &Table) -> String {
    if table.schema == "public" || table.schema.is_empty() {
        table.name.clone()
    } else {
        format!("{}.{}", table.schema, table.name)
    }
}

/// One attribute line: type, name, keys, comment (the real name when it had to be mapped).
fn attribute(kind: &str, name: &str, keys: &[&str], note: &str) -> String {
    let (word, mapped) = mermaid::attribute_name(name);
    let mut line = format!("{kind} {word}");
    if !keys.is_empty() {
        line.push(' ');
        line.push_str(&keys.join(", "));
    }
    let mut comment = Vec::new();
    if mapped {
        comment.push(format!("name: {name}"));
    }
    if !note.is_empty() {
        comment.push(note.to_string());
    }
    if !comment.is_empty() {
        line.push(' ');
        line.push_str(&mermaid::quoted(&comment.join("; "), false));
    }
    line
}

fn keys_of<'a>(table: &Table, def: &TableDef, schema: &Schema, column: &str) -> Vec<&'a str> {
    let mut keys = Vec::new();
    if def.primary_key.iter().any(|c| c == column) {
        keys.push("PK");
    }
    if schema
        .foreign_keys
        .iter()
        .any(|((child, _), fk)| child == table && fk.columns.iter().any(|c| c == column))
    {
        keys.push("FK");
    }
    if def.unique.iter().any(|set| set.iter().any(|c| c == column)) {
        keys.push("UK");
    }
    keys
}

/// Every column of a touched table, and (when it existed before) what changed in it:
/// columns added, changed or removed, indexes, constraints and triggers.
fn touched_lines(
    table: &Table,
    def: &TableDef,
    before: Option<&TableDef>,
    schema: &Schema,
    old: &Schema,
) -> Vec<String> {
    let mut lines = Vec::new();
    for column in &def.columns {
        let note = match before.map(|b| (b.column(&column.name), b)) {
            None => String::new(),
            Some((None, _)) => "added".to_string(),
            Some((Some(was), b)) => {
                let key = ("DEFAULT".to_string(), column.name.clone());
                if was.definition != column.definition {
                    format!("changed, was: {}", was.definition)
                } else if b.entries.get(&key) != def.entries.get(&key) {
                    "default changed".to_string()
                } else {
                    String::new()
                }
            }
        };
        let keys = keys_of(table, def, schema, &column.name);
        let kind = mermaid::data_type(&column.data_type);
        lines.push(attribute(&kind, &column.name, &keys, &note));
    }
    let Some(before) = before else {
        return lines;
    };
    for column in &before.columns {
        if def.column(&column.name).is_none() {
            let keys = keys_of(table, before, old, &column.name);
            let kind = mermaid::data_type(&column.data_type);
            lines.push(attribute(&kind, &column.name, &keys, "removed"));
        }
    }
    lines.extend(part_lines(before, def));
    lines
}

/// The indexes, constraints and triggers that were added, removed, renamed or changed.
fn part_lines(before: &TableDef, after: &TableDef) -> Vec<String> {
    const KINDS: &[&str] = &["INDEX", "CONSTRAINT", "CHECK CONSTRAINT", "TRIGGER"];
    let parts = |def: &TableDef| -> BTreeMap<(String, String), String> {
        def.entries
            .iter()
            .filter(|((kind, _), _)| KINDS.contains(&kind.as_str()))
            .map(|(key, body)| (key.clone(), body.clone()))
            .collect()
    };
    let (old, new) = (parts(before), parts(after));
    // An index renamed is one removed and one added with the same definition after its name.
    let shape = |key: &(String, String), body: &str| -> Option<String> {
        (key.0 == "INDEX").then(|| body.split_once(" ON ").map(|(_, on)| on.to_string()))?
    };
    let mut renamed: BTreeMap<&(String, String), &str> = BTreeMap::new();
    for (key, body) in new.iter().filter(|(key, _)| !old.contains_key(*key)) {
        let Some(shape_new) = shape(key, body) else {
            continue;
        };
        if let Some((was, _)) = old.iter().find(|(was, old_body)| {
            !new.contains_key(*was)
                && !renamed.values().any(|n| *n == was.1)
                && shape(was, old_body).as_ref() == Some(&shape_new)
        }) {
            renamed.insert(key, &was.1);
        }
    }
    let mut lines = Vec::new();
    let keys: BTreeSet<&(String, String)> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (was, now) = (old.get(key), new.get(key));
        let note = match state(was, now) {
            State::Same => continue,
            State::Added => match renamed.get(key) {
                Some(from) => format!("renamed from {from}"),
                None => "added".to_string(),
            },
            State::Removed if renamed.values().any(|n| *n == key.1) => continue,
            State::Removed => "removed".to_string(),
            State::Changed => "changed".to_string(),
        };
        let body = now.or(was).map_or("", String::as_str);
        let kind = match key.0.as_str() {
            "INDEX" if body.starts_with("CREATE UNIQUE") => "unique_index",
            "INDEX" => "index",
            "TRIGGER" => "trigger",
            "CHECK CONSTRAINT" => "check",
            _ if body.contains(" PRIMARY KEY ") => "primary_key",
            _ if body.contains(" UNIQUE ") => "unique",
            _ if body.contains(" EXCLUDE ") => "exclude",
            _ => "constraint",
        };
        lines.push(attribute(kind, &key.1, &[], &note));
    }
    lines
}

/// A neighbour's key columns only: its primary key and the columns of the drawn links.
fn neighbour_lines(
    table: &Table,
    def: &TableDef,
    schema: &Schema,
    linked: &BTreeSet<&str>,
) -> Vec<String> {
    def.columns
        .iter()
        .filter(|c| def.primary_key.contains(&c.name) || linked.contains(c.name.as_str()))
        .map(|column| {
            let keys = keys_of(table, def, schema, &column.name);
            attribute(
                &mermaid::data_type(&column.data_type),
                &column.name,
                &keys,
                "",
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plain::schema_diff::markdown;

    /// A dump laid out as pg_dump writes it, from `(header, statements)` pairs.
    fn dump(objects: &[(&str, &str)]) -> String {
        let mut out = String::from("-- NetPoint schema snapshot, PostgreSQL 15\n--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\n");
        for (header, sql) in objects {
            out.push_str(&format!(
                "--\n-- Name: {header}; Owner: -\n--\n\n{sql}\n\n\n"
            ));
        }
        out + "--\n-- PostgreSQL database dump complete\n--\n\n"
    }

    const SITE_BEFORE: (&str, &str) = ("dcim_site; Type: TABLE; Schema: public", "CREATE TABLE public.dcim_site (\n    id bigint NOT NULL,\n    name character varying(100) NOT NULL,\n    \"legacy-code\" character varying(150),\n    created timestamp with time zone\n);");
    const SITE_AFTER: (&str, &str) = ("dcim_site; Type: TABLE; Schema: public", "CREATE TABLE public.dcim_site (\n    id bigint NOT NULL,\n    name character varying(100) NOT NULL,\n    created timestamp with time zone\n);");
    const RACK: (&str, &str) = ("dcim_rack; Type: TABLE; Schema: public", "CREATE TABLE public.dcim_rack (\n    id bigint NOT NULL,\n    site_id bigint NOT NULL,\n    name character varying(100) NOT NULL\n);");
    const DEVICE: (&str, &str) = ("dcim_device; Type: TABLE; Schema: public", "CREATE TABLE public.dcim_device (\n    id bigint NOT NULL,\n    rack_id bigint,\n    name text\n);");
    const CABLE: (&str, &str) = ("dcim_cable; Type: TABLE; Schema: public", "CREATE TABLE public.dcim_cable (\n    id bigint NOT NULL,\n    device_id bigint,\n    \"end\" character varying(150) NOT NULL\n);");
    const KEYS: &[(&str, &str)] = &[
        ("dcim_device dcim_device_pkey; Type: CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_device\n    ADD CONSTRAINT dcim_device_pkey PRIMARY KEY (id);"),
        ("dcim_rack dcim_rack_pkey; Type: CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_rack\n    ADD CONSTRAINT dcim_rack_pkey PRIMARY KEY (id);"),
        ("dcim_site dcim_site_pkey; Type: CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_site\n    ADD CONSTRAINT dcim_site_pkey PRIMARY KEY (id);"),
        ("dcim_device dcim_device_rack_id_fkey; Type: FK CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_device\n    ADD CONSTRAINT dcim_device_rack_id_fkey FOREIGN KEY (rack_id) REFERENCES public.dcim_rack(id);"),
        ("dcim_rack dcim_rack_site_id_fkey; Type: FK CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_rack\n    ADD CONSTRAINT dcim_rack_site_id_fkey FOREIGN KEY (site_id) REFERENCES public.dcim_site(id);"),
    ];
    const OLD_INDEX: (&str, &str) = (
        "dcim_rack_site_idx; Type: INDEX; Schema: public",
        "CREATE INDEX dcim_rack_site_idx ON public.dcim_rack USING btree (site_id);",
    );
    const NEW_INDEX: (&str, &str) = (
        "dcim_rack_site_id_idx; Type: INDEX; Schema: public",
        "CREATE INDEX dcim_rack_site_id_idx ON public.dcim_rack USING btree (site_id);",
    );
    const MIGRATION: &[(&str, &str)] = &[
        ("dcim_cable dcim_cable_pkey; Type: CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_cable\n    ADD CONSTRAINT dcim_cable_pkey PRIMARY KEY (id);"),
        ("dcim_rack dcim_rack_site_name_uniq; Type: CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_rack\n    ADD CONSTRAINT dcim_rack_site_name_uniq UNIQUE (site_id, name);"),
        ("dcim_cable dcim_cable_device_id_fkey; Type: FK CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.dcim_cable\n    ADD CONSTRAINT dcim_cable_device_id_fkey FOREIGN KEY (device_id) REFERENCES public.dcim_device(id);"),
    ];

    fn before() -> String {
        let mut objects = vec![DEVICE, RACK, SITE_BEFORE, OLD_INDEX];
        objects.extend_from_slice(KEYS);
        dump(&objects)
    }

    fn after() -> String {
        let mut objects = vec![CABLE, DEVICE, RACK, SITE_AFTER, NEW_INDEX];
        objects.extend_from_slice(KEYS);
        objects.extend_from_slice(MIGRATION);
        dump(&objects)
    }

    #[test]
    fn a_migration_is_drawn_with_its_neighbours_and_marks() {
        let expected = r#"erDiagram
    dcim_cable["dcim_cable (new)"] {
        bigint id PK
        bigint device_id FK
        varchar(150) end
    }
    dcim_device {
        bigint id PK
        bigint rack_id FK
    }
    dcim_rack["dcim_rack (changed)"] {
        bigint id PK
        bigint site_id FK, UK
        varchar(100) name UK
        unique dcim_rack_site_name_uniq "added"
        index dcim_rack_site_id_idx "renamed from dcim_rack_site_idx"
    }
    dcim_site["dcim_site (changed)"] {
        bigint id PK
        varchar(100) name
        timestamptz created
        varchar(150) legacy-code "removed"
    }
    dcim_device |o--o{ dcim_cable : "device_id (added)"
    dcim_rack |o--o{ dcim_device : "rack_id"
    dcim_site ||--o{ dcim_rack : "site_id"
"#;
        assert_eq!(
            of_change(&before(), &after()),
            Drawing::Diagram(expected.to_string())
        );
        let summary = markdown(&before(), &after(), "fixtures/schema.sql");
        assert!(
            summary.contains(&format!("```mermaid\n{expected}```\n\n- ")),
            "{summary}"
        );
        // Back again: the new table dropped, its key removed, the column added.
        let Drawing::Diagram(back) = of_change(&after(), &before()) else {
            panic!("no diagram");
        };
        for line in [
            "dcim_cable[\"dcim_cable (dropped)\"] {",
            "varchar(150) legacy-code \"added\"",
            "unique dcim_rack_site_name_uniq \"removed\"",
            "dcim_device |o--o{ dcim_cable : \"device_id (removed)\"",
        ] {
            assert!(back.contains(line), "{line:?} missing in\n{back}");
        }
    }

    #[test]
    fn no_diagram_without_touched_tables() {
        let text = before();
        assert_eq!(of_change(&text, &text), Drawing::Nothing);
        assert!(!markdown(&text, &text, "schema.sql").contains("mermaid"));
        let laid_out = text.replace(
            ";\n\n\n--\n-- Name: dcim_rack;",
            ";\n\n\n\n--\n-- Name: dcim_rack;",
        );
        let summary = markdown(&text, &laid_out, "schema.sql");
        assert!(
            summary.contains("Other changes") && !summary.contains("mermaid"),
            "{summary}"
        );
    }

    fn tables(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| {
                (
                    format!("t{i:02}; Type: TABLE; Schema: public"),
                    format!("CREATE TABLE public.t{i:02} (\n    id integer NOT NULL\n);"),
                )
            })
            .collect()
    }

    #[test]
    fn forty_touched_tables_are_one_line() {
        let many = tables(40);
        let objects: Vec<(&str, &str)> =
            many.iter().map(|(h, s)| (h.as_str(), s.as_str())).collect();
        let (old, new) = (dump(&[]), dump(&objects));
        assert_eq!(
            of_change(&old, &new),
            Drawing::TooBig("40 tables changed, more than the 25 one diagram shows".to_string())
        );
        let summary = markdown(&old, &new, "schema.sql");
        assert!(!summary.contains("```"), "{summary}");
        assert!(
            summary.contains("_No diagram: 40 tables changed"),
            "{summary}"
        );
        assert_eq!(
            summary.lines().filter(|l| l.starts_with("- Table")).count(),
            40
        );
        let all: BTreeSet<Table> = Schema::read(&new).tables.into_keys().collect();
        let refused = of_tables(&new, &all).unwrap_err().to_string();
        assert!(
            refused.starts_with("40 tables are more than the 25"),
            "{refused}"
        );
        let few: BTreeSet<Table> = all.into_iter().take(25).collect();
        assert!(of_tables(&new, &few).is_ok());
        // Long enough columns make 25 tables too many characters.
        let wide = new.replace(
            "    id integer NOT NULL\n",
            &"    a_rather_long_column_name_for_a_diagram integer NOT NULL,\n".repeat(40),
        );
        let refused = of_tables(&wide, &few).unwrap_err().to_string();
        assert!(
            refused.contains("characters, more than the 40000"),
            "{refused}"
        );
    }

    #[test]
    fn names_mermaid_cannot_take_are_mapped() {
        let old = dump(&[]);
        let new = dump(&[
            ("end; Type: TABLE; Schema: net-ops", "CREATE TABLE \"net-ops\".\"end\" (\n    \"PK\" integer NOT NULL,\n    \"first name\" character varying(150),\n    \"2fa\" public.\"Mood\"[],\n    \"class\" double precision DEFAULT 0 NOT NULL\n);"),
            ("my.table; Type: TABLE; Schema: public", "CREATE TABLE public.\"my.table\" (\n    id integer NOT NULL,\n    end_pk integer\n);"),
            ("end end_pkey; Type: CONSTRAINT; Schema: net-ops", "ALTER TABLE ONLY \"net-ops\".\"end\"\n    ADD CONSTRAINT end_pkey PRIMARY KEY (\"PK\");"),
            ("my.table my.table_fk; Type: FK CONSTRAINT; Schema: public", "ALTER TABLE ONLY public.\"my.table\"\n    ADD CONSTRAINT \"my.table_fk\" FOREIGN KEY (end_pk) REFERENCES \"net-ops\".\"end\"(\"PK\");"),
        ]);
        let expected = r#"erDiagram
    net_ops_end["net-ops.end (new)"] {
        integer PK_ PK "name: PK"
        varchar(150) first_name "name: first name"
        public._Mood_[] _2fa "name: 2fa"
        float8 class
    }
    my_table["my.table (new)"] {
        integer id
        integer end_pk FK
    }
    net_ops_end |o--o{ my_table : "end_pk (added)"
"#;
        assert_eq!(
            of_change(&old, &new),
            Drawing::Diagram(expected.to_string())
        );
    }
}
