//! `dnsd.toml`: where dnsd listens, answer limits, shorthand services, the
//! control API, and the TSIG keys allowed to update zones.
//!
//! ```toml
//! [server]
//! listen = ["127.0.0.1:53", "[::1]:53"]   # UDP and TCP on each
//! udp_sockets = 0                          # SO_REUSEPORT sockets per address; 0 = one per core
//! max_answers = 8                          # cap on rotated A/AAAA records per answer; 0 = none
//! cpu_affinity = true                      # steer each UDP query to a thread on the CPU that received it
//!
//! # The control API (HTTP/JSON, bearer token); listen and enabled show
//! # the defaults. dnsd's flags win over this section: `--api ADDR:PORT` serves it on ADDR
//! # (even with enabled = false), `--no-api` turns it off, and
//! # `--api-token-file PATH` replaces token_file.
//! [api]
//! listen = "127.0.0.1:8053"
//! enabled = true
//! # Optional; relative to the workspace directory. Default:
//! # .cutover/api-token, created (random, mode 0600) when missing.
//! token_file = "secrets/api-token"
//!
//! # A service is a name whose A and AAAA records cutover manages: moving it
//! # never means editing a zone file. It replaces the name's A/AAAA RRsets in
//! # the zone that contains it. Dynamic updates (RFC 2136) of a service's
//! # A/AAAA records are refused: they change with the API or this file.
//! [[service]]
//! name = "www.example.test."
//! addresses = ["198.18.0.3", "2001:2::3"]
//! ttl = 60
//!
//! # A TSIG key (RFC 8945) that may send dynamic updates (RFC 2136) for the
//! # zones listed. Only hmac-sha256. The secret is base64 of at least 16
//! # random bytes (32 recommended: `openssl rand -base64 32`, or the
//! # secret printed by `tsig-keygen -a hmac-sha256 NAME` / `keymgr -t NAME`).
//! # Give it in exactly one of two ways:
//! #   secret      = "BASE64"         inline: then it is copied into every
//! #                                  generation (.cutover/generations/N/);
//! #   secret_file = "/absolute/path" a file holding the base64 (surrounding
//! #                                  whitespace ignored), kept outside the
//! #                                  workspace and out of its generations.
//! # Unsigned updates and updates signed by a key not listed for the zone
//! # are refused.
//! [[tsig_key]]
//! name = "ops-key."
//! algorithm = "hmac-sha256"
//! secret_file = "/etc/cutover/ops-key.secret"  # e.g. `openssl rand -base64 32 > ...`
//! zones = ["example.test."]
//! ```
//!
//! A `secret_file` is read whenever `dnsd.toml` is parsed, never cached
//! apart from it: at start, on every reload, when a new generation is
//! validated, and when dnsd authenticates a dynamic update (it reads
//! `dnsd.toml` afresh for each one). So a rotated secret (write the new
//! file, then rename it over the old one) signs the next update without a
//! reload. A secret file that has become missing, unreadable or invalid is
//! a broken `dnsd.toml`: reloads and workspace changes fail, dnsd keeps
//! answering queries from the snapshot it has, and updates are refused
//! (SERVFAIL) until the file is fixed. The path must be absolute because
//! generations are validated in a staging copy of the workspace, where a
//! relative path would point elsewhere.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, ConfigErrors, toml_file};

/// A validated `dnsd.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DnsdConfig {
    pub server: ServerConfig,
    /// Services in file order; names are unique (case-insensitively).
    pub services: Vec<Service>,
    pub api: ApiConfig,
    /// Keys in file order; names are unique (case-insensitively).
    pub tsig_keys: Vec<TsigKey>,
}

/// The `[api]` section: how the control API is served unless dnsd's flags
/// say otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub enabled: bool,
    /// As written: a relative path is relative to the workspace directory.
    pub token_file: Option<PathBuf>,
}

