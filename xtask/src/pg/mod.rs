//! PostgreSQL access: the URL (and the one flag-or-environment helper), the client tools and
//! where they come from, sessions and queries, and SQL quoting.

pub mod containers;
mod session;
pub mod sql;
mod tools;
pub mod url;

pub use session::{explain_failure, first_error, log, scrub, tool_command};
pub use tools::{Access, DockerNet, Need, PgTools, Server, Tool, ToolSource};
pub use url::DbUrl;
