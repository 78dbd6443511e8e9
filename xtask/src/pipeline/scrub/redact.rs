//! Credentials found inside free text and JSON: URL user information, secret query
//! parameters and JSON keys, `name=value` and `Authorization:` pairs, bearer tokens, private
//! keys and well-known token prefixes. What is not a credential is left byte for byte.

use std::{borrow::Cow, sync::LazyLock};

use regex::{Captures, Regex};
use serde_json::Value;

/// What a removed secret is replaced with in text.
pub const REDACTED: &str = "REDACTED";

/// Parts of names that mark a value as secret (query parameters, JSON keys).
const SECRET_PARTS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "key",
    "auth",
    "signature",
    "credential",
    "psk",
    "private",
    "cookie",
    "session",
    "bearer",
    "jwt",
    "communit",
];

/// Whole names that mark a value as secret, too short to look for inside other names.
const SECRET_NAMES: &[&str] = &["sig", "pw", "code", "otp", "sas", "hash", "shared"];

/// Whether a query parameter or JSON key of this name holds a secret.
pub fn secret_name(name: &str) -> bool {
    let name = name.to_lowercase();
    SECRET_PARTS.iter().any(|part| name.contains(part)) || SECRET_NAMES.contains(&name.as_str())
}

static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?i)\b[a-z][a-z0-9+.\-]*://[^\s"'<>`{}|\\^]+"#).expect("URL pattern")
});
static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?s)-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\z)",
    )
    .expect("PEM pattern")
});
/// `name: value` and `name=value` pairs (quoted or not, JSON-like text included); the name
/// decides, by the same words as query parameters and JSON keys (see [`secret_name`]).
static PAIR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)\b([a-z][a-z0-9_.\-]*)(["']?[ \t]*[:=][ \t]*["']?)((?:bearer|token|basic)[ \t]+)?([^\s"'&,;<>}]+)"#,
    )
    .expect("pair pattern")
});
/// Network device configuration: `enable secret 5 ...`, `username u privilege 15 password 0
/// ...`, `snmp-server community ...`, `tacacs-server key ...`, `key-string ...`.
static DEVICE_CONFIG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b((?:enable[ \t]+(?:secret|password)|username[ \t]+\S+(?:[ \t]+privilege[ \t]+\d+)?[ \t]+(?:secret|password)|snmp-server[ \t]+community|(?:tacacs|radius)-server[ \t]+key|key-string|pre-shared-key|wpa-psk(?:[ \t]+ascii)?)(?:[ \t]+\d)?[ \t]+)(\S+)",
    )
    .expect("device configuration pattern")
});
static SCHEME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(bearer|token|basic)([ \t]+)([A-Za-z0-9\-._~+/]{8,}=*)")
        .expect("scheme pattern")
});
static PREFIXED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:gh[pousr]_|github_pat_|glpat-|gldt-|xox[abprs]-|sk_live_|rk_live_|sk-proj-|sk-ant-|npm_|AIza|AKIA|ASIA)[A-Za-z0-9_\-]{8,}|\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
    )
    .expect("token prefix pattern")
});

/// What a match of a credential pattern becomes.
type Rewrite = fn(&Captures) -> String;

/// `text` with every credential found in it replaced; borrowed when there was none.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    let urls = replace(&out, &URL, |caps| redact_url(&caps[0]));
    if let Cow::Owned(new) = urls {
        out = Cow::Owned(new);
    }
    let steps: [(&Regex, Rewrite); 5] = [
        (&PEM, |caps| {
            format!(
                "-----BEGIN {0}PRIVATE KEY-----\n{REDACTED}\n-----END {0}PRIVATE KEY-----",
                &caps[1]
            )
        }),
        (&DEVICE_CONFIG, |caps| match &caps[2] {
            REDACTED => caps[0].to_string(),
            _ => format!("{}{REDACTED}", &caps[1]),
        }),
        (&PAIR, |caps| {
            if &caps[4] == REDACTED || !secret_name(&caps[1]) {
                return caps[0].to_string();
            }
            let scheme = caps.get(3).map_or("", |m| m.as_str());
            format!("{}{}{scheme}{REDACTED}", &caps[1], &caps[2])
        }),
        (&SCHEME, |caps| {
            if &caps[3] == REDACTED {
                return caps[0].to_string();
            }
            format!("{}{}{REDACTED}", &caps[1], &caps[2])
        }),
        (&PREFIXED, |_| REDACTED.to_string()),
    ];
    for (regex, with) in steps {
        if let Cow::Owned(new) = replace(&out, regex, with) {
            out = Cow::Owned(new);
        }
    }
    out
}

