//! Counting that follows the response: a route that counts only some
//! responses ("only 401s on /login", "not the 2xx") takes each request's
//! cost when it arrives, as any route does, and gives it back once the
//! response shows it does not count.
//!
//! Taking first and giving back later is what keeps concurrent requests
//! exact: a burst of wrong passwords sent at once finds the budget taken by
//! the requests still running, and cannot pass the limit while their answers
//! are unknown. Deciding only after the response would let them all through.

use std::fmt;
use std::sync::Arc;

use http::StatusCode;
use parking_lot::Mutex;
use ratekeeper_core::Reservation;

use super::UnknownSetting;

/// Which responses count towards a route's limits.
///
/// Parsed from a comma-separated list of statuses (`401`) and classes
/// (`4xx`); an item written `!ITEM` excludes. A status counts when it
/// matches an included item (or there are none: only exclusions) and no
/// excluded one:
///
/// | written | counts |
/// |---|---|
/// | `401` | only 401 |
/// | `4xx,5xx` | client and server errors |
/// | `!2xx` | everything but success |
/// | `4xx,!404` | client errors but 404 |
///
/// Or any predicate on the status ([`CountWhen::predicate`]).
///
/// ```
/// use http::StatusCode;
/// use ratekeeper_http::CountWhen;
///
/// let failures: CountWhen = "401,403".parse()?;
/// assert!(failures.counts(StatusCode::UNAUTHORIZED));
/// assert!(!failures.counts(StatusCode::OK));
/// let not_success: CountWhen = "!2xx".parse()?;
/// assert!(not_success.counts(StatusCode::NOT_FOUND));
/// assert!(!not_success.counts(StatusCode::NO_CONTENT));
/// # Ok::<(), ratekeeper_http::UnknownSetting>(())
/// ```
#[derive(Clone)]
pub struct CountWhen(Counts);

#[derive(Clone)]
enum Counts {
    Statuses {
        include: Vec<Status>,
        exclude: Vec<Status>,
    },
    Predicate(Arc<dyn Fn(StatusCode) -> bool + Send + Sync>),
}

/// One status (`401`) or a class (`4xx`: the hundreds digit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    One(u16),
    Class(u16),
}

impl Status {
    fn matches(self, status: StatusCode) -> bool {
        match self {
            Self::One(code) => status.as_u16() == code,
            Self::Class(hundreds) => status.as_u16() / 100 == hundreds,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::One(code) => write!(f, "{code}"),
            Self::Class(hundreds) => write!(f, "{hundreds}xx"),
        }
    }
}

impl CountWhen {
    /// Counts the responses `status` accepts (it is called once per
    /// response of the route, after the handler).
    pub fn predicate(status: impl Fn(StatusCode) -> bool + Send + Sync + 'static) -> Self {
        Self(Counts::Predicate(Arc::new(status)))
    }

    /// Whether a response with `status` counts.
    pub fn counts(&self, status: StatusCode) -> bool {
        match &self.0 {
            Counts::Statuses { include, exclude } => {
                (include.is_empty() || include.iter().any(|s| s.matches(status)))
                    && !exclude.iter().any(|s| s.matches(status))
            }
            Counts::Predicate(accepts) => accepts(status),
        }
    }
}

/// Lists compare by their items; predicates only with themselves.
impl PartialEq for CountWhen {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (
                Counts::Statuses { include, exclude },
                Counts::Statuses {
                    include: i,
                    exclude: e,
                },
            ) => include == i && exclude == e,
            (Counts::Predicate(a), Counts::Predicate(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for CountWhen {}

impl fmt::Debug for CountWhen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Counts::Statuses { include, exclude } => {
                let items: Vec<String> = include
                    .iter()
                    .map(ToString::to_string)
                    .chain(exclude.iter().map(|s| format!("!{s}")))
                    .collect();
                write!(f, "CountWhen({:?})", items.join(","))
            }
            Counts::Predicate(_) => f.write_str("CountWhen(<predicate>)"),
        }
    }
}

impl std::str::FromStr for CountWhen {
    type Err = UnknownSetting;

