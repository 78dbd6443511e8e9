//! pg_dump's plain format as pure knowledge, with no I/O of its own: line editing and
//! normalisation, `COPY` blocks, the table of contents, the statements a dump may hold, the
//! post-data part as jobs, and the difference of two schema snapshots.

pub mod copy;
pub mod entry;
pub mod lines;
pub mod post_data;
pub mod schema_diff;
pub mod statements;
pub mod toc;
