//! The TSIG keys as dnsd.toml and their secret files say now, for every
//! UPDATE: read again only when one of those files changed since it was
//! last read (a `stat` of each per update, not a parse), so that a flood
//! of bogus signatures costs a lookup and an HMAC each, while a secret
//! file renamed over the old one still takes effect at the next update.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cutover_workspace::{ConfigErrors, DnsdConfig, Stamps, Workspace};

/// dnsd.toml as last read, and how it and its secret files stood.
pub struct Keys {
    workspace: Workspace,
    cached: Mutex<Option<(Stamps, Arc<DnsdConfig>)>>,
}

impl Keys {
    pub fn new(workspace: Workspace) -> Self {
        Self {
            workspace,
            cached: Mutex::new(None),
        }
    }

    /// dnsd.toml as it stands now. Blocking I/O: a `stat` of each file,
    /// and a read when one changed.
    pub fn current(&self) -> Result<Arc<DnsdConfig>, ConfigErrors> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((stamps, config)) = cached.as_ref()
            && stamps.unchanged()
        {
            return Ok(Arc::clone(config));
        }
        // Stamped before it is read: a write meanwhile shows next time.
        let toml = Stamps::of(&[self.workspace.dnsd_path()]);
        let first = self.workspace.load_dnsd()?;
        let stamps = toml.with(&secret_files(&first));
        // A secret file renamed over between the read and its stamp would
        // be taken for read: read again, and keep it only if it held.
        let second = self.workspace.load_dnsd()?;
        let config = Arc::new(second);
        if *config == first {
            *cached = Some((stamps, Arc::clone(&config)));
        } else {
            *cached = None;
        }
        Ok(config)
    }
}

fn secret_files(config: &DnsdConfig) -> Vec<PathBuf> {
    config
        .tsig_keys
        .iter()
        .filter_map(|k| k.secret_file.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_secret_file_is_read_at_the_next_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "MDEyMzQ1Njc4OWFiY2RlZg==\n").unwrap();
        std::fs::write(
            dir.path().join("dnsd.toml"),
            format!(
                "[[tsig_key]]\nname = \"k.\"\nalgorithm = \"hmac-sha256\"\nsecret_file = {:?}\nzones = [\"a.test.\"]\n",
                secret.display().to_string()
            ),
        )
        .unwrap();
        let keys = Keys::new(Workspace::open(dir.path()).unwrap());
        let first = keys.current().unwrap();
        assert!(Arc::ptr_eq(&first, &keys.current().unwrap()), "cached");
        let next = dir.path().join("next");
        std::fs::write(&next, "ZmVkY2JhOTg3NjU0MzIxMA==\n").unwrap();
        std::fs::rename(&next, &secret).unwrap();
        let rotated = keys.current().unwrap();
        assert_ne!(first.tsig_keys[0].secret, rotated.tsig_keys[0].secret);
        assert_eq!(rotated.tsig_keys[0].secret, b"fedcba9876543210");
    }
}