/// Where the control API listens by default (loopback only).
pub const DEFAULT_API_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8053);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_API_LISTEN,
            enabled: true,
            token_file: None,
        }
    }
}

/// The only TSIG algorithm dnsd accepts.
pub const HMAC_SHA256: &str = "hmac-sha256";

/// Shortest secret accepted: RFC 8945 §6 asks for keys at least as long as
/// the hash output; 16 bytes is the floor below which a key is guessable.
pub const MIN_TSIG_SECRET: usize = 16;

/// A TSIG key allowed to update some zones. The secret is never printed:
/// `Debug` shows its length only.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// Fully qualified, lower case, ends with a dot.
    pub name: String,
    /// Always `hmac-sha256` today.
    pub algorithm: String,
    pub secret: Vec<u8>,
    /// Zone origins, fully qualified, lower case, ending with a dot.
    pub zones: Vec<String>,
    /// 1-based line of the `[[tsig_key]]` entry.
    pub line: usize,
}

impl TsigKey {
    /// Whether this key may update the zone `origin` (fully qualified).
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.zones.contains(&origin)
    }
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .field("zones", &self.zones)
            .field("line", &self.line)
            .finish()
    }
}

impl DnsdConfig {
    /// The key named `name` (any case, with or without the final dot).
    pub fn tsig_key(&self, name: &str) -> Option<&TsigKey> {
        let name = normalize_name(name).ok()?;
        self.tsig_keys.iter().find(|k| k.name == name)
    }
}

/// The `[server]` section: where and how dnsd answers queries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: Vec<SocketAddr>,
    /// SO_REUSEPORT UDP sockets per listen address; 0 means one per core.
    pub udp_sockets: usize,
    /// At most this many A (or AAAA) records in one answer; 0 means no cap.
    pub max_answers: usize,
    /// Steer each UDP query to the socket whose thread runs on the CPU
    /// that received it (see the README on when to turn this off).
    pub cpu_affinity: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 53))],
            udp_sockets: 0,
            max_answers: 0,
            cpu_affinity: true,
        }
    }
}

/// A shorthand for a name's address records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// Fully qualified, lower case, ends with a dot.
    pub name: String,
    pub addresses: Vec<IpAddr>,
    pub ttl: u32,
    /// 1-based line of the `[[service]]` entry, for errors found later
    /// (for example a name outside every served zone).
    pub line: usize,
}

/// Upper bound on a service TTL: RFC 2181 §8 caps TTLs at 2^31 - 1, and a
/// record meant to move should never be cached for more than a week.
pub const MAX_SERVICE_TTL: u32 = 7 * 24 * 3600;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    service: Vec<Spanned<RawService>>,
    #[serde(default)]
    api: Option<RawApi>,
    #[serde(default)]
    tsig_key: Vec<Spanned<RawTsigKey>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: Option<Spanned<String>>,
    enabled: Option<bool>,
    token_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsigKey {
    name: Spanned<String>,
    algorithm: Spanned<String>,
    secret: Option<Spanned<String>>,
    secret_file: Option<Spanned<String>>,
    zones: Spanned<Vec<Spanned<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<Spanned<Vec<Spanned<String>>>>,
    udp_sockets: Option<usize>,
    max_answers: Option<usize>,
    cpu_affinity: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Spanned<String>,
    addresses: Spanned<Vec<Spanned<String>>>,
    ttl: Spanned<u32>,
}

