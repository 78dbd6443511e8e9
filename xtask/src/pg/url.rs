//! A PostgreSQL connection, parsed from a `postgres://` URL, that never shows its password.

use std::{ffi::OsString, fmt, net::IpAddr, path::PathBuf};

use anyhow::{bail, Context};
use percent_encoding::percent_decode_str;

/// Query parameters that libpq understands, and the environment variable each becomes.
const QUERY_ENV: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("gssencmode", "PGGSSENCMODE"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
];

/// A setting's value from the environment; empty or blank counts as unset.
pub fn from_env(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|value| !value.to_string_lossy().trim().is_empty())
}

/// A path from its flag, else from its environment variable.
pub fn path_or_env(flag: Option<PathBuf>, var: &str) -> Option<PathBuf> {
    flag.or_else(|| from_env(var).map(PathBuf::from))
}

/// A URL from its flag, else from its environment variable, else `None`.
pub fn url_or_env(flag: Option<String>, var: &str) -> anyhow::Result<Option<DbUrl>> {
    let text = match flag {
        Some(text) => text,
        None => match from_env(var) {
            Some(value) => value.into_string().map_err(|_| {
                anyhow::anyhow!("{var} is not valid UTF-8: set it to a postgres:// URL")
            })?,
            None => return Ok(None),
        },
    };
    DbUrl::parse(&text).map(Some)
}

/// A URL from its flag, else from its environment variable, else a clear error.
pub fn required_url(flag: Option<String>, var: &str, flag_name: &str) -> anyhow::Result<DbUrl> {
    url_or_env(flag, var)?
        .ok_or_else(|| anyhow::anyhow!("no database given: pass {flag_name} URL or set {var}"))
}

#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub user: Option<String>,
    password: Option<String>,
    /// A host name, an IP address, or a Unix socket directory (from `?host=/path`).
    pub host: Option<String>,
    pub port: u16,
    pub database: String,
    /// libpq parameters from the query string, as `(PGVAR, value)`.
    pub params: Vec<(String, String)>,
    /// Set when the server is reached through an SSH forward: `host` and `port` are then the
    /// forward's local end, and this is what the user wrote, for every message.
    pub via: Option<Via>,
}

/// The server as seen from an SSH destination.
#[derive(Clone, PartialEq, Eq)]
pub struct Via {
    pub host: Option<String>,
    pub port: u16,
    pub ssh: String,
}

impl DbUrl {
    pub fn parse(text: &str) -> anyhow::Result<DbUrl> {
        let hint = "expected postgres://user:password@host:port/database";
        let url = url::Url::parse(text.trim())
            .map_err(|err| anyhow::anyhow!("malformed database URL ({err}): {hint}"))?;
        if !matches!(url.scheme(), "postgres" | "postgresql") {
            bail!(
                "malformed database URL: scheme `{}` is not postgres://; {hint}",
                url.scheme()
            );
        }
        let decode = |s: &str| -> anyhow::Result<String> {
            Ok(percent_decode_str(s)
                .decode_utf8()
                .context("malformed database URL: invalid percent-encoding")?
                .into_owned())
        };
        let user = match url.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        let password = url.password().map(decode).transpose()?;
        let mut host = match url.host() {
            None => None,
            Some(url::Host::Ipv6(addr)) => Some(addr.to_string()),
            Some(host) => Some(decode(&host.to_string())?),
        };
        let database = decode(url.path().trim_start_matches('/'))?;
        if database.contains('/') {
            bail!("malformed database URL: database name `{database}` contains `/`; {hint}");
        }
        let mut port = url.port().unwrap_or(5432);
        let mut params = Vec::new();
        let mut user = user;
        let mut database = database;
        for (key, value) in url.query_pairs() {
            match key.as_ref() {
                "host" => host = Some(value.into_owned()),
                "port" => {
                    port = value.parse().with_context(|| {
                        format!("malformed database URL: port `{value}` is not a number")
                    })?
                }
                "user" => user = Some(value.into_owned()),
                "dbname" => database = value.into_owned(),
                "password" => bail!(
                    "malformed database URL: put the password before the host \
                     (postgres://user:password@host/db), not in the query string"
                ),
                key => match QUERY_ENV.iter().find(|(name, _)| *name == key) {
                    Some((_, var)) => params.push((var.to_string(), value.into_owned())),
                    None => bail!("malformed database URL: unknown parameter `{key}`"),
                },
            }
        }
        if database.is_empty() {
            bail!("malformed database URL: no database name; {hint}");
        }
        Ok(DbUrl {
            user,
            password,
            host,
            port,
            database,
            params,
            via: None,
        })
    }

