//! pg_dump's plain format as pure knowledge, with no I/O of its own: line editing and
//! normalisation, `COPY` blocks, the table of contents, the statements a dump may hold, the
//! post-data part as jobs, and the difference of two schema snapshots.

pub mod copy;
pub mod entry_header;
pub mod lines;
pub mod post_data;
pub mod schema_diff;
pub mod statements;
pub mod toc;

/// A short plain dump (header, restrict lines, one `COPY` block) for the tests here.
#[cfg(test)]
pub(crate) const SAMPLE_DUMP: &str = "--\n-- PostgreSQL database dump\n--\n\n\\restrict AbC123\n\n-- Dumped from database version 15.14 (Debian 15.14-1)\n-- Dumped by pg_dump version 15.18\n\nSET statement_timeout = 0;\n\nCOPY public.t (id, note) FROM stdin;\n10\t\\restrict inside data\n2\t\n\n1\tb\n\\.\n\n\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict AbC123\n\n";