/// Like `Regex::replace_all`, but borrowed when every replacement equals what it replaces.
fn replace<'t>(text: &'t str, regex: &Regex, with: impl Fn(&Captures) -> String) -> Cow<'t, str> {
    let mut changed = false;
    let out = regex.replace_all(text, |caps: &Captures| {
        let new = with(caps);
        changed |= new != caps[0];
        new
    });
    match changed {
        true => Cow::Owned(out.into_owned()),
        false => Cow::Borrowed(text),
    }
}

/// A URL without its user information and without the query parameters (and fragment
/// parameters) whose names are secret.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("matched with ://");
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (path_query, fragment) = match tail.split_once('#') {
        Some((before, fragment)) => (before, Some(fragment)),
        None => (tail, None),
    };
    let mut out = format!("{scheme}://{host}");
    match path_query.split_once('?') {
        Some((path, query)) => {
            out.push_str(&redact_path(path));
            let kept = keep_public_parameters(query);
            if !kept.is_empty() {
                out.push('?');
                out.push_str(&kept);
            }
        }
        None => out.push_str(&redact_path(path_query)),
    }
    if let Some(fragment) = fragment {
        let kept = match fragment.contains('=') {
            true => keep_public_parameters(fragment),
            false => fragment.to_string(),
        };
        if !kept.is_empty() {
            out.push('#');
            out.push_str(&kept);
        }
    }
    out
}

/// A URL path whose segments that look like keys are replaced: incoming-webhook URLs (Slack,
/// Discord, Teams, ...) carry their credential in the path. A segment looks like a key when it
/// is at least 16 characters of letters, digits, `-` and `_`, with both letters and digits.
fn redact_path(path: &str) -> Cow<'_, str> {
    let keyish = |segment: &str| {
        segment.len() >= 16
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && segment.bytes().any(|b| b.is_ascii_digit())
            && segment.bytes().any(|b| b.is_ascii_alphabetic())
    };
    if !path.split('/').any(keyish) {
        return Cow::Borrowed(path);
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| match keyish(segment) {
            true => REDACTED,
            false => segment,
        })
        .collect();
    Cow::Owned(segments.join("/"))
}

