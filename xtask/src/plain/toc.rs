//! A plain `pg_dump` script seen as what it is made of: a header of session settings, then
//! one entry per object, each introduced by pg_dump's `-- Name: ...; Type: ...` comment.
//! Knowing the entries lets a load run table data and index builds side by side while the
//! file itself stays the plain script that `psql` loads.

use std::{
    collections::BTreeMap,
    io::{self, BufRead},
};

/// One object of the dump, as a byte range of the script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// pg_dump's type: `TABLE`, `TABLE DATA`, `INDEX`, `FK CONSTRAINT`, ...
    pub kind: String,
    pub start: u64,
    pub end: u64,
    /// The `SET default_tablespace` / `default_table_access_method` lines in force where the
    /// entry starts, for running it in another session.
    pub settings: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Toc {
    /// Where the first entry starts: everything before is the header.
    pub header_end: u64,
    pub entries: Vec<Entry>,
    pub len: u64,
    /// Rows of each `COPY` block, by the table name its `COPY` line gives.
    pub rows: BTreeMap<String, u64>,
    /// The script ends as pg_dump ends a dump it finished, with no `COPY` block left open.
    pub complete: bool,
    /// The first statement that acts beyond the database (see [`crate::plain::statements`]): its
    /// line and first words.
    pub foreign: Option<(u64, String)>,
}

/// The last lines pg_dump writes when a dump has finished (`\unrestrict` is dropped by
/// normalisation, and would follow).
const TRAILER: &[u8] = b"--\n-- PostgreSQL database dump complete\n--\n";

/// Sessions settings pg_dump changes between entries (and relies on afterwards).
const STATEFUL_SETTINGS: &[&str] = &[
    "SET default_tablespace = ",
    "SET default_table_access_method = ",
];

/// Reads a plain dump once and records its entries. Lines inside `COPY` data are skipped.
pub fn scan(mut input: impl BufRead) -> io::Result<Toc> {
    let mut toc = Toc::default();
    let mut line = Vec::new();
    let mut offset = 0u64;
    let mut in_copy = false;
    let mut dashes_at: Option<u64> = None;
    let mut settings: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut table: Option<String> = None;
    let mut rows = 0u64;
    // The last lines outside `COPY` data that are neither blank nor `\unrestrict`.
    let mut tail: Vec<u8> = Vec::new();
    let mut guard = crate::plain::statements::Guard::default();
    let mut number = 0u64;
    loop {
        line.clear();
        let n = input.read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let start = offset;
        offset += n as u64;
        number += 1;
        if in_copy {
            in_copy = line != b"\\.\n" && line != b"\\.";
            if in_copy {
                rows += 1;
            } else if let Some(table) = table.take() {
                *toc.rows.entry(table).or_default() += std::mem::take(&mut rows);
            }
            continue;
        }
        if line != b"\n" && !line.starts_with(b"\\unrestrict ") {
            tail.extend_from_slice(&line);
            if tail.len() > 4 * TRAILER.len() {
                tail.drain(..tail.len() - 2 * TRAILER.len());
            }
        }
        if crate::plain::copy::is_copy_start(&line) {
            in_copy = true;
            // A name pg_dump would not write counts under "", which no manifest lists.
            table = Some(crate::plain::copy::copy_target(&line).unwrap_or_default());
            rows = 0;
            dashes_at = None;
            continue;
        }
        guard.line(number, &line);
        if line == b"--\n" {
            if dashes_at.is_none() {
                dashes_at = Some(start);
            }
            continue;
        }
        let opened_by_dashes = dashes_at.take();
        if let (Some(entry_start), Some(kind)) = (opened_by_dashes, entry_kind(&line)) {
            if let Some(last) = toc.entries.last_mut() {
                last.end = entry_start;
            } else {
                toc.header_end = entry_start;
            }
            toc.entries.push(Entry {
                kind,
                start: entry_start,
                end: entry_start,
                settings: settings.values().cloned().collect(),
            });
            continue;
        }
        for prefix in STATEFUL_SETTINGS {
            if line.starts_with(prefix.as_bytes()) {
                settings.insert(prefix, String::from_utf8_lossy(&line).into_owned());
            }
        }
    }
    toc.len = offset;
    toc.foreign = guard.finish();
    toc.complete = !in_copy && tail.ends_with(TRAILER);
    match toc.entries.last_mut() {
        Some(last) => last.end = offset,
        None => toc.header_end = offset,
    }
    Ok(toc)
}

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

/// Where the data section lies, for a dump that can be loaded in parallel.
#[derive(Debug, PartialEq, Eq)]
pub struct Sections {
    /// Header and schema before the data: `0..pre_end`.
    pub pre_end: u64,
    /// Indexes into `Toc::entries` of the data entries.
    pub data: Vec<usize>,
    /// Constraints, indexes, triggers...: `post_start..len`.
    pub post_start: u64,
}

pub fn is_data(kind: &str) -> bool {
    matches!(kind, "TABLE DATA" | "SEQUENCE SET")
}

