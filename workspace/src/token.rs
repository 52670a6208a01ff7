//! The bearer token of the daemons' control APIs. It lives in the workspace
//! (`.cutover/api-token`), so that dnsd, the redirector and `cutover` running
//! against one workspace share it without configuration.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{HISTORY_DIR, Workspace};

const TOKEN_FILE: &str = "api-token";

impl Workspace {
    /// The default token file.
    pub fn api_token_path(&self) -> PathBuf {
        self.root().join(HISTORY_DIR).join(TOKEN_FILE)
    }

    /// The API token: read from `explicit` when given, else from the
    /// default file, which is created (32 random bytes, hex, mode 0600) when
    /// it does not exist. Returns whether it was created now.
    pub fn api_token(&self, explicit: Option<&Path>) -> io::Result<(String, bool)> {
        if let Some(path) = explicit {
            return read_token(path).map(|t| (t, false));
        }
        let path = self.api_token_path();
        match read_token(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            other => return other.map(|t| (t, false)),
        }
        let created = create_token(&path)?;
        read_token(&path).map(|t| (t, created))
    }
}

/// Compares a presented token with the expected one in time that does not
/// depend on where they differ, so that it cannot be guessed byte by byte.
pub fn token_matches(expected: &str, presented: &str) -> bool {
    let (a, b) = (expected.as_bytes(), presented.trim().as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn read_token(path: &Path) -> io::Result<String> {
    let token = fs::read_to_string(path)
        .map_err(doing("reading the API token", path))?
        .trim()
        .to_string();
    if token.is_empty() {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            format!("the API token file {} is empty", path.display()),
        ));
    }
    Ok(token)
}

/// Writes a new token to a private temp file and links it into place:
/// `link` fails if the file exists, so when two daemons start at once one
/// token wins and nobody ever reads a half-written file.
fn create_token(path: &Path) -> io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    // `.cutover/`, private like everything in it.
    DirBuilder::new()
        .recursive(true)
        .mode(crate::durable::PRIVATE_DIR)
        .create(dir)
        .map_err(doing("creating", dir))?;
    crate::durable::narrow(dir);
    // 32 bytes of token, then 8 that name this writer's temp file.
    let mut bytes = [0u8; 40];
    let urandom = Path::new("/dev/urandom");
    fs::File::open(urandom)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(doing("reading", urandom))?;
    let hex = |b: &[u8]| b.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let tmp = dir.join(format!(".{TOKEN_FILE}.{}", hex(&bytes[32..])));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{}\n", hex(&bytes[..32])).as_bytes())?;
            f.sync_all()
        })
        .map_err(doing("writing", &tmp))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(doing("creating the API token", path)(e)),
    }
}

/// Keeps an I/O error's kind and names what was being done to which file,
/// so that a daemon that cannot create its token says where.
fn doing<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn the_default_token_is_created_once_private_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let (t1, created) = ws.api_token(None).unwrap();
        assert!(created);
        assert_eq!(t1.len(), 64);
        let mode = fs::metadata(ws.api_token_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (t2, created) = ws.api_token(None).unwrap();
        assert_eq!((t1, false), (t2, created));
    }

    #[test]
    fn daemons_starting_together_agree_on_one_token() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let ws = ws.clone();
                std::thread::spawn(move || ws.api_token(None).unwrap().0)
            })
            .collect();
        let tokens: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(tokens.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn an_explicit_token_file_must_exist_and_hold_a_token() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::open(dir.path()).unwrap();
        let path = dir.path().join("token");
        assert_eq!(
            ws.api_token(Some(&path)).unwrap_err().kind(),
            ErrorKind::NotFound
        );
        fs::write(&path, "\n").unwrap();
        assert!(ws.api_token(Some(&path)).is_err());
        fs::write(&path, "s3cret\n").unwrap();
        assert_eq!(ws.api_token(Some(&path)).unwrap().0, "s3cret");
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(token_matches("abc", "abc"));
        assert!(token_matches("abc", "abc\n"));
        assert!(!token_matches("abc", "abd"));
        assert!(!token_matches("abc", "ab"));
        assert!(!token_matches("abc", ""));
    }
}