    /// A comma-separated list of statuses (`401`), classes (`4xx`), and
    /// either written `!ITEM` to exclude it; see [`CountWhen`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = |why: &str| {
            UnknownSetting(format!(
                "statuses to count {:?}: {why} (expected statuses and classes such as \"401\", \"4xx,5xx\" or \"!2xx\")",
                super::cut(text)
            ))
        };
        let (mut include, mut exclude) = (Vec::new(), Vec::new());
        for item in text.split(',').map(str::trim) {
            let (list, item) = match item.strip_prefix('!') {
                Some(rest) => (&mut exclude, rest.trim()),
                None => (&mut include, item),
            };
            list.push(parse_status(item).ok_or_else(|| {
                wrong(&format!(
                    "{:?} is neither a status from 100 to 599 nor a class 1xx to 5xx",
                    super::cut(item)
                ))
            })?);
        }
        if include.is_empty() && exclude.is_empty() {
            return Err(wrong("nothing given"));
        }
        Ok(Self(Counts::Statuses { include, exclude }))
    }
}

fn parse_status(item: &str) -> Option<Status> {
    let lower = item.to_ascii_lowercase();
    if let Some(hundreds) = lower.strip_suffix("xx") {
        let digit: u16 = hundreds.parse().ok()?;
        return (hundreds.len() == 1 && (1..=5).contains(&digit)).then_some(Status::Class(digit));
    }
    let code: u16 = item.parse().ok()?;
    (item.len() == 3 && (100..=599).contains(&code)).then_some(Status::One(code))
}

/// A request admitted on a route that counts only some responses: its cost
/// is taken, and stays taken unless the response shows it does not count.
/// Adapters get it from [`Admission::settlement`](crate::Admission::settlement)
/// and call [`finish`](Self::finish) with the response's status.
///
/// A request that never gets a response (the client went away, the inner
/// service failed) stays counted: the budget errs on the strict side, never
/// on the loose one.
#[derive(Clone)]
pub struct Settlement(Arc<Pending>);

struct Pending {
    when: CountWhen,
    /// Taken by the first `finish`.
    reservation: Mutex<Option<Reservation>>,
}

impl fmt::Debug for Settlement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settlement")
            .field("when", &self.0.when)
            .field("settled", &self.0.reservation.lock().is_none())
            .finish()
    }
}

impl Settlement {
    pub(crate) fn new(when: CountWhen, reservation: Reservation) -> Self {
        Self(Arc::new(Pending {
            when,
            reservation: Mutex::new(Some(reservation)),
        }))
    }

    /// Settles the request once its response has `status`: a response that
    /// counts keeps the cost; one that does not gives it back to every rule
    /// of the route that takes refunds, in the window it was taken from
    /// (rules whose requests wait in line keep it). Only the first call
    /// does anything. A store failure is logged and the cost stays taken.
    pub async fn finish(&self, status: StatusCode) {
        let Some(mut reservation) = self.0.reservation.lock().take() else {
            return;
        };
        if self.0.when.counts(status) {
            return;
        }
        if let Err(error) = reservation.cancel().await {
            tracing::warn!(
                target: "ratekeeper::http",
                %error,
                kind = error.kind().as_str(),
                status = status.as_u16(),
                "a response that does not count could not be given back: it stays counted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(when: &str, status: u16) -> bool {
        let when: CountWhen = when.parse().unwrap();
        when.counts(StatusCode::from_u16(status).unwrap())
    }

    #[test]
    fn statuses_classes_and_exclusions() {
        assert!(counts("401", 401));
        assert!(!counts("401", 403));
        assert!(counts("4xx, 5XX", 404) && counts("4xx,5xx", 503));
        assert!(!counts("4xx,5xx", 200) && !counts("4xx,5xx", 302));
        assert!(counts("!2xx", 301) && counts("!2xx", 500) && !counts("!2xx", 204));
        assert!(counts("4xx,!404", 400) && !counts("4xx,!404", 404));
        assert!(!counts("4xx,!404", 500));
        assert!(counts("! 200", 201) && !counts("!200", 200));
        let teapot = CountWhen::predicate(|s| s.as_u16() == 418);
        assert!(teapot.counts(StatusCode::IM_A_TEAPOT) && !teapot.counts(StatusCode::OK));
        assert_eq!(
            format!("{:?}", "4xx,!404".parse::<CountWhen>().unwrap()),
            "CountWhen(\"4xx,!404\")"
        );
    }

    #[test]
    fn anything_else_is_refused_with_what_is_accepted() {
        for bad in [
            "", " ", ",", "4x", "6xx", "0xx", "99", "600", "4000", "+401", "x4xx", "!", "401,",
            "abc",
        ] {
            let error = bad.parse::<CountWhen>().unwrap_err().to_string();
            assert!(
                error.contains("expected statuses and classes"),
                "{bad:?}: {error}"
            );
        }
        let error = "401,abc".parse::<CountWhen>().unwrap_err().to_string();
        assert!(error.contains("\"abc\" is neither"), "{error}");
    }
}
