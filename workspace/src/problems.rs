//! `Problems`: what a workspace file's parser found wrong, each problem at
//! its span and field, handed back together as `ConfigErrors`.
//!
//! A parser reads the whole file and reports each problem where it finds it,
//! so that an operator fixes them all at once instead of one per reload; only
//! `into_result`, at the end, chooses between the value and the errors.

use std::ops::Range;
use std::path::Path;

use crate::{ConfigError, ConfigErrors, line_col};

/// The problems found so far in one file.
pub(crate) struct Problems<'f> {
    file: &'f Path,
    source: &'f str,
    errors: Vec<ConfigError>,
}

impl<'f> Problems<'f> {
    /// No problems yet in `file`, whose text is `source`.
    pub(crate) fn new(file: &'f Path, source: &'f str) -> Self {
        Self {
            file,
            source,
            errors: Vec::new(),
        }
    }

    /// The value at byte `span` of the file, the field `field` (its dotted
    /// path: `service[0].name`), is wrong; `message` says how.
    pub(crate) fn at(
        &mut self,
        span: Range<usize>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        let error = ConfigError::at(
            self.file,
            self.source,
            Some(span),
            Some(field.into()),
            message,
        );
        self.errors.push(error);
    }

    /// The 1-based line of byte `offset`: where an entry starts, kept in its
    /// value for problems found later (a name outside every zone).
    pub(crate) fn line(&self, offset: usize) -> usize {
        line_col(self.source, offset).0
    }

    /// `value` if nothing was wrong, every problem in the order found otherwise.
    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.errors.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.errors))
        }
    }
}
