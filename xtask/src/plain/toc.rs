//! A plain `pg_dump` script seen as what it is made of: a header of session settings, then
//! one entry per object, each introduced by pg_dump's `-- Name: ...; Type: ...` comment.
//! Knowing the entries lets a load run table data and index builds side by side while the
//! file itself stays the plain script that `psql` loads.

use std::{
    collections::BTreeMap,
    io::{self, BufRead},
};

use psqlscan::{CopyEnd, Lexer, LineKind, Statement};

use crate::plain::{copy, entry_header::EntryHeader, lines, statements};

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
    /// The script ends as pg_dump ends a dump it finished: outside any statement, string or
    /// `COPY` block, after pg_dump's last lines.
    pub complete: bool,
    /// The first thing the script holds that pg_dump does not write where it stands (see
    /// [`crate::plain::statements`]), or that psql, the server and this tool's loader could
    /// read differently (see [`psqlscan`]).
    pub refused: Option<Refused>,
    /// The header's `SET client_encoding`.
    pub client_encoding: Option<String>,
}

/// Why a script is not loaded: where, and what was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The line, from 1.
    pub line: u64,
    /// The entry it is in (`TABLE public.t`), none in the header.
    pub entry: Option<String>,
    pub what: String,
}

/// The last lines pg_dump writes when a dump has finished (`\unrestrict` is dropped by
/// normalisation, and would follow).
const TRAILER: &[u8] = b"--\n-- PostgreSQL database dump complete\n--\n";

/// Sessions settings pg_dump changes between entries (and relies on afterwards).
const STATEFUL_SETTINGS: &[&str] = &[
    "SET default_tablespace = ",
    "SET default_table_access_method = ",
];

/// Reads a plain dump once, as psql would read it, and records its entries; checks every
/// statement against what pg_dump writes where it stands ([`Toc::refused`]). Entries start
/// only where psql is between statements, so each can be run in a session of its own.
pub fn scan(mut input: impl BufRead) -> io::Result<Toc> {
    let mut scan = Scan::default();
    let mut line = Vec::new();
    loop {
        if scan.lexer.in_copy() {
            let chunk = input.fill_buf()?;
            if chunk.is_empty() {
                break;
            }
            let used = scan.lexer.copy_data(chunk);
            input.consume(used);
            scan.after_rows();
        } else {
            line.clear();
            if input.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            scan.line(&line);
        }
    }
    Ok(scan.finish())
}

#[derive(Default)]
struct Scan {
    lexer: Lexer,
    toc: Toc,
    header: statements::Header,
    /// Where the `--` line that may open an entry starts.
    dashes_at: Option<u64>,
    settings: BTreeMap<&'static str, String>,
    /// The entry being read, as messages name it.
    entry: Option<String>,
    /// The table of the `COPY` block being read.
    table: Option<String>,
    /// The last lines outside `COPY` data that are neither blank nor `\unrestrict`.
    tail: Vec<u8>,
}

impl Scan {
    fn refuse(&mut self, line: u64, what: impl Into<String>) {
        if self.toc.refused.is_none() {
            self.toc.refused = Some(Refused {
                line,
                entry: self.entry.clone(),
                what: what.into(),
            });
        }
    }

