//! Loading on several sessions at once (`--jobs`, default: the number of cores): the
//! scheduler that builds indexes and constraints side by side, straight table copies, and
//! the two loads built of them (a direct clone of a database, and a dump file).

mod direct;
mod file;
pub mod schedule;
mod straight;

pub use direct::DirectClone;
pub use file::{DumpFile, FileLoad};
