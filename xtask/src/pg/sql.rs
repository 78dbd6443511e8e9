//! Quoting names and values for SQL text.

pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// `schema.name` with both parts quoted: as a pg_dump pattern it names exactly that table.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", ident(schema), ident(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_quoted_with_their_quotes_doubled() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(qualified("we\"ird", "t"), "\"we\"\"ird\".\"t\"");
    }
}