    /// The same server with another database.
    pub fn with_database(&self, database: &str) -> DbUrl {
        DbUrl {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// The URL as it may be shown anywhere: the password replaced by `***`.
    pub fn masked(&self) -> String {
        let mut out = String::from("postgres://");
        if let Some(user) = &self.user {
            out.push_str(user);
            if self.password.is_some() {
                out.push_str(":***");
            }
            out.push('@');
        }
        out.push_str(&self.plain_host_port());
        out.push('/');
        out.push_str(&self.database);
        if let Some(via) = &self.via {
            out.push_str(" via ssh ");
            out.push_str(&via.ssh);
        }
        out
    }

    /// `host:port` for messages; a socket directory is shown as is, and a server reached
    /// over SSH as the user named it (`localhost:5432 via ssh prod`).
    pub fn host_port(&self) -> String {
        match &self.via {
            Some(via) => format!("{} via ssh {}", self.plain_host_port(), via.ssh),
            None => self.plain_host_port(),
        }
    }

    /// The host as the user wrote it (seen from the SSH destination, over SSH).
    pub fn shown_host(&self) -> Option<&str> {
        match &self.via {
            Some(via) => via.host.as_deref(),
            None => self.host.as_deref(),
        }
    }

    pub fn shown_port(&self) -> u16 {
        self.via.as_ref().map_or(self.port, |via| via.port)
    }

    /// `host:port` as the user wrote it, without the SSH destination.
    fn plain_host_port(&self) -> String {
        let (host, port) = match &self.via {
            Some(via) => (&via.host, via.port),
            None => (&self.host, self.port),
        };
        match host {
            Some(host) if host.contains(':') => format!("[{host}]:{port}"),
            Some(host) => format!("{host}:{port}"),
            None => format!("localhost:{port}"),
        }
    }

    /// The same database reached through a forward whose local end is the socket directory
    /// `dir` (libpq's `.s.PGSQL.<port>` naming), shown as before and said to be `via` ssh.
    pub fn through_forward(&self, dir: &str, ssh: &str) -> DbUrl {
        DbUrl {
            host: Some(dir.to_string()),
            via: Some(Via {
                host: self.host.clone(),
                port: self.port,
                ssh: ssh.to_string(),
            }),
            ..self.clone()
        }
    }

    /// Environment for libpq tools. The password travels only here, never in argv.
    pub fn pg_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGPORT".to_string(), self.port.to_string()),
            ("PGDATABASE".to_string(), self.database.clone()),
        ];
        if let Some(host) = &self.host {
            env.push(("PGHOST".to_string(), host.clone()));
        }
        if let Some(user) = &self.user {
            env.push(("PGUSER".to_string(), user.clone()));
        }
        if let Some(password) = &self.password {
            env.push(("PGPASSWORD".to_string(), password.clone()));
        }
        env.extend(self.params.iter().cloned());
        env
    }

    /// The password itself, for scrubbing it out of captured tool output.
    pub fn secret(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Whether the server is on this machine: a socket, or a host whose every address is a
    /// loopback, unspecified or local interface address, however the host is spelt
    /// (`LOCALHOST`, `localhost.`, `127.1`, `[::ffff:127.0.0.1]`, this machine's name).
    pub fn is_loopback(&self) -> bool {
        if self.via.is_some() {
            return false;
        }
        match self.host.as_deref() {
            None => true,
            Some(host) if host.starts_with('/') || host.starts_with('@') => true,
            Some(host) => local_host(host, self.port),
        }
    }

    /// A first, cheap check that both URLs name one database: the same name on hosts that
    /// are both this machine, or spelt alike. What the servers say decides in the end
    /// (see `pg::Server::same_database`).
    pub fn same_database(&self, other: &DbUrl) -> bool {
        let host = |url: &DbUrl| {
            url.host
                .as_deref()
                .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
        };
        // Over SSH, another machine: only what the servers say can tell.
        self.via.is_none()
            && other.via.is_none()
            && self.port == other.port
            && self.database == other.database
            && (host(self) == host(other) || (self.is_loopback() && other.is_loopback()))
    }
}

/// Whether every address `host` resolves to belongs to this machine.
fn local_host(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let name = host.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    let addrs: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
    if addrs.is_empty() {
        return false;
    }
    let interfaces = interface_addresses();
    addrs.iter().all(|ip| {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(*ip, IpAddr::V4),
            IpAddr::V4(_) => *ip,
        };
        ip.is_loopback() || ip.is_unspecified() || interfaces.contains(&ip)
    })
}

