//! A schema snapshot read as tables: their columns in order, keys, foreign keys, and every
//! entry pg_dump writes for a table (indexes, constraints, triggers, defaults), for the diagram.

use std::collections::BTreeMap;

use super::{parse, Key};

/// A table by its schema and name, unquoted.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Table {
    pub schema: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    /// The definition as the dump writes it, after the name.
    pub definition: String,
    pub not_null: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TableDef {
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// Column sets of unique constraints and plain unique indexes.
    pub unique: Vec<Vec<String>>,
    /// Each entry of the dump that belongs to the table, by its kind and own name (the table
    /// itself under `TABLE`); inline `CHECK` constraints as `CHECK CONSTRAINT`.
    pub entries: BTreeMap<(String, String), String>,
}

impl TableDef {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Whether `columns` hold a whole primary or unique key: one row at most per value.
    pub fn is_unique(&self, columns: &[String]) -> bool {
        let within = |key: &Vec<String>| !key.is_empty() && key.iter().all(|c| columns.contains(c));
        within(&self.primary_key) || self.unique.iter().any(within)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub target: Table,
    pub target_columns: Vec<String>,
    /// The constraint as the dump writes it.
    pub definition: String,
}

#[derive(Debug, Default)]
pub struct Schema {
    pub tables: BTreeMap<Table, TableDef>,
    /// By the referencing table and the constraint's name.
    pub foreign_keys: BTreeMap<(Table, String), ForeignKey>,
    /// Each domain, as a column's type names it (`public.email`), with the type it is over.
    pub domains: BTreeMap<String, String>,
}

impl Schema {
    pub fn read(dump: &str) -> Schema {
        let mut schema = Schema::default();
        let objects = parse(dump).objects;
        for (key, body) in &objects {
            if key.kind == "TABLE" {
                let table = Table {
                    schema: key.schema.clone(),
                    name: key.name.clone(),
                };
                let def = table_def(body);
                schema.tables.insert(table, def);
            } else if key.kind == "DOMAIN" {
                if let Some((name, base)) = domain(body) {
                    schema.domains.insert(name, base);
                }
            }
        }
        for (key, body) in &objects {
            let Some((table, name)) = owner(key, body) else {
                continue;
            };
            // (Indexes of materialized views, for one, belong to no table.)
            let Some(def) = schema.tables.get_mut(&table) else {
                continue;
            };
            def.entries
                .insert((key.kind.clone(), name.clone()), body.clone());
            match key.kind.as_str() {
                "CONSTRAINT" => {
                    let rest = after_constraint_name(body).unwrap_or_default();
                    if rest.starts_with("PRIMARY KEY") {
                        def.primary_key = first_list(rest).unwrap_or_default();
                    } else if rest.starts_with("UNIQUE") {
                        def.unique.extend(first_list(rest));
                    }
                }
                "INDEX" if body.starts_with("CREATE UNIQUE INDEX") && !body.contains(" WHERE ") => {
                    if let Some(at) = body.find(" USING ") {
                        let using = &body[at + " USING ".len()..];
                        def.unique
                            .extend(using.find('(').and_then(|at| list(&using[at..])));
                    }
                }
                "FK CONSTRAINT" => {
                    if let Some(fk) = foreign_key(body) {
                        schema.foreign_keys.insert((table, name), fk);
                    }
                }
                _ => {}
            }
        }
        schema
    }
}

/// The table an entry belongs to, and the entry's own name; none for entries of no table.
fn owner(key: &Key, body: &str) -> Option<(Table, String)> {
    let in_schema = |table: &str| Table {
        schema: key.schema.clone(),
        name: table.to_string(),
    };
    match key.kind.as_str() {
        "TABLE" => Some((in_schema(&key.name), String::new())),
        "INDEX" => {
            let at = body.find(" ON ")?;
            let on = &body[at + " ON ".len()..];
            let (table, _) = qualified(on.strip_prefix("ONLY ").unwrap_or(on))?;
            Some((table, key.name.clone()))
        }
        "CONSTRAINT" | "FK CONSTRAINT" | "CHECK CONSTRAINT" | "TRIGGER" | "DEFAULT" => {
            let (table, name) = key.name.split_once(' ')?;
            Some((in_schema(table), name.to_string()))
        }
        _ => None,
    }
}

fn table_def(body: &str) -> TableDef {
    let mut def = TableDef::default();
    let mut inside = false;
    for line in body.lines() {
        if !inside {
            inside = line.starts_with("CREATE ") && line.ends_with('(');
            continue;
        }
        if line.starts_with(')') {
            break;
        }
        let item = line.trim().trim_end_matches(',');
        if let Some(constraint) = item.strip_prefix("CONSTRAINT ") {
            if let Some((name, rest)) = identifier(constraint) {
                def.entries.insert(
                    ("CHECK CONSTRAINT".to_string(), name),
                    rest.trim().to_string(),
                );
            }
        } else if let Some((name, rest)) = identifier(item) {
            let definition = rest.trim().to_string();
            def.columns.push(Column {
                name,
                data_type: data_type(&definition),
                not_null: definition.contains("NOT NULL"),
                definition,
            });
        }
    }
    def
}

/// The type at the start of a column definition, before `COLLATE`, `DEFAULT`, `NOT NULL`, ...
fn data_type(definition: &str) -> String {
    let end = [
        " COLLATE ",
        " DEFAULT ",
        " NOT NULL",
        " GENERATED ",
        " CONSTRAINT ",
    ]
    .iter()
    .filter_map(|word| definition.find(word))
    .min()
    .unwrap_or(definition.len());
    definition[..end].to_string()
}

/// `CREATE DOMAIN public.d AS text ...` as (`public.d`, `text`).
fn domain(body: &str) -> Option<(String, String)> {
    let line = body.lines().find(|l| l.starts_with("CREATE DOMAIN "))?;
    let (name, rest) = line["CREATE DOMAIN ".len()..].split_once(" AS ")?;
    Some((name.to_string(), data_type(rest.trim_end_matches(';'))))
}

fn after_constraint_name(body: &str) -> Option<&str> {
    let at = body.find("ADD CONSTRAINT ")?;
    let (_, rest) = identifier(&body[at + "ADD CONSTRAINT ".len()..])?;
    Some(rest.trim_start())
}

fn first_list(text: &str) -> Option<Vec<String>> {
    list(&text[text.find('(')?..])
}

fn foreign_key(body: &str) -> Option<ForeignKey> {
    let rest = after_constraint_name(body)?;
    let columns = list(rest.strip_prefix("FOREIGN KEY ")?)?;
    let at = rest.find(" REFERENCES ")?;
    let (target, after) = qualified(&rest[at + " REFERENCES ".len()..])?;
    Some(ForeignKey {
        columns,
        target,
        target_columns: list(after).unwrap_or_default(),
        definition: rest.trim_end_matches(';').to_string(),
    })
}

/// `(a, "B c")` at the start of `text` as its names; none for expressions.
fn list(text: &str) -> Option<Vec<String>> {
    let mut rest = text.strip_prefix('(')?;
    let mut names = Vec::new();
    loop {
        let (name, after) = identifier(rest)?;
        names.push(name);
        if let Some(after) = after.strip_prefix(", ") {
            rest = after;
        } else {
            after.strip_prefix(')')?;
            return Some(names);
        }
    }
}

/// `schema.name` (either part quoted or not) at the start of `text`, and what follows.
fn qualified(text: &str) -> Option<(Table, &str)> {
    let (first, rest) = identifier(text)?;
    match rest.strip_prefix('.') {
        Some(rest) => {
            let (name, rest) = identifier(rest)?;
            Some((
                Table {
                    schema: first,
                    name,
                },
                rest,
            ))
        }
        None => Some((
            Table {
                schema: String::new(),
                name: first,
            },
            rest,
        )),
    }
}

/// One SQL identifier at the start of `text`, unquoted, and what follows it.
fn identifier(text: &str) -> Option<(String, &str)> {
    if let Some(quoted) = text.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, c)| *c) == Some('"') {
                    chars.next();
                } else {
                    return Some((name, &quoted[at + 1..]));
                }
            }
            name.push(c);
        }
        None
    } else {
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(text.len());
        (end > 0).then(|| (text[..end].to_string(), &text[end..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_unquote() {
        assert_eq!(
            identifier("\"a \"\"b\"\".c\" x"),
            Some(("a \"b\".c".to_string(), " x"))
        );
        assert_eq!(identifier("site_id)"), Some(("site_id".to_string(), ")")));
        assert_eq!(
            list("(a, \"B c\") rest"),
            Some(vec!["a".to_string(), "B c".to_string()])
        );
        assert_eq!(list("(lower((name)::text))"), None);
        let (table, rest) = qualified("public.\"my-table\"(id)").unwrap();
        assert_eq!(
            (table.schema.as_str(), table.name.as_str(), rest),
            ("public", "my-table", "(id)")
        );
        assert_eq!(
            data_type("character varying(150) DEFAULT 'x'::text NOT NULL"),
            "character varying(150)"
        );
    }
}
