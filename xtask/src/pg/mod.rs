//! PostgreSQL access: the URL, the client tools and
//! where they come from, sessions and queries, SQL quoting, and the local dev-database
//! container that seed-dev and dev-db share.

pub mod containers;
pub mod dev_container;
mod session;
pub mod sql;
mod tools;
pub mod url;

pub use session::{explain_failure, first_error, log, scrub, tool_command, QuerySession};
pub use tools::{Access, DockerNet, Need, PgTools, Server, Tool, ToolSource};
pub use url::DbUrl;