fn keep_public_parameters(query: &str) -> String {
    query
        .split('&')
        .filter(|pair| {
            let name = pair.split_once('=').map_or(*pair, |(name, _)| name);
            let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
            !secret_name(&name)
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// Removes, at any depth, object keys whose names are secret, and redacts the credentials
/// in every string; true when anything changed.
pub fn redact_json(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            // `{"name": "X-Api-Key", "value": "..."}`: the pair's name is in another key.
            let named_secret = ["name", "key", "header", "field", "param", "parameter"]
                .iter()
                .any(|k| map.get(*k).and_then(Value::as_str).is_some_and(secret_name));
            let mut changed = false;
            if named_secret {
                if let Some(value) = map.get_mut("value") {
                    if *value != Value::String(REDACTED.into()) && !value.is_null() {
                        *value = Value::String(REDACTED.into());
                        changed = true;
                    }
                }
            }
            let before = map.len();
            map.retain(|key, _| !secret_name(key));
            changed |= map.len() != before;
            for item in map.values_mut() {
                changed |= redact_json(item);
            }
            changed
        }
        Value::Array(items) => items
            .iter_mut()
            .fold(false, |changed, item| redact_json(item) | changed),
        Value::String(text) => match redact_text(text) {
            Cow::Owned(new) => {
                *text = new;
                true
            }
            Cow::Borrowed(_) => false,
        },
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_user_information_and_secret_parameters() {
        for (given, expected) in [
            (
                "https://bot:glpat-SECRET@git.example.com/x.git",
                "https://git.example.com/x.git",
            ),
            (
                "see https://h.example/api?private_token=abc&ref=main&X-Amz-Signature=f00 now",
                "see https://h.example/api?ref=main now",
            ),
            (
                "https://u@h.example/p?sig=1#access_token=t&state=s",
                "https://h.example/p#state=s",
            ),
            ("ssh://git@h.example:22/repo", "ssh://h.example:22/repo"),
            ("https://h.example/a?b=c#top", "https://h.example/a?b=c#top"),
        ] {
            assert_eq!(redact_text(given), expected, "{given}");
        }
    }

    #[test]
    fn pairs_tokens_and_keys_are_redacted() {
        for (given, expected) in [
            (
                "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
                "Authorization: Bearer REDACTED",
            ),
            (
                "{\"auth\": \"Bearer abcdefgh12345678\"}",
                "{\"auth\": \"Bearer REDACTED\"}",
            ),
            ("password=hunter2&user=x", "password=REDACTED&user=x"),
            ("X-API-Key: 0123abcd", "X-API-Key: REDACTED"),
            ("snmp_community: SnmpComm55", "snmp_community: REDACTED"),
            (
                "token ghp_0123456789abcdefghijABCDEFGHIJ012345",
                "token REDACTED",
            ),
            ("key AKIAIOSFODNN7EXAMPLE here", "key REDACTED here"),
            (
                "a\n-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----\nb",
                "a\n-----BEGIN RSA PRIVATE KEY-----\nREDACTED\n-----END RSA PRIVATE KEY-----\nb",
            ),
        ] {
            assert_eq!(redact_text(given), expected, "{given}");
        }
        for clean in [
            "{{ data.name }} changed",
            "passive optical network",
            "a token of thanks",
            "https://netbox.example/dcim/sites/?q=x",
        ] {
            assert!(matches!(redact_text(clean), Cow::Borrowed(_)), "{clean}");
        }
        assert_eq!(
            redact_text(&redact_text("Authorization: Token 0123456789abcdef")),
            "Authorization: Token REDACTED"
        );
    }

    #[test]
    fn secrets_found_in_the_field_after_the_first_pass() {
        for (given, expected) in [
            (
                "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/abcdefghijklmnop1234",
                "https://hooks.slack.com/services/T0123ABCD/B0123ABCD/REDACTED",
            ),
            (
                "https://discord.com/api/webhooks/123456789012345678/AbCdEf-0123456789_xyz",
                "https://discord.com/api/webhooks/123456789012345678/REDACTED",
            ),
            (
                r#"{"user": "{{ username }}", "apiPassword": "p1", "db_pass": "p2", "n": {{ n }}}"#,
                r#"{"user": "{{ username }}", "apiPassword": "REDACTED", "db_pass": "REDACTED", "n": {{ n }}}"#,
            ),
            (
                "db_password=abc123; ipmi_token: t0k SECRET_KEY = \"s3cr3t\"",
                "db_password=REDACTED; ipmi_token: REDACTED SECRET_KEY = \"REDACTED\"",
            ),
            (
                "enable secret 5 $1$abc$xyz\nusername admin privilege 15 password 0 Pw1\nsnmp-server community Publ1c RO",
                "enable secret 5 REDACTED\nusername admin privilege 15 password 0 REDACTED\nsnmp-server community REDACTED RO",
            ),
            (
                "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlMTIz and sk-ant-api03-abcdefghijkl",
                "jwt REDACTED and REDACTED",
            ),
            ("redis://:hunter2@cache:6379/0", "redis://cache:6379/0"),
        ] {
            assert_eq!(redact_text(given), expected, "{given}");
        }
        for clean in [
            "https://netbox.example/api/dcim/devices/42/",
            "see https://docs.example/en/stable/installation",
            "name: core-sw-01, status: active",
        ] {
            assert!(matches!(redact_text(clean), Cow::Borrowed(_)), "{clean}");
        }
    }

    #[test]
    fn json_names_of_pairs_and_communities() {
        let mut value: Value = serde_json::from_str(
            r#"{"snmp_communities": ["c1"], "headers": [{"name": "X-Api-Key", "value": "v1"}, {"name": "Accept", "value": "json"}], "radius": {"shared": "s", "host": "h"}, "users": {"admin": {"hash": "$6$x"}}}"#,
        )
        .unwrap();
        assert!(redact_json(&mut value));
        assert_eq!(
            value,
            serde_json::json!({"headers": [{"name": "X-Api-Key", "value": "REDACTED"}, {"name": "Accept", "value": "json"}], "radius": {"host": "h"}, "users": {"admin": {}}})
        );
        assert!(!redact_json(&mut value));
    }

    #[test]
    fn json_keys_go_at_any_depth() {
        let mut value: Value = serde_json::from_str(
            r#"{"username": "u", "pass": "p", "snmp_community": "c", "nested": [{"access_token": "t", "url": "https://a:b@h/x", "ok": 1}]}"#,
        )
        .unwrap();
        assert!(redact_json(&mut value));
        assert_eq!(
            value,
            serde_json::json!({"username": "u", "nested": [{"url": "https://h/x", "ok": 1}]})
        );
        assert!(!redact_json(&mut value));
    }
}
