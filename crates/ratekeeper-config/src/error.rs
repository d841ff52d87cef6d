//! What is wrong with a configuration: every problem, each with where it
//! came from, the field and what was expected.

use std::fmt;

/// One problem in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where the value came from: the file, an environment variable
    /// (`environment variable RATELIMIT__STORAGE__URL`), or a runtime change.
    pub source: String,
    /// The field, e.g. `tiers.pro.rules[1].window`; empty for the whole file.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.source, self.message)
        } else {
            write!(f, "{}: {}: {}", self.source, self.path, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in a configuration: those of single fields first, then those between fields (references, duplicates, costs). A
/// configuration is checked whole: this lists them all, not only the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// One problem that is not about a particular field (a missing file, a
    /// store that cannot be opened).
    pub fn single(
        source: impl Into<String>,
        path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self(vec![ConfigError {
            source: source.into(),
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            all => {
                write!(f, "invalid configuration ({} problems):", all.len())?;
                for e in all {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while a configuration is read and checked.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    pub(crate) list: Vec<ConfigError>,
}

impl Problems {
    pub(crate) fn push(&mut self, source: String, path: &str, message: impl Into<String>) {
        self.list.push(ConfigError {
            source,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(ConfigErrors(self.list))
        }
    }
}