    fn line(&mut self, line: &[u8]) {
        let start = self.lexer.offset();
        let number = self.lexer.lines() + 1;
        let between = self.lexer.at_statement_start();
        let copy_line = copy::is_copy_start(line);
        if between {
            if line == b"--\n" {
                self.dashes_at.get_or_insert(start);
            } else if let (Some(entry_start), Some(header)) = (
                self.dashes_at.take(),
                std::str::from_utf8(line).ok().and_then(EntryHeader::parse),
            ) {
                self.start_entry(entry_start, number, header);
            }
        } else {
            self.dashes_at = None;
            // The loader edits lines by their look, as if every line began a statement.
            let inside = "inside a statement, a string or a comment, where the loader, which edits lines by their look, would";
            if copy_line {
                self.refuse(
                    number,
                    format!("a line that reads as `COPY ... FROM stdin;` {inside} take it for one"),
                );
            } else if lines::may_be_dropped(line) {
                self.refuse(
                    number,
                    format!(
                        "`{}` {inside} drop it",
                        String::from_utf8_lossy(line).trim_end()
                    ),
                );
            }
        }
        if line != b"\n" && !line.starts_with(b"\\unrestrict ") {
            self.tail.extend_from_slice(line);
            if self.tail.len() > 4 * TRAILER.len() {
                self.tail.drain(..self.tail.len() - 2 * TRAILER.len());
            }
        }
        let kind = self.lexer.line(line);
        if let Some(refusal) = self.lexer.take_refusal() {
            self.refuse(refusal.line, refusal.what);
        }
        if kind == LineKind::Meta {
            let in_place = match line.starts_with(b"\\restrict ") {
                true => self.toc.entries.is_empty(),
                false => self.tail.ends_with(TRAILER),
            };
            if !in_place {
                self.refuse(
                    number,
                    format!(
                        "`{}` where pg_dump does not write it",
                        String::from_utf8_lossy(line).trim_end()
                    ),
                );
            }
        }
        let done: Vec<Statement> = self.lexer.take_statements().collect();
        let mut copy_started = false;
        for statement in &done {
            self.statement(statement, line, start, number);
            copy_started |= statement.copy_in;
        }
        let alone = match done.as_slice() {
            [] => true,
            [statement] => statement.start == start && statement.end + 1 == self.lexer.offset(),
            _ => false,
        };
        if between && lines::may_be_dropped(line) && !(alone && self.lexer.at_statement_start()) {
            self.refuse(
                number,
                format!(
                    "`{}` followed on its line by more than the loader may drop with it",
                    String::from_utf8_lossy(line).trim_end()
                ),
            );
        }
        if copy_line && !copy_started {
            self.refuse(number, "a line that reads as `COPY ... FROM stdin;` but is not one to psql, where the loader would take it for one");
        }
    }

    fn start_entry(&mut self, entry_start: u64, number: u64, header: EntryHeader) {
        if self.toc.entries.is_empty() {
            if let Err(what) = self.header.finish() {
                self.refuse(number, what);
            }
            self.toc.client_encoding = self.header.client_encoding.clone();
        }
        if let Some(last) = self.toc.entries.last_mut() {
            last.end = entry_start;
        } else {
            self.toc.header_end = entry_start;
        }
        self.entry = Some(format!("{} {}", header.kind, header.name));
        self.toc.entries.push(Entry {
            kind: header.kind,
            start: entry_start,
            end: entry_start,
            settings: self.settings.values().cloned().collect(),
        });
    }

    fn statement(&mut self, statement: &Statement, line: &[u8], start: u64, number: u64) {
        let checked = match self.toc.entries.last() {
            None => self.header.statement(statement),
            Some(entry) => statements::entry_statement(&entry.kind, statement),
        };
        if let Err(what) = checked {
            self.refuse(statement.line, what);
            return;
        }
        // A statement the loader repeats or edits must be a line of its own.
        let whole_line = statement.start == start
            && statement.end + 1 == start + line.len() as u64
            && line.ends_with(b"\n");
        if statement.copy_in {
            match copy::copy_target(line).filter(|_| whole_line) {
                Some(table) => self.table = Some(table),
                None => self.refuse(
                    number,
                    "a COPY statement not written on a line of its own as pg_dump writes it",
                ),
            }
        }
        let setting = STATEFUL_SETTINGS
            .iter()
            .find(|prefix| line.starts_with(prefix.as_bytes()))
            .filter(|_| statement.line == number);
        if self.toc.entries.is_empty() {
            return;
        }
        match setting {
            Some(prefix) if whole_line => {
                self.settings
                    .insert(prefix, String::from_utf8_lossy(line).into_owned());
            }
            _ if statement.tokens.first().is_some_and(|t| t.is_word("set")) => {
                self.refuse(statement.line, format!(
                    "`{}` not on a line of its own, as pg_dump writes it and a parallel load repeats it",
                    statement.render(60)
                ));
            }
            _ => {}
        }
    }

