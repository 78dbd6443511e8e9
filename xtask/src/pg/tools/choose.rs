//! Which client serves a step: a host tool that fits the server's major, else the
//! `postgres:<major>` image, and the message that says what to install when neither can.

use anyhow::bail;
use xshell::{cmd, Shell};

use super::{discover::Layout, Client, Need, PgTools, Runner, Tool, ToolSource};
use crate::remedy::Remedy;

impl PgTools {
    /// Whether the image `postgres:<major>` is there (pulled once if it is not).
    fn has_image(&self, sh: &Shell, major: u32) -> bool {
        if let Some(&known) = self.images.lock().unwrap().get(&major) {
            return known;
        }
        let image = format!("postgres:{major}");
        let found = cmd!(sh, "docker image inspect {image}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok()
            || cmd!(sh, "docker pull --quiet {image}")
                .quiet()
                .ignore_stdout()
                .ignore_stderr()
                .run()
                .is_ok();
        self.images.lock().unwrap().insert(major, found);
        found
    }

    /// The newest `postgres:<major>` image present, for steps that need no particular major.
    fn any_image(&self, sh: &Shell) -> Option<u32> {
        let tags = cmd!(sh, "docker image ls postgres --format '{{.Tag}}'")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()?;
        let newest = tags
            .lines()
            .filter_map(|t| t.trim().parse::<u32>().ok())
            .max()?;
        self.images.lock().unwrap().insert(newest, true);
        Some(newest)
    }

    pub(super) fn choose(
        &self,
        sh: &Shell,
        tool: Tool,
        need: Need,
    ) -> anyhow::Result<(Runner, String)> {
        let clients = self.host(tool);
        let name = tool.name();
        let wanted = match need {
            Need::Any | Need::Prefer(_) => None,
            Need::AtLeast(major) | Need::Exact(major) => Some(major),
        };
        if self.source != ToolSource::Docker {
            if let Some(client) = pick_client(clients, need) {
                return Ok((
                    Runner::Host(client.path.clone()),
                    fit_reason(clients, client, need),
                ));
            }
        }
        let first = clients.first();
        if self.source != ToolSource::Host {
            let major = match (wanted, need) {
                (Some(major), _) => self.has_image(sh, major).then_some(major),
                (None, Need::Prefer(major)) if self.has_image(sh, major) => Some(major),
                (None, _) => self.any_image(sh),
            };
            if let Some(major) = major {
                let why = match first {
                    None if self.source == ToolSource::Auto => {
                        format!("no {name} {}", Layout::HOST.searched())
                    }
                    Some(_) if self.source == ToolSource::Auto => format!(
                        "no host {name} fits PostgreSQL {} (found {})",
                        wanted.unwrap_or(major),
                        found_list(clients)
                    ),
                    _ => "only Docker's tools were asked for".to_string(),
                };
                return Ok((Runner::Docker(major), why));
            }
        }
        if let (Need::Exact(major), false) = (need, self.source == ToolSource::Docker) {
            let newer = clients
                .iter()
                .filter(|c| c.major > major)
                .min_by_key(|c| c.major);
            if let Some(client) = newer {
                return Ok((
                    Runner::Host(client.path.clone()),
                    format!(
                        "no postgres:{major} image; host {name} {} ({}) is newer",
                        client.major, client.found
                    ),
                ));
            }
        }
        let found = match first {
            Some(_) => format!("found {name} {}", found_list(clients)),
            None => format!("no {name} {}", Layout::HOST.searched()),
        };
        let major = wanted.map(|m| m.to_string()).unwrap_or_else(|| "N".into());
        let docker = match self.source {
            ToolSource::Host => format!("or {} so the postgres image can be used through Docker", Remedy::ToolsFromDocker),
            _ => format!("or start Docker with the image postgres:{major} (`bash scripts/test-prereqs.sh` builds it)"),
        };
        let install = Layout::HOST.install_hint(wanted);
        match wanted {
            Some(server) => bail!("{found}, but PostgreSQL {server} needs {name} {server} or newer: install {install}, {docker}"),
            None => bail!("{found}: install the PostgreSQL client tools ({install}), {docker}"),
        }
    }
}

/// The client that serves `need` best: the one on `PATH` when it fits (as a shell would
/// run it), else the fitting one nearest the server's major.
pub fn pick_client(clients: &[Client], need: Need) -> Option<&Client> {
    let first = clients.first();
    match need {
        Need::Any => first,
        Need::Prefer(major) => clients.iter().find(|c| c.major == major).or(first),
        Need::AtLeast(major) => first.filter(|c| c.major >= major).or_else(|| {
            clients
                .iter()
                .filter(|c| c.major >= major)
                .min_by_key(|c| c.major)
        }),
        Need::Exact(major) => clients.iter().find(|c| c.major == major),
    }
}

/// Why `chosen` serves `need`, for `--verbose`: "version 15, found on PATH, fits
/// PostgreSQL 15".
pub(super) fn fit_reason(clients: &[Client], chosen: &Client, need: Need) -> String {
    let found = match chosen.found.as_str() {
        "PATH" => "found on PATH".to_string(),
        install => format!("from {install}"),
    };
    let fits = match need {
        Need::Any => "any version will do".to_string(),
        Need::Prefer(major) if major != chosen.major => {
            format!("none is {major}, and any version will do")
        }
        Need::Prefer(major) | Need::AtLeast(major) | Need::Exact(major) => {
            format!("fits PostgreSQL {major}")
        }
    };
    let others = match clients.len() {
        1 => String::new(),
        _ => format!(" (found {})", found_list(clients)),
    };
    format!("version {}, {found}, {fits}{others}", chosen.major)
}

/// `15 (PATH), 17 (Homebrew postgresql@17)`
fn found_list(clients: &[Client]) -> String {
    let list: Vec<String> = clients
        .iter()
        .map(|c| format!("{} ({})", c.major, c.found))
        .collect();
    list.join(", ")
}
