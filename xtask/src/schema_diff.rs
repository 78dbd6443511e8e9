//! A reviewer's summary of the difference between two schema dumps: which tables, columns,
//! indexes, constraints, views and sequences were added, removed or changed.

use std::collections::BTreeMap;

/// One object of a dump, keyed by pg_dump's `-- Name: ...; Type: ...; Schema: ...` header.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    kind: String,
    schema: String,
    name: String,
}

fn objects(dump: &str) -> BTreeMap<Key, String> {
    let mut objects = BTreeMap::new();
    let mut current: Option<(Key, String)> = None;
    for line in dump.lines() {
        if let Some(key) = parse_header(line) {
            if let Some((key, body)) = current.take() {
                objects.insert(key, body.trim().to_string());
            }
            current = Some((key, String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            if line != "--" {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    if let Some((key, body)) = current {
        objects.insert(key, body.trim().to_string());
    }
    objects
}

fn parse_header(line: &str) -> Option<Key> {
    let rest = line.strip_prefix("-- Name: ")?;
    let mut name = None;
    let mut kind = None;
    let mut schema = None;
    // The name may itself contain "; " only in exotic cases; split from the right.
    let mut parts: Vec<&str> = rest.split("; ").collect();
    while let Some(part) = parts.pop() {
        if let Some(value) = part.strip_prefix("Owner: ") {
            let _ = value;
        } else if let Some(value) = part.strip_prefix("Schema: ") {
            schema = Some(value.to_string());
        } else if let Some(value) = part.strip_prefix("Type: ") {
            kind = Some(value.to_string());
            name = Some(parts.join("; "));
            break;
        }
    }
    Some(Key {
        kind: kind?,
        schema: schema.unwrap_or_default(),
        name: name?,
    })
}

/// Column name → definition, from a `CREATE TABLE` (or view) body.
fn columns(body: &str) -> BTreeMap<String, String> {
    table_items(body).0
}

/// Inline constraint name → definition (`CONSTRAINT x CHECK (...)` lines of a `CREATE TABLE`).
fn inline_constraints(body: &str) -> BTreeMap<String, String> {
    table_items(body).1
}

/// The columns and the inline constraints of a `CREATE TABLE` body.
fn table_items(body: &str) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut columns = BTreeMap::new();
    let mut constraints = BTreeMap::new();
    let mut inside = false;
    for line in body.lines() {
        if line.starts_with("CREATE TABLE ") && line.ends_with('(') {
            inside = true;
            continue;
        }
        if !inside {
            continue;
        }
        if line.starts_with(')') {
            break;
        }
        let def = line.trim().trim_end_matches(',');
        if let Some(constraint) = def.strip_prefix("CONSTRAINT ") {
            if let Some((name, rest)) = split_identifier(constraint) {
                constraints.insert(name, rest.to_string());
            }
            continue;
        }
        if let Some((name, rest)) = split_identifier(def) {
            columns.insert(name, rest.to_string());
        }
    }
    (columns, constraints)
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

fn describe(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "TABLE" => "Table",
        "VIEW" => "View",
        "MATERIALIZED VIEW" => "Materialized view",
        "INDEX" => "Index",
        "CONSTRAINT" => "Constraint",
        "FK CONSTRAINT" => "Foreign key",
        "CHECK CONSTRAINT" => "Constraint",
        "SEQUENCE" => "Sequence",
        "DEFAULT" => "Column default",
        "FUNCTION" => "Function",
        "TRIGGER" => "Trigger",
        "TYPE" => "Type",
        "COLLATION" => "Collation",
        "EXTENSION" => "Extension",
        "SCHEMA" => "Schema",
        "COMMENT" => "Comment",
        _ => return None,
    })
}

fn object_name(key: &Key) -> String {
    // Constraints, defaults and triggers are named "<table> <object>" by pg_dump.
    let qualified = |name: &str| {
        if key.schema.is_empty() || key.schema == "-" {
            name.to_string()
        } else {
            format!("{}.{}", key.schema, name)
        }
    };
    match key.kind.as_str() {
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" | "TRIGGER" => {
            match key.name.split_once(' ') {
                Some((table, object)) => format!("`{object}` on `{}`", qualified(table)),
                None => format!("`{}`", qualified(&key.name)),
            }
        }
        "DEFAULT" => match key.name.split_once(' ') {
            Some((table, column)) => format!("`{}.{column}`", qualified(table)),
            None => format!("`{}`", qualified(&key.name)),
        },
        "COMMENT" => format!("`{}`", key.name),
        _ => format!("`{}`", qualified(&key.name)),
    }
}

/// Markdown bullet lines naming each change from `old` to `new`; empty when the schemas match.
pub fn changes(old: &str, new: &str) -> Vec<String> {
    let old = objects(old);
    let new = objects(new);
    let mut lines = Vec::new();
    for (key, body) in &new {
        let Some(what) = describe(&key.kind) else {
            continue;
        };
        match old.get(key) {
            None => lines.push(format!("- {what} {} added", object_name(key))),
            Some(old_body) if old_body != body => {
                if key.kind == "TABLE" {
                    lines.extend(column_changes(key, old_body, body));
                } else {
                    lines.push(format!("- {what} {} changed", object_name(key)));
                }
            }
            Some(_) => {}
        }
    }
    for key in old.keys().filter(|key| !new.contains_key(*key)) {
        if let Some(what) = describe(&key.kind) {
            lines.push(format!("- {what} {} removed", object_name(key)));
        }
    }
    lines
}

fn column_changes(key: &Key, old: &str, new: &str) -> Vec<String> {
    let table = format!("{}.{}", key.schema, key.name);
    let old_columns = columns(old);
    let new_columns = columns(new);
    let mut lines = Vec::new();
    for (name, def) in &new_columns {
        match old_columns.get(name) {
            None => lines.push(format!("- Column `{table}.{name}` added: `{def}`")),
            Some(old_def) if old_def != def => lines.push(format!(
                "- Column `{table}.{name}` changed: `{old_def}` → `{def}`"
            )),
            Some(_) => {}
        }
    }
    for name in old_columns
        .keys()
        .filter(|name| !new_columns.contains_key(*name))
    {
        lines.push(format!("- Column `{table}.{name}` removed"));
    }
    // CHECK constraints live inside CREATE TABLE: name them like the separate ones.
    let old_constraints = inline_constraints(old);
    let new_constraints = inline_constraints(new);
    for (name, def) in &new_constraints {
        match old_constraints.get(name) {
            None => lines.push(format!("- Constraint `{name}` on `{table}` added: `{def}`")),
            Some(old_def) if old_def != def => lines.push(format!(
                "- Constraint `{name}` on `{table}` changed: `{old_def}` → `{def}`"
            )),
            Some(_) => {}
        }
    }
    for name in old_constraints
        .keys()
        .filter(|name| !new_constraints.contains_key(*name))
    {
        lines.push(format!("- Constraint `{name}` on `{table}` removed"));
    }
    if lines.is_empty() {
        lines.push(format!("- Table `{table}` changed"));
    }
    lines
}

pub fn markdown(changes: &[String], file: &str) -> String {
    if changes.is_empty() {
        return format!("No schema changes: the database matches `{file}`.\n");
    }
    let mut out = format!("### Schema changes against `{file}`\n\n");
    for line in changes {
        out.push_str(line);
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
        assert_eq!(markdown(&[], "fixtures/schema.sql").lines().count(), 1);
    }
}
