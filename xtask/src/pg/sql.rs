//! Quoting names and values for SQL text.

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
