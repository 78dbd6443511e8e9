//! The one reader of pg_dump's `COPY ... FROM stdin;` lines, used by every pass over a plain
//! dump: the scrubber, the leak scan, the row counter, the parallel loader and the fixtures.

/// A `COPY` line of a plain dump, as pg_dump writes it:
/// `COPY public."Big ""One""" (id, "Note") FROM stdin;`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHeader {
    /// The table as the line writes it, quotes included, so that it can be used in SQL:
    /// `public."Big ""One"""`.
    pub written: String,
    /// The table's name parts unquoted, joined by dots: `public.Big "One"`.
    pub table: String,
    /// The columns, unquoted and in the line's order; empty when the line lists none (a
    /// table without columns).
    pub columns: Vec<String>,
}

/// Whether `line` (with or without its newline) starts a `COPY ... FROM stdin;` block; a
/// cheap test, before [`CopyHeader::parse`] reads the names.
pub fn is_copy_start(line: &[u8]) -> bool {
    line.starts_with(b"COPY ")
        && line
            .strip_suffix(b"\n")
            .unwrap_or(line)
            .ends_with(b" FROM stdin;")
}

impl CopyHeader {
    /// The header of `line` (with or without its newline); `None` unless the line is a
    /// `COPY ... FROM stdin;` whose every name is quoted or a plain identifier, as pg_dump
    /// writes them.
    pub fn parse(line: &[u8]) -> Option<CopyHeader> {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let rest = line.strip_prefix(b"COPY ")?;
        let body = rest.strip_suffix(b" FROM stdin;")?;
        let mut at = 0;
        let mut parts = Vec::new();
        loop {
            parts.push(identifier(body, &mut at)?);
            if body.get(at) != Some(&b'.') {
                break;
            }
            at += 1;
        }
        let written = String::from_utf8(body[..at].to_vec()).ok()?;
        let mut columns = Vec::new();
        match &body[at..] {
            // pg_dump writes `COPY t  FROM stdin;` for a table without columns.
            b"" | b" " => {}
            list => {
                let list = list.strip_prefix(b" (")?.strip_suffix(b")")?;
                let mut at = 0;
                loop {
                    columns.push(identifier(list, &mut at)?);
                    if at == list.len() {
                        break;
                    }
                    if !list[at..].starts_with(b", ") {
                        return None;
                    }
                    at += 2;
                }
            }
        }
        Some(CopyHeader {
            written,
            table: parts.join("."),
            columns,
        })
    }
}

/// One identifier of `text` starting at `at`, unquoted; `at` moves past it.
fn identifier(text: &[u8], at: &mut usize) -> Option<String> {
    let start = *at;
    if text.get(start) == Some(&b'"') {
        let mut name = Vec::new();
        let mut i = start + 1;
        loop {
            match *text.get(i)? {
                b'"' if text.get(i + 1) == Some(&b'"') => {
                    name.push(b'"');
                    i += 2;
                }
                b'"' => break,
                byte => {
                    name.push(byte);
                    i += 1;
                }
            }
        }
        *at = i + 1;
        return String::from_utf8(name).ok();
    }
    let len = text[start..]
        .iter()
        .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$'))
        .count();
    if len == 0 {
        return None;
    }
    *at = start + len;
    Some(String::from_utf8_lossy(&text[start..start + len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Option<(String, String, Vec<String>)> {
        CopyHeader::parse(line.as_bytes()).map(|h| (h.written, h.table, h.columns))
    }

    fn owned(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn reads_names_as_pg_dump_writes_them() {
        assert_eq!(
            parse("COPY public.t (a, b) FROM stdin;\n"),
            Some(("public.t".into(), "public.t".into(), owned(&["a", "b"])))
        );
        assert_eq!(
            parse("COPY public.\"Big \"\"One\"\". x\" (id, \"a, b\", \"x (y)\") FROM stdin;"),
            Some((
                "public.\"Big \"\"One\"\". x\"".into(),
                "public.Big \"One\". x".into(),
                owned(&["id", "a, b", "x (y)"])
            ))
        );
        assert_eq!(
            parse("COPY \"s p\".\"t (u\" (id) FROM stdin;\n"),
            Some(("\"s p\".\"t (u\"".into(), "s p.t (u".into(), owned(&["id"])))
        );
        assert_eq!(
            parse("COPY public.empty  FROM stdin;\n"),
            Some(("public.empty".into(), "public.empty".into(), vec![]))
        );
        assert_eq!(
            parse("COPY public.\"ünï\" (\"é\") FROM stdin;\n").map(|h| h.1),
            Some("public.ünï".into())
        );
    }

    #[test]
    fn refuses_what_pg_dump_does_not_write() {
        for line in [
            "COPY public.t (a) TO stdout;\n",
            "COPY public.t;drop (a) FROM stdin;\n",
            "COPY public.\"open (a) FROM stdin;\n",
            "COPY public.t (a,b) FROM stdin;\n",
            "COPY public.t (a, ) FROM stdin;\n",
            "COPY public.t (a FROM stdin;\n",
            "COPY  FROM stdin;\n",
            "COPY public. (a) FROM stdin;\n",
            "copy public.t (a) FROM stdin;\n",
        ] {
            assert_eq!(parse(line), None, "{line:?}");
        }
    }
}
