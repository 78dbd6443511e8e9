//! `subset-plan` (hidden): the closure of a subset, table by table, as JSON, and optionally
//! its rows as pg_dump's `COPY` blocks; the engine of `--subset` on its own, for tests.

use std::{io::Write, path::PathBuf};

use anyhow::{bail, Context as _};
use clap::Args;

use crate::{cli, context::Context, pipeline::subset::Subset};

#[derive(Debug, Args)]
pub struct SubsetPlan {
    /// Source database URL [default: $NETPOINT_PROD_DATABASE_URL].
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    #[command(flatten)]
    subset: cli::SubsetFlags,
    /// Also write every table's rows as pg_dump's `COPY ... FROM stdin` blocks to FILE.
    #[arg(long, value_name = "FILE")]
    copy: Option<PathBuf>,
}

impl SubsetPlan {
    pub fn run(self, cx: &Context) -> anyhow::Result<()> {
        let source = cli::prod_database(self.source)?;
        let Some(request) = self.subset.request()? else {
            bail!("name the subset's roots with --subset \"TABLE: CONDITION\" or NAME=VALUE");
        };
        let cli::SubsetRequest {
            rules,
            roots,
            sample,
            ..
        } = request;
        let mut subset = Subset::compute(cx, &source, &rules, &roots, sample)?;
        if let Some(path) = &self.copy {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            subset.write_all(&mut out)?;
            out.flush()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let plan = serde_json::to_string_pretty(&subset.plan_json())?;
        println!("{plan}");
        Ok(())
    }
}