pub(crate) fn parse(path: &Path, source: &str) -> Result<DnsdConfig, ConfigErrors> {
    let raw: RawFile = toml_file::parse(path, source)?;
    let mut errors = Vec::new();
    let mut err = |span: std::ops::Range<usize>, field: String, msg: String| {
        errors.push(ConfigError::at(path, source, Some(span), Some(field), msg));
    };

    let mut server = ServerConfig::default();
    if let Some(raw_server) = raw.server {
        if let Some(listen) = raw_server.listen {
            if listen.get_ref().is_empty() {
                err(
                    listen.span(),
                    "server.listen".into(),
                    "dnsd needs at least one address to listen on".into(),
                );
            }
            server.listen.clear();
            for (i, a) in listen.get_ref().iter().enumerate() {
                match a.get_ref().parse::<SocketAddr>() {
                    Ok(addr) => server.listen.push(addr),
                    Err(_) => err(
                        a.span(),
                        format!("server.listen[{i}]"),
                        format!(
                            "{:?} is not IP:PORT (write \"127.0.0.1:53\" or \"[::1]:53\")",
                            a.get_ref()
                        ),
                    ),
                }
            }
        }
        server.udp_sockets = raw_server.udp_sockets.unwrap_or(0);
        server.max_answers = raw_server.max_answers.unwrap_or(0);
        server.cpu_affinity = raw_server.cpu_affinity.unwrap_or(true);
    }

    let mut services = Vec::with_capacity(raw.service.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, s) in raw.service.iter().enumerate() {
        let line = crate::line_col(source, s.span().start).0;
        let s = s.get_ref();
        let Some(name) = unique_name(&s.name, "service", i, &mut seen, &mut err) else {
            continue;
        };
        let addresses = distinct_values(
            &s.addresses,
            &format!("service[{i}].addresses"),
            |a| {
                a.trim()
                    .parse::<IpAddr>()
                    .map_err(|_| format!("{a:?} is not an IPv4 or IPv6 address"))
            },
            &mut err,
        );
        if s.addresses.get_ref().is_empty() {
            err(
                s.addresses.span(),
                format!("service[{i}].addresses"),
                "a service needs at least one address".into(),
            );
        }
        let ttl = *s.ttl.get_ref();
        if ttl > MAX_SERVICE_TTL {
            err(
                s.ttl.span(),
                format!("service[{i}].ttl"),
                format!("{ttl} s is above the limit of {MAX_SERVICE_TTL} s"),
            );
        }
        services.push(Service {
            name,
            addresses,
            ttl,
            line,
        });
    }

    let mut api = ApiConfig::default();
    if let Some(raw_api) = raw.api {
        if let Some(listen) = raw_api.listen {
            match listen.get_ref().trim().parse::<SocketAddr>() {
                Ok(addr) => api.listen = addr,
                Err(_) => err(
                    listen.span(),
                    "api.listen".into(),
                    format!(
                        "{:?} is not IP:PORT (write \"127.0.0.1:8053\")",
                        listen.get_ref()
                    ),
                ),
            }
        }
        api.enabled = raw_api.enabled.unwrap_or(true);
        if let Some(file) = raw_api.token_file {
            if file.get_ref().trim().is_empty() {
                err(
                    file.span(),
                    "api.token_file".into(),
                    "an empty path: leave token_file out to use .cutover/api-token".into(),
                );
            } else {
                api.token_file = Some(PathBuf::from(file.get_ref().trim()));
            }
        }
    }

    let mut tsig_keys = Vec::with_capacity(raw.tsig_key.len());
    let mut seen_keys: HashMap<String, usize> = HashMap::new();
    for (i, k) in raw.tsig_key.iter().enumerate() {
        let entry_span = k.span();
        let line = crate::line_col(source, entry_span.start).0;
        let k = k.get_ref();
        let Some(name) = unique_name(&k.name, "tsig_key", i, &mut seen_keys, &mut err) else {
            continue;
        };
        let algorithm = k
            .algorithm
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if algorithm != HMAC_SHA256 {
            err(
                k.algorithm.span(),
                format!("tsig_key[{i}].algorithm"),
                format!(
                    "{:?} is not supported: dnsd accepts only {HMAC_SHA256:?}",
                    k.algorithm.get_ref()
                ),
            );
        }
        let secret = key_secret(k, i, entry_span, &mut err).unwrap_or_default();
        let zones = distinct_values(
            &k.zones,
            &format!("tsig_key[{i}].zones"),
            normalize_zone,
            &mut err,
        );
        if k.zones.get_ref().is_empty() {
            err(
                k.zones.span(),
                format!("tsig_key[{i}].zones"),
                "list the zones this key may update, e.g. [\"example.test.\"]".into(),
            );
        }
        tsig_keys.push(TsigKey {
            name,
            algorithm,
            secret,
            zones,
            line,
        });
    }

    if errors.is_empty() {
        Ok(DnsdConfig {
            server,
            services,
            api,
            tsig_keys,
        })
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Longest secret file read: a base64 secret of any sensible length fits
/// many times over, and a path like /dev/zero must not hang a reload.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The decoded secret of `tsig_key[i]`, from `secret` or `secret_file`
/// (exactly one of them); `None`, with the problem reported, otherwise.
fn key_secret(
    k: &RawTsigKey,
    i: usize,
    entry: Range<usize>,
    err: &mut Report<'_>,
) -> Option<Vec<u8>> {
    let (text, span, field, origin) = match (&k.secret, &k.secret_file) {
        (Some(_), Some(file)) => {
            err(
                file.span(),
                format!("tsig_key[{i}].secret_file"),
                "give either secret or secret_file, not both".into(),
            );
            return None;
        }
        (None, None) => {
            err(
                entry,
                format!("tsig_key[{i}].secret"),
                "a key needs its secret: add secret_file = \"/absolute/path\" (a file holding the base64 secret, kept out of the workspace) or secret = \"BASE64\"".into(),
            );
            return None;
        }
        (Some(inline), None) => (
            inline.get_ref().clone(),
            inline.span(),
            format!("tsig_key[{i}].secret"),
            String::new(),
        ),
        (None, Some(file)) => {
            let field = format!("tsig_key[{i}].secret_file");
            let path = Path::new(file.get_ref().trim());
            if !path.is_absolute() {
                err(
                    file.span(),
                    field,
                    format!(
                        "{:?} is not an absolute path: generations are checked in a copy of the workspace, so write the full path (and keep the secret outside the workspace)",
                        file.get_ref()
                    ),
                );
                return None;
            }
            match read_secret_file(path) {
                Ok(text) => (text, file.span(), field, format!("{}: ", path.display())),
                Err(e) => {
                    err(
                        file.span(),
                        field,
                        format!("cannot read {}: {e}", path.display()),
                    );
                    return None;
                }
            }
        }
    };
    match decode_base64(&text) {
        Some(bytes) if bytes.len() >= MIN_TSIG_SECRET => Some(bytes),
        Some(bytes) => {
            err(
                span,
                field,
                format!(
                    "{origin}{} bytes is too short: use at least {MIN_TSIG_SECRET} random bytes (32 recommended, e.g. `openssl rand -base64 32`)",
                    bytes.len()
                ),
            );
            None
        }
        None => {
            err(
                span,
                field,
                format!("{origin}not base64 (the standard alphabet, padded with '=')"),
            );
            None
        }
    }
}

/// The text of a secret file, at most `MAX_SECRET_FILE` bytes of UTF-8.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SECRET_FILE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("longer than {MAX_SECRET_FILE} bytes: not a base64 secret"),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not text: the file should hold the secret in base64",
        )
    })
}

