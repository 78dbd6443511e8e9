//! A PostgreSQL connection, parsed from a `postgres://` URL or libpq's `key=value` form (a
//! `service` read from the service file as libpq reads it), that never shows its password.

use std::{collections::BTreeMap, ffi::OsString, fmt, net::IpAddr};

use anyhow::{bail, Context};
use percent_encoding::percent_decode_str;

/// Query parameters that libpq understands, and the environment variable each becomes.
const QUERY_ENV: &[(&str, &str)] = &[
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslsni", "PGSSLSNI"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("requirepeer", "PGREQUIREPEER"),
    ("krbsrvname", "PGKRBSRVNAME"),
    ("gsslib", "PGGSSLIB"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("application_name", "PGAPPNAME"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("gssencmode", "PGGSSENCMODE"),
    ("passfile", "PGPASSFILE"),
    ("options", "PGOPTIONS"),
];

/// The libpq keywords that say where and as whom to connect.
const CONNECTION_KEYS: &[&str] = &["host", "hostaddr", "port", "dbname", "user", "password"];

/// Variables that would steer libpq elsewhere than the URL says (a service's settings even
/// override the other variables): never inherited by the tools we run.
pub const STEERING_ENV: &[&str] = &["PGSERVICE", "PGSERVICEFILE", "PGHOST", "PGHOSTADDR"];

fn known_key(key: &str) -> bool {
    CONNECTION_KEYS.contains(&key) || QUERY_ENV.iter().any(|(name, _)| *name == key)
}

/// A setting's value from the environment; empty or blank counts as unset.
pub fn from_env(var: &str) -> Option<OsString> {
    std::env::var_os(var).filter(|value| !value.to_string_lossy().trim().is_empty())
}

#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub user: Option<String>,
    password: Option<String>,
    /// A host name, an IP address, or a Unix socket directory (from `?host=/path`).
    pub host: Option<String>,
    /// The address connected to instead of looking `host` up (libpq's `hostaddr`).
    pub hostaddr: Option<String>,
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
    /// A `postgres://` URL, or libpq's keyword form (`service=prod dbname=netpoint`).
    pub fn parse(text: &str) -> anyhow::Result<DbUrl> {
        let text = text.trim();
        let scheme = text
            .split_once(':')
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        let is_url = text.contains("://")
            || scheme.is_some_and(|scheme| scheme == "postgres" || scheme == "postgresql");
        let keys = match is_url || !text.contains('=') {
            true => url_keywords(text)?,
            false => conninfo_keywords(text)?,
        };
        DbUrl::from_keywords(keys, is_url)
    }

    /// The connection libpq's keywords describe, a `service` read from the service file for
    /// what they do not give.
    fn from_keywords(mut keys: BTreeMap<String, String>, is_url: bool) -> anyhow::Result<DbUrl> {
        let what = match is_url {
            true => "malformed database URL",
            false => "malformed connection string",
        };
        let mut service_name = None;
        if let Some(service) = keys.remove("service") {
            for (key, value) in service::read(&service)? {
                keys.entry(key).or_insert(value);
            }
            service_name = Some(service);
        }
        let port = match keys.remove("port") {
            None => 5432,
            Some(port) => port
                .parse()
                .with_context(|| format!("{what}: port `{port}` is not a number"))?,
        };
        let database = keys.remove("dbname").unwrap_or_default();
        if database.is_empty() {
            match &service_name {
                Some(service) => bail!("{what}: no database name, neither given nor in service `{service}`: add dbname"),
                None if is_url => bail!("{what}: no database name; expected postgres://user:password@host:port/database"),
                None => bail!("{what}: no database name: add dbname=NAME"),
            }
        }
        let nonempty = |value: Option<String>| value.filter(|v| !v.is_empty());
        let (user, password) = (nonempty(keys.remove("user")), keys.remove("password"));
        let (host, hostaddr) = (
            nonempty(keys.remove("host")),
            nonempty(keys.remove("hostaddr")),
        );
        let params = QUERY_ENV
            .iter()
            .filter_map(|(name, var)| Some((var.to_string(), keys.remove(*name)?)))
            .collect();
        Ok(DbUrl {
            user,
            password,
            host,
            hostaddr,
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
        if let (Some(_), Some(addr)) = (&self.host, &self.hostaddr) {
            out.push_str("?hostaddr=");
            out.push_str(addr);
        }
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
            Some(via) => (via.host.as_ref(), via.port),
            None => (self.host.as_ref().or(self.hostaddr.as_ref()), self.port),
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
            hostaddr: None,
            via: Some(Via {
                host: self.host.clone().or(self.hostaddr.clone()),
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
        if let Some(addr) = &self.hostaddr {
            env.push(("PGHOSTADDR".to_string(), addr.clone()));
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
        // libpq connects to `hostaddr` when it is given, whatever `host` says.
        match self.hostaddr.as_deref().or(self.host.as_deref()) {
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
            url.hostaddr
                .as_deref()
                .or(url.host.as_deref())
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

/// A URL's parts and query parameters as libpq keywords (`user`, `host`, `dbname`, ...).
fn url_keywords(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let hint = "expected postgres://user:password@host:port/database";
    let url = url::Url::parse(text)
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
    let mut keys = BTreeMap::new();
    if !url.username().is_empty() {
        keys.insert("user".to_string(), decode(url.username())?);
    }
    if let Some(password) = url.password() {
        keys.insert("password".to_string(), decode(password)?);
    }
    match url.host() {
        None => {}
        Some(url::Host::Ipv6(addr)) => {
            keys.insert("host".to_string(), addr.to_string());
        }
        Some(host) => {
            let host = decode(&host.to_string())?;
            if !host.is_empty() {
                keys.insert("host".to_string(), host);
            }
        }
    }
    if let Some(port) = url.port() {
        keys.insert("port".to_string(), port.to_string());
    }
    let database = decode(url.path().trim_start_matches('/'))?;
    if database.contains('/') {
        bail!("malformed database URL: database name `{database}` contains `/`; {hint}");
    }
    if !database.is_empty() {
        keys.insert("dbname".to_string(), database);
    }
    for (key, value) in url.query_pairs() {
        match key.as_ref() {
            "password" => bail!(
                "malformed database URL: put the password before the host \
                 (postgres://user:password@host/db), not in the query string"
            ),
            key if known_key(key) || key == "service" => {
                keys.insert(key.to_string(), value.into_owned());
            }
            key => bail!("malformed database URL: unknown parameter `{key}`"),
        }
    }
    Ok(keys)
}

/// libpq's keyword form: `key=value` words, a value in single quotes when it holds spaces
/// (`\'` and `\\` inside), as `psql "service=prod dbname=netpoint"` takes it.
fn conninfo_keywords(text: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let what = "malformed connection string";
    let mut keys = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(keys);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("{what}: `{key}` has no `=value` (expected key=value words, such as service=prod dbname=netpoint)");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => bail!("{what}: the value of `{key}` has no closing quote"),
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                match c {
                    '\\' => value.extend(chars.next()),
                    c => value.push(c),
                }
            }
        }
        if !known_key(&key) && key != "service" {
            bail!("{what}: unknown parameter `{key}`");
        }
        keys.insert(key, value);
    }
}

/// libpq's connection service file: `[name]` sections of `key=value` lines.
mod service {
    use std::path::PathBuf;

    use anyhow::{bail, Context};

    /// The files libpq reads a service from, in its order: `PGSERVICEFILE` (else
    /// `~/.pg_service.conf`), then `pg_service.conf` in `PGSYSCONFDIR`.
    fn files() -> Vec<PathBuf> {
        let mut files = Vec::new();
        match super::from_env("PGSERVICEFILE") {
            Some(file) => files.push(PathBuf::from(file)),
            None => files.extend(
                super::from_env("HOME").map(|home| PathBuf::from(home).join(".pg_service.conf")),
            ),
        }
        files.extend(
            super::from_env("PGSYSCONFDIR").map(|dir| PathBuf::from(dir).join("pg_service.conf")),
        );
        files
    }

    /// A service's `key=value` settings, in the file's order.
    pub type Settings = Vec<(String, String)>;

    /// The keywords of service `name`, from the first file that defines it.
    pub fn read(name: &str) -> anyhow::Result<Settings> {
        let files = files();
        for file in &files {
            let text = match std::fs::read_to_string(file) {
                Ok(text) => text,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => {
                    return Err(err)
                        .with_context(|| format!("reading the service file {}", file.display()))
                }
            };
            if let Some(keys) = section(&text, name)
                .map_err(|(line, why)| anyhow::anyhow!("{}:{line}: {why}", file.display()))?
            {
                return Ok(keys);
            }
        }
        let looked = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match looked.is_empty() {
            true => bail!("service `{name}` is not defined: set PGSERVICEFILE to the service file that defines it"),
            false => bail!("service `{name}` is not defined in {looked}: add a [{name}] section, or set PGSERVICEFILE to the file that has one"),
        }
    }

    /// Service `name`'s `key=value` lines in `text`, read as libpq reads them (no blanks
    /// around `=`); `None` when the file has no such section. Errors give the line.
    pub fn section(text: &str, name: &str) -> Result<Option<Settings>, (usize, String)> {
        let mut found: Option<Settings> = None;
        let mut inside = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(header) = line.strip_prefix('[') {
                if found.is_some() && inside {
                    break;
                }
                inside = header.strip_suffix(']') == Some(name);
                if inside {
                    found = Some(Vec::new());
                }
                continue;
            }
            let Some(keys) = found.as_mut().filter(|_| inside) else {
                continue;
            };
            let Some((key, value)) = line.split_once('=') else {
                return Err((n + 1, format!("`{line}` is not key=value")));
            };
            if key == "service" {
                return Err((n + 1, "a service cannot name another service".to_string()));
            }
            if !super::known_key(key) {
                return Err((
                    n + 1,
                    format!("unknown parameter `{key}` in service `{name}` (no blanks around `=`)"),
                ));
            }
            keys.push((key.to_string(), value.to_string()));
        }
        Ok(found)
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
    fn the_keyword_form_reads_as_libpq_reads_it() {
        let url = DbUrl::parse(
            "host=db.example.com port = 6543 dbname='net point' user=app password='p\\'w d' sslmode=require",
        )
        .unwrap();
        assert_eq!(url.host.as_deref(), Some("db.example.com"));
        assert_eq!((url.port, url.database.as_str()), (6543, "net point"));
        assert_eq!(url.secret(), Some("p'w d"));
        assert!(url
            .pg_env()
            .contains(&("PGSSLMODE".into(), "require".into())));
        assert_eq!(
            url.masked(),
            "postgres://app:***@db.example.com:6543/net point"
        );
        let err = DbUrl::parse("postgres:u:pw@h/db?sslmode=require")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("malformed database URL"), "{err}");
        for (bad, says) in [
            ("dbname=x bogus=1", "unknown parameter `bogus`"),
            ("dbname=x host", "`host` has no `=value`"),
            ("dbname='x", "no closing quote"),
            ("host=h", "no database name"),
        ] {
            let err = DbUrl::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("malformed connection string") && err.contains(says),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn hostaddr_is_where_libpq_connects() {
        let url =
            DbUrl::parse("postgres://u:pw@db.internal.example:5433/netpoint?hostaddr=127.0.0.1")
                .unwrap();
        assert!(url
            .pg_env()
            .contains(&("PGHOSTADDR".into(), "127.0.0.1".into())));
        assert!(url
            .pg_env()
            .contains(&("PGHOST".into(), "db.internal.example".into())));
        assert_eq!(
            url.masked(),
            "postgres://u:***@db.internal.example:5433/netpoint?hostaddr=127.0.0.1"
        );
        assert!(url.is_loopback(), "judged by the address connected to");
        let plain = DbUrl::parse("postgres://u@localhost:5433/netpoint").unwrap();
        assert!(url.same_database(&plain));
        let remote =
            DbUrl::parse("postgres://u@localhost:5433/netpoint?hostaddr=192.0.2.7").unwrap();
        assert!(!remote.is_loopback() && !remote.same_database(&plain));
        let bare = DbUrl::parse("hostaddr=192.0.2.7 dbname=netpoint").unwrap();
        assert_eq!(bare.masked(), "postgres://192.0.2.7:5432/netpoint");
        let forwarded = url.through_forward("/tmp/sock", "prod");
        assert_eq!(forwarded.hostaddr, None);
        assert_eq!(
            forwarded.masked(),
            "postgres://u:***@db.internal.example:5433/netpoint via ssh prod"
        );
    }

    #[test]
    fn a_service_section_is_read_as_libpq_reads_it() {
        let text = "# services\n[other]\nhost=elsewhere\n\n[prod]\nhost=db1\nport=6000\n  dbname=netpoint\nsslmode=verify-full\n[next]\nhost=x\n";
        assert_eq!(
            super::service::section(text, "prod").unwrap(),
            Some(vec![
                ("host".to_string(), "db1".to_string()),
                ("port".to_string(), "6000".to_string()),
                ("dbname".to_string(), "netpoint".to_string()),
                ("sslmode".to_string(), "verify-full".to_string()),
            ])
        );
        assert_eq!(super::service::section(text, "missing").unwrap(), None);
        assert_eq!(super::service::section(text, "pro").unwrap(), None);
        for (bad, line, says) in [
            ("[prod]\nhost = db1\n", 2, "unknown parameter `host `"),
            ("[prod]\nhost\n", 2, "is not key=value"),
            ("\n[prod]\nservice=x\n", 3, "another service"),
        ] {
            let (n, why) = super::service::section(bad, "prod").unwrap_err();
            assert_eq!(n, line, "{bad:?}");
            assert!(why.contains(says), "{bad:?}: {why}");
        }
        // Lines of other services are not judged.
        assert!(super::service::section("[a]\nbogus=1\n[prod]\nhost=h\n", "prod").is_ok());
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
