//! The engine under the commands, knowing no command and no flag: read the source, dump it,
//! edit the stream (normalise, scrub, scan for leaks), load it into a temporary database on
//! one stream or on several, and swap it in place with its media.

pub mod budget;
pub mod dump;
pub mod import;
pub mod leak_scan;
pub mod load;
pub mod parallel;
pub mod replace;
pub mod report;
pub mod schema;
pub mod scrub;
pub mod snapshot;
pub mod source;
pub mod staged_media;
pub mod subset;
pub mod swap;
