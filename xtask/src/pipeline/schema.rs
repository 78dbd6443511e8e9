//! The schema snapshot: a schema-only `pg_dump` made deterministic and headed by the
//! server's major version.

use anyhow::{bail, Context as _};

use crate::context::Context;
use crate::pg::{self, Access, DbUrl, Need, Tool};
use crate::plain::lines;

pub const HEADER_PREFIX: &str = "-- NetPoint schema snapshot, PostgreSQL ";

/// A normalised schema dump of `url`, headed by the server's major version. With
/// `expected_major`, a server of another major is refused rather than diffed.
pub fn snapshot(cx: &Context, url: &DbUrl, expected_major: Option<u32>) -> anyhow::Result<String> {
    let (sh, tools) = (&cx.sh, &cx.tools);
    let server = tools.server(sh, url, Access::ReadOnly)?;
    if let Some(expected) = expected_major.filter(|&m| m != server.major) {
        bail!(
            "the snapshot was made from PostgreSQL {expected} but {url} runs PostgreSQL {}: \
             a diff across majors would be misleading; check against a PostgreSQL {expected} server \
             or regenerate the snapshot from this one",
            server.major
        );
    }
    // The same server dumps to the same text only with the same pg_dump major.
    let cmd = tools
        .cmd_with(
            sh,
            Tool::PgDump,
            url,
            Access::ReadOnly,
            Need::Exact(server.major),
        )?
        .args(["--schema-only", "--no-owner", "--no-privileges"])
        .ignore_status();
    pg::log(&cmd, url);
    let out = cmd
        .output()
        .with_context(|| format!("running pg_dump against {url}"))?;
    if !out.status.success() {
        return Err(pg::explain_failure(
            url,
            &String::from_utf8_lossy(&out.stderr),
        ))
        .context("pg_dump --schema-only failed");
    }
    let dump = String::from_utf8(out.stdout).context("pg_dump printed non-UTF-8 output")?;
    let text = lines::normalise_str(&dump).replacen(PUBLIC_SCHEMA_STANZA, "", 1);
    Ok(format!("{HEADER_PREFIX}{}\n{text}", server.major))
}

/// What `pg_dump --no-owner` prints for a `public` schema whose owner was changed (as on
/// production): an empty stanza. Dropped, so that ownership does not change the snapshot.
pub const PUBLIC_SCHEMA_STANZA: &str =
    "--\n-- Name: public; Type: SCHEMA; Schema: -; Owner: -\n--\n\n-- *not* creating schema, since initdb creates it\n\n\n";

/// The major version recorded on a snapshot's first line.
pub fn recorded_major(snapshot: &str) -> Option<u32> {
    snapshot
        .lines()
        .next()?
        .strip_prefix(HEADER_PREFIX)?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_records_the_major() {
        assert_eq!(
            recorded_major("-- NetPoint schema snapshot, PostgreSQL 17\n--\n"),
            Some(17)
        );
        assert_eq!(recorded_major("--\n-- PostgreSQL database dump\n"), None);
    }
}
