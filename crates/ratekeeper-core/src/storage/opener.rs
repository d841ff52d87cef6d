//! How a store crate opens its URLs, for registries such as the facade's
//! `from_url`, the configuration's check of `storage.url` and the operator
//! tool's help.

use std::fmt;
use std::sync::Arc;

use super::Storage;
use crate::error::Result;

/// How a store crate opens the URLs of its schemes. Each store crate
/// declares one (`ratekeeper_memory::OPENER`, …); a registry is a list of
/// them, asked in order.
///
/// ```
/// use std::sync::Arc;
/// use ratekeeper_core::storage::Opener;
/// use ratekeeper_core::{Error, ErrorKind, Storage};
///
/// fn accepts(url: &str) -> bool {
///     url.starts_with("null://")
/// }
/// fn open(url: &str) -> ratekeeper_core::Result<Arc<dyn Storage>> {
///     Err(Error::new(ErrorKind::InvalidInput, format!("{url}: nothing to open")))
/// }
/// const NULL: Opener = Opener::new("null", &["null://"], accepts, open);
///
/// let stores = [NULL];
/// let opener = stores.iter().find(|o| o.accepts("null://x")).unwrap();
/// assert_eq!(opener.store(), "null");
/// assert!(opener.open("null://x").is_err());
/// assert!(!NULL.accepts("redis://x"));
/// ```
#[derive(Clone, Copy)]
pub struct Opener {
    store: &'static str,
    examples: &'static [&'static str],
    accepts: fn(&str) -> bool,
    open: fn(&str) -> Result<Arc<dyn Storage>>,
}

impl Opener {
    /// The opener of the store named `store` (also the name of the facade's
    /// feature that enables it), which opens the URLs `accepts` says yes
    /// to with `open`. `examples` show the URL forms, for help texts and
    /// errors (`"redis://host:6379/0"`, …): never a password.
    pub const fn new(
        store: &'static str,
        examples: &'static [&'static str],
        accepts: fn(&str) -> bool,
        open: fn(&str) -> Result<Arc<dyn Storage>>,
    ) -> Self {
        Self {
            store,
            examples,
            accepts,
            open,
        }
    }

    /// The store's name.
    pub const fn store(&self) -> &'static str {
        self.store
    }

    /// Examples of the URL forms it opens.
    pub const fn examples(&self) -> &'static [&'static str] {
        self.examples
    }

    /// Whether it opens `url` (by its scheme: the URL may still be invalid).
    pub fn accepts(&self, url: &str) -> bool {
        (self.accepts)(url)
    }

    /// Opens `url`. A store reached over the network may connect on first
    /// use; opening a file does I/O.
    pub fn open(&self, url: &str) -> Result<Arc<dyn Storage>> {
        (self.open)(url)
    }

    /// The example URLs of every opener in `stores`, joined with `", "`, for
    /// help texts and errors; empty when `stores` is.
    ///
    /// ```
    /// # use ratekeeper_core::storage::Opener;
    /// # fn no(_: &str) -> bool { false }
    /// # fn open(_: &str) -> ratekeeper_core::Result<std::sync::Arc<dyn ratekeeper_core::Storage>> { unreachable!() }
    /// let a = Opener::new("a", &["a://", "a+tls://"], no, open);
    /// let b = Opener::new("b", &["b:///path"], no, open);
    /// assert_eq!(Opener::examples_of(&[a, b]), "a://, a+tls://, b:///path");
    /// ```
    pub fn examples_of(stores: &[Opener]) -> String {
        let examples: Vec<&str> = stores
            .iter()
            .flat_map(|o| o.examples.iter().copied())
            .collect();
        examples.join(", ")
    }

    /// The scheme of `url` as an error may show it: what comes before the
    /// first `:`, cut to 32 characters, never the rest of the URL (which may
    /// hold a password).
    ///
    /// ```
    /// # use ratekeeper_core::storage::Opener;
    /// assert_eq!(Opener::shown_scheme("mongodb://user:secret@host"), "mongodb");
    /// assert_eq!(Opener::shown_scheme("no scheme"), "");
    /// assert_eq!(Opener::shown_scheme(&"x".repeat(100)).len(), 0);
    /// assert_eq!(Opener::shown_scheme(&format!("{}:", "x".repeat(100))).len(), 32);
    /// ```
    pub fn shown_scheme(url: &str) -> String {
        let scheme = url.split_once(':').map_or("", |(s, _)| s);
        scheme.chars().take(32).collect()
    }
}

impl fmt::Debug for Opener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Opener")
            .field("store", &self.store)
            .field("examples", &self.examples)
            .finish_non_exhaustive()
    }
}
