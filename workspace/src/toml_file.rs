//! Reading one TOML file of the workspace.

use std::io::ErrorKind;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::ConfigError;

/// The file's text, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ConfigError::file(path, format!("cannot read: {e}"))),
    }
}

/// Deserializes `source`, turning a syntax or schema error into a located one.
pub(crate) fn parse<T: DeserializeOwned>(path: &Path, source: &str) -> Result<T, ConfigError> {
    toml::from_str(source).map_err(|e| ConfigError::from_toml(path, source, &e))
}
