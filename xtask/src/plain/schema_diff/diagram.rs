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
