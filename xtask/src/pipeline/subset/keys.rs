//! Primary key values as the subset keeps them, and as it sends them back to the source.

use super::graph::Table;

/// Ids sent in one lookup.
pub const BATCH: usize = 5_000;

/// A primary key value: integer keys as numbers, every other type as its text.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Int(i64),
    Text(Box<str>),
}

impl Key {
    /// A key of `table` from its text, as PostgreSQL prints it; `None` when an integer key
    /// is not written the way PostgreSQL writes it (so comparing texts would not match).
    pub fn parse(table: &Table, text: &str) -> Option<Key> {
        match table.id()?.int {
            true => text
                .parse::<i64>()
                .ok()
                .filter(|n| n.to_string() == text)
                .map(Key::Int),
            false => Some(Key::Text(text.into())),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Key::Int(n) => n.to_string(),
            Key::Text(text) => text.to_string(),
        }
    }
}

/// `'{1,2}'::bigint[]`: the keys as an array literal of `sql_type`.
pub fn array(keys: &[Key], sql_type: &str) -> String {
    let mut out = String::from("'{");
    for (i, key) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match key {
            Key::Int(n) => out.push_str(&n.to_string()),
            Key::Text(text) => {
                out.push('"');
                for c in text.chars() {
                    match c {
                        '"' | '\\' => {
                            out.push('\\');
                            out.push(c);
                        }
                        '\'' => out.push_str("''"),
                        c => out.push(c),
                    }
                }
                out.push('"');
            }
        }
    }
    out.push_str(&format!("}}'::{sql_type}[]"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_quote_text_keys() {
        assert_eq!(
            array(&[Key::Int(1), Key::Int(-2)], "bigint"),
            "'{1,-2}'::bigint[]"
        );
        assert_eq!(
            array(
                &[Key::Text("a\"b".into()), Key::Text("it's \\".into())],
                "text"
            ),
            "'{\"a\\\"b\",\"it''s \\\\\"}'::text[]"
        );
    }
}