/// Reports a problem with one field: its span, its path (`service[0].name`)
/// and what is wrong.
type Report<'r> = dyn FnMut(Range<usize>, String, String) + 'r;

/// The name of entry `i` of `table`, whose names must be unique; `seen`
/// maps each name so far to its entry. `None`, with the problem reported,
/// for a bad name or one already taken.
fn unique_name(
    name: &Spanned<String>,
    table: &str,
    i: usize,
    seen: &mut HashMap<String, usize>,
    err: &mut Report<'_>,
) -> Option<String> {
    let field = format!("{table}[{i}].name");
    let normalized = match normalize_name(name.get_ref()) {
        Ok(n) => n,
        Err(m) => {
            err(name.span(), field, m);
            return None;
        }
    };
    if let Some(first) = seen.insert(normalized.clone(), i) {
        err(
            name.span(),
            field,
            format!("{normalized} is already defined by {table}[{first}]"),
        );
        return None;
    }
    Some(normalized)
}

/// The values of the list `field` (`service[0].addresses`), each read by
/// `parse`, in order and without repeats; a value that does not parse or
/// is listed twice is reported at its index.
fn distinct_values<T: PartialEq + fmt::Display>(
    list: &Spanned<Vec<Spanned<String>>>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    err: &mut Report<'_>,
) -> Vec<T> {
    let mut values = Vec::new();
    for (j, item) in list.get_ref().iter().enumerate() {
        match parse(item.get_ref()) {
            Ok(v) if values.contains(&v) => err(
                item.span(),
                format!("{field}[{j}]"),
                format!("{v} is listed twice"),
            ),
            Ok(v) => values.push(v),
            Err(m) => err(item.span(), format!("{field}[{j}]"), m),
        }
    }
    values
}