    fn after_rows(&mut self) {
        if let Some(refusal) = self.lexer.take_refusal() {
            self.refuse(refusal.line, refusal.what);
        }
        if let Some(block) = self.lexer.take_copy_block() {
            if block.end == CopyEnd::CrLf {
                self.refuse(
                    self.lexer.lines(),
                    "a COPY block ended by `\\.` and a carriage return, which psql ends the rows at and the loader would not",
                );
            }
            let table = self.table.take().unwrap_or_default();
            *self.toc.rows.entry(table).or_default() += block.rows;
        }
    }

    fn finish(mut self) -> Toc {
        let in_rows = self.lexer.in_copy();
        let between = self.lexer.at_statement_start();
        self.lexer.finish();
        self.after_rows();
        if self.toc.entries.is_empty() {
            if let Err(what) = self.header.finish() {
                self.refuse(self.lexer.lines(), what);
            }
            self.toc.client_encoding = self.header.client_encoding.clone();
        }
        let len = self.lexer.offset();
        self.toc.len = len;
        self.toc.complete = !in_rows && between && self.tail.ends_with(TRAILER);
        match self.toc.entries.last_mut() {
            Some(last) => last.end = len,
            None => self.toc.header_end = len,
        }
        self.toc
    }
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

    pub const DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\nSET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\n\n\
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
    fn finds_entries_and_skips_copy_data() {
        let toc = scan(DUMP.as_bytes()).unwrap();
        let kinds: Vec<&str> = toc.entries.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["TABLE", "TABLE DATA", "SEQUENCE SET", "CONSTRAINT"]);
        assert!(
            DUMP[..toc.header_end as usize].ends_with("SET standard_conforming_strings = on;\n\n")
        );
        assert_eq!(toc.refused, None);
        assert_eq!(toc.client_encoding.as_deref(), Some("UTF8"));
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

    /// `DUMP` with `body` in place of the entry that opens with `at`.
    fn with_entry(at: &str, body: &str) -> String {
        let start = DUMP.find(at).expect("an entry of DUMP");
        let end = start + 3 + DUMP[start + 3..].find("--\n-- ").unwrap();
        format!("{}{at}{body}{}", &DUMP[..start], &DUMP[end..])
    }

    fn refused(sql: &str) -> Refused {
        let toc = scan(sql.as_bytes()).unwrap();
        toc.refused.unwrap_or_else(|| panic!("not refused:\n{sql}"))
    }

    const SEQ: &str = "--\n-- Name: t_id_seq; Type: SEQUENCE SET; Schema: public; Owner: -\n--\n\n";

    #[test]
    fn entries_begin_only_between_statements() {
        // A string over lines holding an entry header and a COPY line, as vector 2 of issue
        // 32 planted it: psql reads one string, and so does the scan.
        let fake = "--\n-- Name: evil; Type: TABLE DATA; Schema: public; Owner: -\n--\n";
        let dump = with_entry(
            SEQ,
            &format!("SELECT pg_catalog.setval('public.t_id_seq', 1, $$\n{fake}$$);\n\n"),
        );
        let toc = scan(dump.as_bytes()).unwrap();
        assert_eq!(toc.entries.len(), 4, "no entry inside a string");
        assert!(
            toc.refused.unwrap().what.contains("SEQUENCE SET"),
            "and the call is not pg_dump's"
        );
        let dump = with_entry(SEQ, "COMMENT ON TABLE public.t IS 'x\nCOPY public.t (id) FROM stdin;\nDROP TABLE public.t;\n';\n\n");
        let found = refused(&dump);
        assert!(
            found
                .what
                .contains("reads as `COPY ... FROM stdin;` inside a statement"),
            "{found:?}"
        );
        assert_eq!(
            found.line,
            DUMP[..DUMP.find(SEQ).unwrap()].lines().count() as u64 + 6
        );
        assert_eq!(found.entry.as_deref(), Some("SEQUENCE SET t_id_seq"));
        // A header inside an open statement opens no entry either, and the dump is not whole.
        let open = with_entry(
            SEQ,
            "SELECT pg_catalog.setval('public.t_id_seq', 1, false)\n\n",
        );
        let toc = scan(open.as_bytes()).unwrap();
        assert_eq!(toc.entries.len(), 3);
        assert!(
            toc.refused.is_some(),
            "the statement runs on into the next entry's"
        );
        // pg_dump's last lines inside an open statement do not end the dump.
        let unfinished = DUMP.replace(
            "-- PostgreSQL database dump complete",
            "SELECT 1\n-- PostgreSQL database dump complete",
        );
        assert!(!scan(unfinished.as_bytes()).unwrap().complete);
    }

