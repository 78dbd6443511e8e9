//! pg_dump's comment that opens each entry of a plain dump, read on its own so that the line
//! editor and the table of contents both know an entry when they see one.

/// pg_dump's comment that opens an entry:
/// `-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -` or
/// `-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The object's name as pg_dump describes it (`t t_pkey` for a table's constraint).
    pub name: String,
    /// pg_dump's type: `TABLE`, `TABLE DATA`, `INDEX`, `FK CONSTRAINT`, ...
    pub kind: String,
    /// Empty for objects outside any schema (`-`, as pg_dump writes it, is kept).
    pub schema: String,
}

impl EntryHeader {
    /// The header `line` (with or without its newline) writes, if it is one. The name may
    /// itself hold `; `, so the fields are found from the right.
    pub fn parse(line: &str) -> Option<EntryHeader> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let rest = line
            .strip_prefix("-- Name: ")
            .or_else(|| line.strip_prefix("-- Data for Name: "))?;
        let at = rest.rfind("; Type: ")?;
        let after = &rest[at + "; Type: ".len()..];
        let kind = after.split("; ").next()?.trim_end();
        let schema = after
            .find("; Schema: ")
            .map(|at| &after[at + "; Schema: ".len()..])
            .map_or("", |schema| {
                schema.split("; Owner: ").next().unwrap_or(schema)
            });
        Some(EntryHeader {
            name: rest[..at].to_string(),
            kind: kind.to_string(),
            schema: schema.to_string(),
        })
    }
}

/// `TABLE DATA` from `-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -`.
pub fn entry_kind(line: &[u8]) -> Option<String> {
    EntryHeader::parse(std::str::from_utf8(line).ok()?).map(|header| header.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_headers_are_read_from_the_right() {
        let header = |line: &str| EntryHeader::parse(line).map(|h| (h.name, h.kind, h.schema));
        let owned = |a: &str, b: &str, c: &str| Some((a.into(), b.into(), c.into()));
        assert_eq!(
            header("-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n"),
            owned("t t_pkey", "CONSTRAINT", "public")
        );
        assert_eq!(
            header("-- Data for Name: t; Type: TABLE DATA; Schema: s; Owner: a; Tablespace: x"),
            owned("t", "TABLE DATA", "s")
        );
        assert_eq!(
            header("-- Name: odd; Type: name; Type: TABLE; Schema: public; Owner: -"),
            owned("odd; Type: name", "TABLE", "public")
        );
        assert_eq!(
            header("-- Name: plpgsql; Type: EXTENSION; Schema: -; Owner: -"),
            owned("plpgsql", "EXTENSION", "-")
        );
        assert_eq!(header("-- Name: x"), None);
        assert_eq!(header("-- Dumped by pg_dump version 15"), None);
    }
}