/// The three sections of `toc`, or `None` when the dump is not laid out the way pg_dump
/// writes whole databases (or holds large objects), and must be loaded in one stream.
pub fn sections(toc: &Toc) -> Option<Sections> {
    if toc
        .entries
        .iter()
        .any(|e| e.kind.contains("BLOB") || e.kind.contains("LARGE OBJECT"))
    {
        return None;
    }
    let first = toc.entries.iter().position(|e| is_data(&e.kind))?;
    let after = toc.entries[first..]
        .iter()
        .position(|e| !is_data(&e.kind))
        .map(|n| first + n)
        .unwrap_or(toc.entries.len());
    if toc.entries[after..].iter().any(|e| is_data(&e.kind)) {
        return None;
    }
    Some(Sections {
        pre_end: toc.entries[first].start,
        data: (first..after).collect(),
        post_start: toc.entries.get(after).map(|e| e.start).unwrap_or(toc.len),
    })
}

#[cfg(test)]
pub mod tests {
    use super::*;

    pub const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\n\
--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.t (id integer);\n\n\n\
SET default_tablespace = '';\n\n\
--\n-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: -\n--\n\nCOPY public.t (id) FROM stdin;\n--\n-- Name: x; Type: INDEX; Schema: public; Owner: -\n--\n\\.\n\n\n\
--\n-- Name: t_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -\n--\n\nSELECT pg_catalog.setval('public.t_id_seq', 1, false);\n\n\n\
--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\nALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n\
--\n-- PostgreSQL database dump complete\n--\n\n";

    fn text(e: &Entry) -> &'static str {
        &DUMP[e.start as usize..e.end as usize]
    }

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

    #[test]
    fn finds_entries_and_skips_copy_data() {
        let toc = scan(DUMP.as_bytes()).unwrap();
        let kinds: Vec<&str> = toc.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["TABLE", "TABLE DATA", "SEQUENCE SET", "CONSTRAINT"]);
        assert!(DUMP[..toc.header_end as usize].ends_with("SET statement_timeout = 0;\n\n"));
        assert!(text(&toc.entries[0]).starts_with("--\n-- Name: t; Type: TABLE"));
        assert!(
            text(&toc.entries[1]).contains("Type: INDEX"),
            "a row that looks like a comment stays data"
        );
        assert!(text(&toc.entries[1]).ends_with("\\.\n\n\n"));
        assert_eq!(toc.entries[0].settings, Vec::<String>::new());
        assert_eq!(toc.entries[1].settings, ["SET default_tablespace = '';\n"]);
        assert_eq!(toc.entries.last().unwrap().end, DUMP.len() as u64);
        let joined: String = toc.entries.iter().map(text).collect();
        assert_eq!(
            &DUMP[toc.header_end as usize..],
            joined,
            "entries tile the script"
        );
    }

    #[test]
    fn sections_of_a_whole_database_dump() {
        let toc = scan(DUMP.as_bytes()).unwrap();
        let sections = sections(&toc).unwrap();
        assert_eq!(sections.data, [1, 2]);
        assert_eq!(sections.pre_end, toc.entries[1].start);
        assert_eq!(sections.post_start, toc.entries[3].start);
    }

    #[test]
    fn unusual_layouts_load_in_one_stream() {
        let schema_only = DUMP
            .replace("Type: TABLE DATA", "Type: TABLE X")
            .replace("Type: SEQUENCE SET", "Type: SEQUENCE X");
        assert_eq!(sections(&scan(schema_only.as_bytes()).unwrap()), None);
        let data_after_post = format!(
            "{DUMP}--\n-- Data for Name: u; Type: TABLE DATA; Schema: public; Owner: -\n--\n\n"
        );
        assert_eq!(sections(&scan(data_after_post.as_bytes()).unwrap()), None);
        let blobs = DUMP.replace("Type: SEQUENCE SET", "Type: BLOBS");
        assert_eq!(sections(&scan(blobs.as_bytes()).unwrap()), None);
        assert_eq!(sections(&scan(&b"select 1;\n"[..]).unwrap()), None);
    }

    #[test]
    fn counts_rows_and_knows_a_finished_dump() {
        let toc = scan(DUMP.as_bytes()).unwrap();
        assert!(toc.complete);
        assert_eq!(toc.rows, BTreeMap::from([("public.t".to_string(), 3)]));
        let with_key = DUMP.to_string() + "\\unrestrict abc\n\n";
        assert!(scan(with_key.as_bytes()).unwrap().complete);
        for cut in [DUMP.len() / 2, DUMP.len() - 5, DUMP.find("\\.").unwrap()] {
            assert!(
                !scan(&DUMP.as_bytes()[..cut]).unwrap().complete,
                "cut at {cut}"
            );
        }
        let open_copy = DUMP.replace("\\.\n", "");
        assert!(!scan(open_copy.as_bytes()).unwrap().complete);
    }
}