/// The addresses of this machine's network interfaces.
fn interface_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a linked list that we only read, then free once.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return found;
        }
        let mut next = list;
        while let Some(entry) = next.as_ref() {
            if let Some(addr) = entry.ifa_addr.as_ref() {
                match i32::from(addr.sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(entry.ifa_addr as *const libc::sockaddr_in);
                        found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            next = entry.ifa_next;
        }
        libc::freeifaddrs(list);
    }
    found
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::DbUrl;

    #[test]
    fn parses_every_part() {
        let url = DbUrl::parse(
            "postgresql://app%40corp:p%2Fss%20w@db.example.com:6543/netpoint?sslmode=require",
        )
        .unwrap();
        assert_eq!(url.user.as_deref(), Some("app@corp"));
        assert_eq!(url.secret(), Some("p/ss w"));
        assert_eq!(url.host.as_deref(), Some("db.example.com"));
        assert_eq!(url.port, 6543);
        assert_eq!(url.database, "netpoint");
        assert!(url
            .pg_env()
            .contains(&("PGSSLMODE".into(), "require".into())));
        assert_eq!(
            url.masked(),
            "postgres://app@corp:***@db.example.com:6543/netpoint"
        );
    }

    #[test]
    fn never_formats_the_password() {
        let url = DbUrl::parse("postgres://u:hunter2@localhost/db").unwrap();
        assert!(!format!("{url} {url:?} {}", url.masked()).contains("hunter2"));
        assert!(url
            .pg_env()
            .contains(&("PGPASSWORD".into(), "hunter2".into())));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "not a url",
            "mysql://u@h/db",
            "postgres://u@h",
            "postgres://u@h:notaport/db",
            "postgres://u@h/db?password=x",
            "postgres://u@h/db?bogus=1",
        ] {
            let err = DbUrl::parse(bad).unwrap_err().to_string();
            assert!(err.starts_with("malformed database URL"), "{bad}: {err}");
        }
    }

    #[test]
    fn loopback_and_same_database() {
        let a = DbUrl::parse("postgres://u@localhost:5432/netpoint").unwrap();
        let b = DbUrl::parse("postgres://other@127.0.0.1/netpoint").unwrap();
        let c = DbUrl::parse("postgres://u@[::1]:5432/netpoint").unwrap();
        let d = DbUrl::parse("postgres://u@10.0.0.5:5432/netpoint").unwrap();
        assert!(a.same_database(&b) && b.same_database(&c) && a.same_database(&c));
        assert!(!a.same_database(&d));
        assert!(!a.same_database(&a.with_database("other")));
        assert!(a.is_loopback() && c.is_loopback() && !d.is_loopback());
        let socket = DbUrl::parse("postgres:///netpoint?host=/var/run/postgresql").unwrap();
        assert!(socket.is_loopback());
    }

    #[test]
    fn other_spellings_of_this_machine_are_local() {
        let name = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        let mut hosts = vec![
            "LOCALHOST",
            "localhost.",
            "127.1",
            "127.0.0.2",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
            "[::]",
        ];
        if !name.trim().is_empty() {
            hosts.push(name.trim());
        }
        for host in hosts {
            let url = DbUrl::parse(&format!("postgres://u@{host}:5432/netpoint")).unwrap();
            assert!(url.is_loopback(), "{host}");
            let plain = DbUrl::parse("postgres://u@127.0.0.1:5432/netpoint").unwrap();
            assert!(url.same_database(&plain), "{host}");
        }
        let remote = DbUrl::parse("postgres://u@192.0.2.7:5432/netpoint").unwrap();
        assert!(!remote.is_loopback());
    }
}