/// A zone origin: a name like any other, except that the root is allowed.
fn normalize_zone(name: &str) -> Result<String, String> {
    if name.trim() == "." {
        return Ok(".".into());
    }
    normalize_name(name)
}

/// Decodes standard, padded base64 (RFC 4648 §4), ignoring nothing:
/// `None` for any other character or a wrong length. Hand-written because
/// it is the only base64 this crate reads, and 20 lines beat a dependency.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim().as_bytes();
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            return None;
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            n = n << 6 | value(c)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Some(out)
}

/// Lower-cases and fully qualifies a domain name, checking RFC 1035's limits.
fn normalize_name(name: &str) -> Result<String, String> {
    let trimmed = name.trim();
    let fqdn = if trimmed.ends_with('.') {
        trimmed.to_ascii_lowercase()
    } else {
        format!("{}.", trimmed.to_ascii_lowercase())
    };
    if fqdn == "." {
        return Err("the root cannot be used here: write a name like www.example.test.".into());
    }
    if fqdn.len() > 254 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    for label in fqdn.trim_end_matches('.').split('.') {
        if label.is_empty() {
            return Err(format!("{name:?} has an empty label"));
        }
        if label.len() > 63 {
            return Err(format!("{name:?} has a label longer than 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*')
        {
            return Err(format!(
                "{name:?}: labels may hold letters, digits, '-' and '_'"
            ));
        }
    }
    Ok(fqdn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(s: &str) -> Result<DnsdConfig, ConfigErrors> {
        parse(Path::new("ws/dnsd.toml"), s)
    }

    /// Where each error points: its line and its field.
    fn lines_and_fields(err: &ConfigErrors) -> Vec<(usize, String)> {
        err.0
            .iter()
            .map(|e| (e.line.unwrap(), e.field.clone().unwrap()))
            .collect()
    }

    #[test]
    fn a_full_file_parses() {
        let cfg = parse_str(
            r#"
[server]
listen = ["127.0.0.1:5300", "[::1]:5300"]
udp_sockets = 2
max_answers = 8
cpu_affinity = false

[[service]]
name = "WWW.Example.Test"
addresses = ["198.18.0.3", "198.18.0.4", "2001:2::3"]
ttl = 60
"#,
        )
        .unwrap();
        assert_eq!(cfg.server.listen.len(), 2);
        assert_eq!(cfg.server.max_answers, 8);
        assert!(!cfg.server.cpu_affinity);
        assert_eq!(cfg.services[0].name, "www.example.test.");
        assert_eq!(cfg.services[0].addresses.len(), 3);
        assert_eq!(cfg.services[0].line, 8);
    }

    #[test]
    fn the_defaults_listen_on_loopback() {
        let cfg = parse_str("").unwrap();
        assert_eq!(cfg.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert!(cfg.server.cpu_affinity);
    }

    #[test]
    fn cpu_affinity_must_be_a_boolean() {
        let err = parse_str("[server]\ncpu_affinity = \"yes\"\n").unwrap_err();
        let e = &err.0[0];
        assert_eq!(e.line, Some(2));
        assert!(e.message.contains("boolean"), "{}", e.message);
    }

    #[test]
    fn bad_services_name_line_and_field() {
        let err = parse_str(
            r#"[[service]]
name = "www.example.test."
addresses = ["198.18.0.3", "not-an-ip"]
ttl = 60

[[service]]
name = "www.EXAMPLE.test"
addresses = []
ttl = 99999999
"#,
        )
        .unwrap_err();
        let got = lines_and_fields(&err);
        assert_eq!(
            got,
            [
                (3, "service[0].addresses[1]".to_string()),
                (7, "service[1].name".to_string())
            ]
        );
    }

    #[test]
    fn empty_addresses_and_huge_ttls_are_rejected() {
        let err = parse_str("[[service]]\nname = \"a.test\"\naddresses = []\nttl = 99999999\n")
            .unwrap_err();
        let fields: Vec<_> = err.0.iter().filter_map(|e| e.field.clone()).collect();
        assert_eq!(fields, ["service[0].addresses", "service[0].ttl"]);
    }

    #[test]
    fn bad_listen_addresses_are_rejected() {
        let err = parse_str("[server]\nlisten = [\"127.0.0.1\"]\n").unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("server.listen[0]"));
        assert_eq!(err.0[0].line, Some(2));
    }

    const KEY: &str = "[[tsig_key]]
name = \"Ops-Key\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"Example.Test.\", \"other.test\"]
";

    #[test]
    fn a_tsig_key_parses_with_its_secret_decoded() {
        let cfg = parse_str(&format!("[server]\nmax_answers = 1\n\n{KEY}")).unwrap();
        let key = &cfg.tsig_keys[0];
        assert_eq!(key.name, "ops-key.");
        assert_eq!(key.secret, b"0123456789abcdef0123456789abcdef");
        assert_eq!(key.zones, ["example.test.", "other.test."]);
        assert_eq!(key.line, 4);
        assert!(key.allows("EXAMPLE.test."));
        assert!(!key.allows("third.test."));
        assert!(cfg.tsig_key("OPS-KEY").is_some());
        assert!(
            !format!("{key:?}").contains("0123"),
            "Debug leaks the secret"
        );
    }

    #[test]
    fn bad_tsig_keys_name_line_and_field() {
        let text = format!(
            "{KEY}
[[tsig_key]]
name = \"ops-key.\"
algorithm = \"hmac-sha256\"
secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"
zones = [\"example.test.\"]

[[tsig_key]]
name = \"short\"
algorithm = \"hmac-md5\"
secret = \"c2hvcnQ=\"
zones = []

[[tsig_key]]
name = \"b\"
algorithm = \"hmac-sha256\"
secret = \"not base64!\"
zones = [\"a..b\"]
"
        );
        let got = lines_and_fields(&parse_str(&text).unwrap_err());
        assert_eq!(
            got,
            [
                (8, "tsig_key[1].name".to_string()),
                (15, "tsig_key[2].algorithm".to_string()),
                (16, "tsig_key[2].secret".to_string()),
                (17, "tsig_key[2].zones".to_string()),
                (22, "tsig_key[3].secret".to_string()),
                (23, "tsig_key[3].zones[0]".to_string()),
            ]
        );
    }

    /// A key whose secret is given by `secret_lines` (TOML), on line 1.
    fn key_with(secret_lines: &str) -> String {
        format!(
            "[[tsig_key]]\nname = \"ops-key.\"\nalgorithm = \"hmac-sha256\"\n{secret_lines}\nzones = [\"example.test.\"]\n"
        )
    }

    /// A key whose secret is read from `path`.
    fn key_from_file(path: &std::path::Path) -> String {
        key_with(&format!("secret_file = {:?}", path.display().to_string()))
    }

    /// A secret file outside any workspace holding `content`.
    fn secret_file(content: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, content.as_bytes()).unwrap();
        file
    }

    /// The one error of parsing `text`: its line, field and message.
    fn only_error(text: &str) -> (usize, String, String) {
        let err = parse_str(text).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let e = &err.0[0];
        (e.line.unwrap(), e.field.clone().unwrap(), e.message.clone())
    }

    #[test]
    fn a_secret_file_holds_the_base64_secret_and_debug_never_shows_it() {
        let file = secret_file("  MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n\n");
        let text = key_from_file(file.path());
        let cfg = parse_str(&text).unwrap();
        let key = &cfg.tsig_keys[0];
        assert_eq!(key.secret, b"0123456789abcdef0123456789abcdef");
        let debug = format!("{cfg:?}");
        assert!(
            !debug.contains("0123") && !debug.contains("MDEy"),
            "Debug leaks the secret: {debug}"
        );
        assert!(debug.contains("<32 bytes>"), "{debug}");
    }

    #[test]
    fn a_rotated_secret_file_is_read_at_the_next_parse() {
        let file = secret_file("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        let text = key_from_file(file.path());
        assert_eq!(
            parse_str(&text).unwrap().tsig_keys[0].secret,
            b"0123456789abcdef0123456789abcdef"
        );
        std::fs::write(file.path(), "cm90YXRlZC1zZWNyZXQtcm90YXRlZC1zZWNyZXQ=\n").unwrap();
        assert_eq!(
            parse_str(&text).unwrap().tsig_keys[0].secret,
            b"rotated-secret-rotated-secret"
        );
    }

    #[test]
    fn a_key_needs_exactly_one_of_secret_and_secret_file() {
        let file = secret_file("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        let both = key_with(&format!(
            "secret = \"MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\"\nsecret_file = {:?}",
            file.path().display().to_string()
        ));
        let (line, field, message) = only_error(&both);
        assert_eq!((line, field.as_str()), (5, "tsig_key[0].secret_file"));
        assert!(message.contains("not both"), "{message}");

        let (line, field, message) = only_error(&format!("\n{}", key_with("")));
        assert_eq!((line, field.as_str()), (2, "tsig_key[0].secret"));
        assert!(message.contains("secret_file"), "{message}");
    }

    #[test]
    fn a_relative_secret_file_is_rejected() {
        let (line, field, message) = only_error(&key_with("secret_file = \"secrets/ops.key\""));
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
        assert!(message.contains("absolute"), "{message}");
    }

    #[test]
    fn an_unreadable_secret_file_is_named_with_the_os_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.key");
        let text = key_from_file(&missing);
        let (line, field, message) = only_error(&text);
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );
        assert!(message.contains("No such file"), "{message}");

        // A directory is not a secret either.
        let text = key_from_file(dir.path());
        let (_, _, message) = only_error(&text);
        assert!(message.contains("directory"), "{message}");
    }

    #[test]
    fn a_secret_file_that_is_not_a_long_enough_base64_secret_is_rejected() {
        for (content, expected) in [
            ("not base64!\n", "not base64"),
            ("c2hvcnQ=\n", "5 bytes is too short"),
            ("", "not base64"),
        ] {
            let file = secret_file(content);
            let path = file.path().display().to_string();
            let (line, field, message) = only_error(&key_from_file(file.path()));
            assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret_file"));
            assert!(
                message.contains(expected) && message.contains(&path),
                "{content:?}: {message}"
            );
            assert!(!message.contains("c2hvcnQ"), "the error shows the secret");
        }

        // Reading stops at a bound: a huge file (or /dev/zero) is no secret.
        let huge = secret_file(&"A".repeat(MAX_SECRET_FILE as usize + 4));
        let text = key_from_file(huge.path());
        let (_, _, message) = only_error(&text);
        assert!(message.contains("longer than"), "{message}");
    }

    #[test]
    fn the_api_section_parses_and_defaults_to_loopback() {
        assert_eq!(parse_str("").unwrap().api, ApiConfig::default());
        assert_eq!(ApiConfig::default().listen.to_string(), "127.0.0.1:8053");
        let cfg = parse_str(
            "[api]\nlisten = \"127.0.0.2:9053\"\nenabled = false\ntoken_file = \"keys/token\"\n",
        )
        .unwrap();
        assert_eq!(cfg.api.listen.to_string(), "127.0.0.2:9053");
        assert!(!cfg.api.enabled);
        assert_eq!(cfg.api.token_file, Some(PathBuf::from("keys/token")));
    }

    #[test]
    fn a_bad_api_listen_names_line_and_field() {
        let err = parse_str("[api]\nenabled = true\nlisten = \"localhost\"\n").unwrap_err();
        assert_eq!(err.0[0].field.as_deref(), Some("api.listen"));
        assert_eq!(err.0[0].line, Some(3));
        let err = parse_str("[api]\nport = 1\n").unwrap_err();
        assert_eq!(err.0[0].line, Some(2), "{err}");
    }

    #[test]
    fn base64_is_decoded_strictly() {
        let accepted: [(&str, &[u8]); 11] = [
            ("aGVsbG8=", b"hello"),
            ("aGVsbG8h", b"hello!"),
            ("aGk=", b"hi"),
            ("aA==", b"h"),
            ("+/+/", &[0xfb, 0xff, 0xbf]),
            // Whitespace around the text is ignored, Unicode's too.
            ("  aGk=\n", b"hi"),
            ("\taGk=\r\n", b"hi"),
            ("\u{3000}aGk=\u{a0}", b"hi"),
            // Bits past the last byte are dropped, not checked.
            ("aGl=", b"hi"),
            ("aB==", b"h"),
            ("aGVsbG9=", b"hello"),
        ];
        for (text, bytes) in accepted {
            assert_eq!(decode_base64(text).as_deref(), Some(bytes), "{text:?}");
        }
        for text in [
            // Nothing at all.
            "",
            "   ",
            "====",
            // Padding missing, too long, or anywhere but the end.
            "aGVsbG8",
            "aGk",
            "aA=",
            "aA",
            "a",
            "a===",
            "aGk==",
            "aGk=====",
            "aA==aA==",
            "a=A=",
            "aG=k",
            // Whitespace inside, or characters outside the standard alphabet.
            "aGV sbG8=",
            "aGVs\nbG8=",
            "aG-k",
            "aG_k",
            "aGk\u{e9}",
            "not base64!",
        ] {
            assert_eq!(decode_base64(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_secret_is_at_least_16_bytes() {
        // 16 bytes: "0123456789abcdef"; 15 bytes: "0123456789abcde".
        let cfg = parse_str(&key_with("secret = \"MDEyMzQ1Njc4OWFiY2RlZg==\"")).unwrap();
        assert_eq!(cfg.tsig_keys[0].secret, b"0123456789abcdef");
        let (line, field, message) = only_error(&key_with("secret = \"MDEyMzQ1Njc4OWFiY2Rl\""));
        assert_eq!((line, field.as_str()), (4, "tsig_key[0].secret"));
        assert_eq!(
            message,
            "15 bytes is too short: use at least 16 random bytes (32 recommended, e.g. `openssl rand -base64 32`)"
        );
        let (_, _, message) = only_error(&key_with("secret = \"MDEy MzQ1Njc4OWFiY2RlZg==\""));
        assert_eq!(
            message,
            "not base64 (the standard alphabet, padded with '=')"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(normalize_name("a..b").is_err());
        assert!(normalize_name(&"a".repeat(64)).is_err());
        assert!(normalize_name("a b.test").is_err());
        assert_eq!(normalize_name("A.Test").unwrap(), "a.test.");
    }
}