    #[test]
    fn what_psql_and_the_loader_would_read_differently_is_refused() {
        let refused_with = |sql: String, what: &str| {
            let found = refused(&sql);
            assert!(found.what.contains(what), "{what}: {found:?}");
        };
        // Vector 1: rows ended by `\.` and a carriage return.
        refused_with(DUMP.replace("\\.\n", "\\.\r\n"), "carriage return");
        // Lines the loader drops must be whole statements or comments between statements.
        refused_with(
            with_entry(
                SEQ,
                "COMMENT ON TABLE public.t IS $$\n-- Dumped by pg_dump version 17$$;\n",
            ),
            "would drop it",
        );
        refused_with(
            DUMP.replace(
                "SET statement_timeout = 0;\n",
                "SET transaction_timeout = 0; SET lock_timeout = 0;\n",
            ),
            "more than the loader may drop",
        );
        // The settings a parallel load repeats stand on lines of their own.
        refused_with(
            DUMP.replace(
                "SET default_tablespace = '';\n",
                "SET default_tablespace = ''; SET default_table_access_method = heap;\n",
            ),
            "not on a line of its own",
        );
        // A COPY line that psql does not read as one.
        refused_with(
            with_entry(SEQ, "COPY public.t (id) TO stdout; SELECT 1 FROM stdin;\n"),
            "COPY",
        );
        // pg_dump's psql commands stand where pg_dump writes them.
        refused_with(
            with_entry(SEQ, "\\unrestrict abc\n"),
            "where pg_dump does not write it",
        );
        let ended = format!("{DUMP}\\unrestrict abc\n\n");
        assert_eq!(scan(ended.as_bytes()).unwrap().refused, None);
        refused_with(with_entry(SEQ, "\\! id\n"), "restricted");
        // The header sets what the reading relies on.
        refused_with(
            DUMP.replace("SET standard_conforming_strings = on;\n", ""),
            "standard_conforming_strings",
        );
        refused_with(
            DUMP.replace(
                "SET standard_conforming_strings = on;\n",
                "SET standard_conforming_strings = off;\n",
            ),
            "standard_conforming_strings = on",
        );
        refused_with(
            DUMP.replace("'UTF8'", "'SJIS'"),
            "not an encoding a PostgreSQL server has",
        );
    }

    #[test]
    fn statements_outside_their_entry_type_are_refused_with_their_place() {
        let dump = with_entry(SEQ, "SELECT pg_catalog.setval('public.t_id_seq', 1, false);\nDO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$;\n\n");
        let found = refused(&dump);
        assert!(found.what.starts_with("`DO $$ BEGIN"), "{found:?}");
        assert_eq!(found.entry.as_deref(), Some("SEQUENCE SET t_id_seq"));
        assert_eq!(
            &dump.lines().nth(found.line as usize - 1).unwrap()[..2],
            "DO"
        );
    }

    #[test]
    fn the_committed_fixtures_pass_the_guard() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/netpoint.sql");
        let file = std::fs::File::open(path).unwrap();
        let toc = scan(io::BufReader::new(file)).unwrap();
        assert_eq!(toc.refused, None);
        assert!(toc.complete);
        assert_eq!(toc.client_encoding.as_deref(), Some("UTF8"));
    }
}
