//! Errors a user sees when a workspace file is wrong: each names the file, the
//! line and column, the field and what is wrong, like a compiler diagnostic.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A problem found in one workspace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem has a position in the file.
    pub line: Option<usize>,
    /// 1-based column, when the problem has a position in the file.
    pub column: Option<usize>,
    /// The dotted path of the offending field (`rule[2].to`), when there is one.
    pub field: Option<String>,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl ConfigError {
    /// A problem with the file as a whole (missing, unreadable).
    pub fn file(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.to_path_buf(),
            line: None,
            column: None,
            field: None,
            message: message.into(),
        }
    }

    /// A problem at a byte span of `source` (as given by `toml::Spanned`).
    pub fn at(
        file: &Path,
        source: &str,
        span: Option<Range<usize>>,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let (line, column) = match span {
            Some(span) => {
                let (l, c) = line_col(source, span.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        Self {
            file: file.to_path_buf(),
            line,
            column,
            field,
            message: message.into(),
        }
    }

    /// Translates a TOML syntax or schema error, keeping its position and
    /// extracting the field name serde reports.
    pub fn from_toml(file: &Path, source: &str, err: &toml::de::Error) -> Self {
        let message = err.message().trim().to_string();
        let field = field_from_message(&message);
        Self::at(file, source, err.span(), field, message)
    }
}

/// serde names the offending field in backquotes (``unknown field `form` ``,
/// ``missing field `to` ``); surface it as the field.
fn field_from_message(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    let candidate = &message[start..start + len];
    let is_identifier = !candidate.is_empty()
        && candidate
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
    (message.contains("field") && is_identifier).then(|| candidate.to_string())
}

/// 1-based line and column of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    // An offset inside a multi-byte character counts as that character, so
    // that slicing below cannot panic whatever span a caller passes.
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one pass over a workspace, so that an operator can
/// fix them all at once instead of one per reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        Self(vec![e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        let src = "a = 1\nbb = 2\n";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 6), (2, 1));
        assert_eq!(line_col(src, 8), (2, 3));
        assert_eq!(line_col("é = 1", 1), (1, 1), "inside a character");
    }

    #[test]
    fn display_names_file_line_and_field() {
        let e = ConfigError {
            file: "ws/redirector.toml".into(),
            line: Some(4),
            column: Some(7),
            field: Some("rule[0].to".into()),
            message: "not an IPv4 address".into(),
        };
        assert_eq!(
            e.to_string(),
            "ws/redirector.toml:4:7: field `rule[0].to`: not an IPv4 address"
        );
    }
}
