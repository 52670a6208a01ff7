//! The `[api]` section of `dnsd.toml`: where the control API listens, and
//! the file holding its bearer token.
//!
//! ```toml
//! # listen and enabled show the defaults. dnsd's flags win over this
//! # section: `--api ADDR:PORT` serves it on ADDR (even with enabled = false),
//! # `--no-api` turns it off, and `--api-token-file PATH` replaces token_file.
//! [api]
//! listen = "127.0.0.1:8053"
//! enabled = true
//! # Optional; relative to the workspace directory. Default:
//! # .cutover/api-token, created (random, mode 0600) when missing.
//! token_file = "secrets/api-token"
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

use crate::problems::Problems;

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
pub const DEFAULT_API_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8053);

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_API_LISTEN,
            enabled: true,
            token_file: None,
        }
    }
}

/// The section as written; a missing section is all `None`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    listen: Option<Spanned<String>>,
    enabled: Option<bool>,
    token_file: Option<Spanned<String>>,
}

pub(super) fn parse(raw: RawApi, problems: &mut Problems<'_>) -> ApiConfig {
    let mut api = ApiConfig::default();
    if let Some(listen) = raw.listen {
        match listen.get_ref().trim().parse::<SocketAddr>() {
            Ok(addr) => api.listen = addr,
            Err(_) => problems.at(
                listen.span(),
                "api.listen",
                format!(
                    "{:?} is not IP:PORT (write \"127.0.0.1:8053\")",
                    listen.get_ref()
                ),
            ),
        }
    }
    api.enabled = raw.enabled.unwrap_or(api.enabled);
    if let Some(file) = raw.token_file {
        if file.get_ref().trim().is_empty() {
            problems.at(
                file.span(),
                "api.token_file",
                "an empty path: leave token_file out to use .cutover/api-token",
            );
        } else {
            api.token_file = Some(PathBuf::from(file.get_ref().trim()));
        }
    }
    api
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::ApiConfig;
    use crate::dnsd::tests::{only_error, parse_str};

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
    fn an_empty_token_file_is_refused() {
        let (line, field, message) = only_error("[api]\ntoken_file = \" \"\n");
        assert_eq!((line, field.as_str()), (2, "api.token_file"));
        assert_eq!(
            message,
            "an empty path: leave token_file out to use .cutover/api-token"
        );
    }
}
