//! How a client tool run in Docker reaches this machine's servers: the `docker run`
//! arguments around the image for each platform's networking.

use anyhow::bail;

/// How a client tool in a container reaches the server a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DockerNet {
    /// Linux: the container shares the host's network, loopback included (a bridge's
    /// gateway would not reach a server that listens on 127.0.0.1 only).
    HostNetwork,
    /// Docker Desktop, colima, OrbStack: containers run in a VM, where host networking is
    /// the VM's, and this machine's loopback is `host.docker.internal`.
    Gateway,
}

impl DockerNet {
    /// Host networking on Linux, the gateway elsewhere.
    pub const DEFAULT: DockerNet = match cfg!(target_os = "linux") {
        true => DockerNet::HostNetwork,
        false => DockerNet::Gateway,
    };

    /// `NETPOINT_DOCKER_NETWORK` (`host` or `gateway`) when set, for Docker engines the
    /// platform does not tell (Docker Desktop on Linux runs a VM too); else [`Self::DEFAULT`].
    pub fn from_env() -> anyhow::Result<DockerNet> {
        let Some(value) = crate::pg::url::from_env("NETPOINT_DOCKER_NETWORK") else {
            return Ok(DockerNet::DEFAULT);
        };
        match value.to_string_lossy().trim() {
            "host" => Ok(DockerNet::HostNetwork),
            "gateway" => Ok(DockerNet::Gateway),
            other => bail!(
                "NETPOINT_DOCKER_NETWORK is `{other}`: set it to `host` (the container shares this machine's network) \
                 or `gateway` (this machine is host.docker.internal, as on Docker Desktop), or unset it"
            ),
        }
    }

    /// The `docker run` arguments for `tool` before the image and after it. Behind a
    /// gateway, a server on this machine's loopback is reached at `host.docker.internal`:
    /// only the address connected to (`PGHOSTADDR`, looked up in the container) changes;
    /// `PGHOST`, which passfile entries and certificates are matched against, stays the
    /// user's (`localhost` when the URL names none).
    pub fn run_args(
        self,
        tool: &str,
        env: &mut Vec<(String, String)>,
    ) -> (Vec<String>, Vec<String>) {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let var = |name: &str| {
            env.iter()
                .find(|(key, _)| key == name)
                .map(|(_, v)| v.as_str())
        };
        let host = var("PGHOST");
        // libpq connects to `hostaddr` when it is given, whatever `host` says.
        let local = match var("PGHOSTADDR").or(host) {
            None => true,
            Some(host) => loopback_name(host),
        };
        match self {
            DockerNet::HostNetwork => (
                strings(&["--network", "host", "--entrypoint", tool]),
                vec![],
            ),
            DockerNet::Gateway if !local => (strings(&["--entrypoint", tool]), vec![]),
            DockerNet::Gateway => {
                if host.is_none() {
                    env.push(("PGHOST".to_string(), "localhost".to_string()));
                }
                let before = strings(&[
                    "--add-host=host.docker.internal:host-gateway",
                    "--entrypoint",
                    "sh",
                ]);
                let after = strings(&[
                    "-c",
                    "addr=$(getent hosts host.docker.internal) || { echo 'cannot resolve host.docker.internal in the container' >&2; exit 2; }; \
                     PGHOSTADDR=${addr%% *}; export PGHOSTADDR; exec \"$@\"",
                    "sh",
                    tool,
                ]);
                (before, after)
            }
        }
    }
}

/// Whether `host` spells this machine's loopback literally: `localhost` (and names under
/// it), `127.0.0.0/8`, `::1`, or an IPv4-mapped loopback.
pub fn loopback_name(host: &str) -> bool {
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    name == "localhost"
        || name.ends_with(".localhost")
        || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
            std::net::IpAddr::V4(v4) => v4.is_loopback(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn docker_reaches_the_host_loopback_on_each_platform() {
        let env = |host: Option<&str>| {
            let mut env = vec![("PGPORT".to_string(), "5433".to_string())];
            env.extend(host.map(|h| ("PGHOST".to_string(), h.to_string())));
            env
        };
        // Linux: host networking, the URL as it is.
        let mut linux = env(Some("127.0.0.1"));
        let (before, after) = DockerNet::HostNetwork.run_args("pg_dump", &mut linux);
        assert_eq!(before, ["--network", "host", "--entrypoint", "pg_dump"]);
        assert!(after.is_empty());
        assert_eq!(linux, env(Some("127.0.0.1")));

        // A VM: loopback spellings reach host.docker.internal, the host name stays.
        for host in [
            "localhost",
            "LOCALHOST.",
            "db.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "::ffff:127.0.0.1",
        ] {
            let mut mac = env(Some(host));
            let (before, after) = DockerNet::Gateway.run_args("psql", &mut mac);
            assert_eq!(
                before,
                [
                    "--add-host=host.docker.internal:host-gateway",
                    "--entrypoint",
                    "sh"
                ],
                "{host}"
            );
            assert_eq!(after[0], "-c");
            assert!(after[1].contains("PGHOSTADDR="), "{}", after[1]);
            assert_eq!(&after[2..], ["sh", "psql"]);
            assert_eq!(mac, env(Some(host)), "{host}");
        }
        // No host (a local socket): `localhost`, which a passfile's entry matches too.
        let mut socket = env(None);
        let (before, _) = DockerNet::Gateway.run_args("psql", &mut socket);
        assert_eq!(before[0], "--add-host=host.docker.internal:host-gateway");
        assert_eq!(socket, env(Some("localhost")));
        // Other hosts are reached as they are, without host networking.
        for host in [
            "db.example.com",
            "10.0.0.5",
            "localhost.example.com",
            "2001:db8::1",
        ] {
            let mut remote = env(Some(host));
            let (before, after) = DockerNet::Gateway.run_args("pg_dump", &mut remote);
            assert_eq!(before, ["--entrypoint", "pg_dump"], "{host}");
            assert!(after.is_empty());
            assert_eq!(remote, env(Some(host)));
        }
    }
}
