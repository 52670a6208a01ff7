//! Discovery of the zone files under `zones/`.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::{ConfigError, ZONE_SUFFIX};

/// One zone file: `zones/example.test.zone` serves origin `example.test.`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneFile {
    /// The zone's origin, lower case, fully qualified (ends with a dot).
    pub origin: String,
    pub path: PathBuf,
}

pub(crate) fn list(dir: &Path) -> Result<Vec<ZoneFile>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::file(dir, format!("cannot list zones: {e}"))),
    };
    let mut zones = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| ConfigError::file(dir, format!("cannot list zones: {e}")))?;
        let path = entry.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // Editor backups and temporary files are not zones.
        let Some(stem) = name.strip_suffix(ZONE_SUFFIX) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if stem.is_empty() {
            return Err(ConfigError::file(
                &path,
                "a zone file is named <origin>.zone, e.g. example.test.zone",
            ));
        }
        let origin = format!("{}.", stem.trim_end_matches('.').to_ascii_lowercase());
        zones.push(ZoneFile { origin, path });
    }
    zones.sort_by(|a, b| a.origin.cmp(&b.origin));
    if let Some(pair) = zones.windows(2).find(|w| w[0].origin == w[1].origin) {
        return Err(ConfigError::file(
            &pair[1].path,
            format!(
                "zone {} is defined twice (also in {})",
                pair[1].origin,
                pair[0].path.display()
            ),
        ));
    }
    Ok(zones)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_zone_files_by_origin_and_ignores_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "b.test.zone",
            "a.test.zone",
            "a.test.zone~",
            ".x.zone.swp",
            "README",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        let zones = list(dir.path()).unwrap();
        let origins: Vec<_> = zones.iter().map(|z| z.origin.as_str()).collect();
        assert_eq!(origins, ["a.test.", "b.test."]);
    }

    #[test]
    fn origins_differing_only_in_case_clash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.test.zone"), "").unwrap();
        std::fs::write(dir.path().join("A.test.zone"), "").unwrap();
        let err = list(dir.path()).unwrap_err();
        assert!(err.message.contains("defined twice"), "{err}");
    }

    #[test]
    fn a_missing_zones_directory_means_no_zones() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("zones")).unwrap().is_empty());
    }
}
