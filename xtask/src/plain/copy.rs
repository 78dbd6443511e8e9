//! `COPY ... FROM stdin;` blocks of a plain dump: their header (one parser, quote-aware,
//! shared with the leak scan), their table, their rows, and the text format's escaping.

pub use rowscan::{is_copy_start, CopyHeader};

/// The table of a `COPY ... FROM stdin;` line as the line writes it, quotes included, so
/// that it can be used in SQL: `public."Big ""One"""` from `COPY public."Big ""One""" (id) ...`.
/// `None` unless every part is quoted or a plain identifier, as pg_dump writes them.
pub fn copy_target(line: &[u8]) -> Option<String> {
    CopyHeader::parse(line).map(|header| header.written)
}

/// The rows of each table's `COPY` block: `(table, rows)` in dump order.
pub fn copy_blocks(dump: &str) -> Vec<(String, Vec<&str>)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in dump.lines() {
        match current.as_mut() {
            Some(_) if line == "\\." => blocks.push(current.take().unwrap()),
            Some((_, rows)) => rows.push(line),
            None => {
                if let Some(table) = copy_target(line.as_bytes()) {
                    current = Some((table, Vec::new()));
                }
            }
        }
    }
    blocks
}

/// COPY text format → the value.
pub fn unescape(field: &str) -> String {
    if !field.contains('\\') {
        return field.to_string();
    }
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(d @ '0'..='7') => {
                let mut n = d.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match chars.peek().and_then(|c| c.to_digit(8)) {
                        Some(v) => {
                            n = n * 8 + v;
                            chars.next();
                        }
                        None => break,
                    }
                }
                out.push(char::from_u32(n).unwrap_or('?'));
            }
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The value → COPY text format.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_targets_keep_their_quotes() {
        let target = |line: &str| copy_target(line.as_bytes());
        assert_eq!(
            target("COPY public.t (a, b) FROM stdin;\n").as_deref(),
            Some("public.t")
        );
        assert_eq!(
            target("COPY public.\"Big \"\"One\"\". x\" (id) FROM stdin;\n").as_deref(),
            Some("public.\"Big \"\"One\"\". x\"")
        );
        assert_eq!(
            target("COPY \"s p\".t FROM stdin;\n").as_deref(),
            Some("\"s p\".t")
        );
        assert_eq!(target("COPY public.t (a) TO stdout;\n"), None);
        assert_eq!(target("COPY public.t;drop (a) FROM stdin;\n"), None);
    }

    #[test]
    fn finds_copy_blocks() {
        let blocks = copy_blocks(crate::plain::SAMPLE_DUMP);
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].0, "public.t");
        assert_eq!(blocks[0].1.len(), 4);
    }

    #[test]
    fn copy_escaping_round_trips() {
        for value in ["plain", "tab\there", "line\nbreak", "back\\slash", "ünï"] {
            assert_eq!(unescape(&escape(value)), value);
        }
        assert_eq!(unescape("\\101\\x"), "Ax");
    }
}
