//! Store URLs as they may be shown: in banners, logs, status views and errors.

/// Query parameters whose values are secrets: any whose name contains one
/// of these (`pass`, `password`, `sentinel_password`, `token`, …).
const SECRET_PARAMETERS: [&str; 5] = ["pass", "secret", "token", "auth", "key"];

/// The longest redacted URL shown; the rest is cut.
const SHOWN: usize = 200;

/// `url` with its credentials replaced by `***`, for anything a person or a
/// log may see: the password of the user part (the whole user part when it
/// has no `:`, since a lone token there is a credential too) and the value
/// of every query parameter whose name says it is a secret (`pass`,
/// `sentinel_password`, `token`, …). Cut to 200 characters. Text that is not
/// a URL comes back cut, otherwise unchanged.
///
/// ```
/// use ratekeeper_core::storage::redact_url;
///
/// assert_eq!(redact_url("redis://:s3cret@10.0.0.5:6379/0"), "redis://:***@10.0.0.5:6379/0");
/// assert_eq!(redact_url("redis://app:s3cret@db"), "redis://app:***@db");
/// assert_eq!(redact_url("redis://t0ken@db"), "redis://***@db");
/// assert_eq!(
///     redact_url("redis+sentinel://s1:26379/mymaster?sentinel_password=x&db=2"),
///     "redis+sentinel://s1:26379/mymaster?sentinel_password=***&db=2"
/// );
/// assert_eq!(redact_url("memory://?max_size=10"), "memory://?max_size=10");
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len().min(SHOWN));
    let (before_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    match before_query.split_once("://") {
        Some((scheme, rest)) => {
            out.push_str(scheme);
            out.push_str("://");
            // The user part ends at the last `@` before the path.
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let authority = rest.get(..authority_end).unwrap_or(rest);
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = authority.get(..at).unwrap_or_default();
                    if let Some((user, _)) = userinfo.split_once(':') {
                        out.push_str(user);
                        out.push(':');
                    }
                    out.push_str("***");
                    out.push_str(rest.get(at..).unwrap_or_default());
                }
                None => out.push_str(rest),
            }
        }
        None => out.push_str(before_query),
    }
    if let Some(query) = query {
        out.push('?');
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            match pair.split_once('=') {
                Some((name, _)) if is_secret(name) => {
                    out.push_str(name);
                    out.push_str("=***");
                }
                _ => out.push_str(pair),
            }
        }
    }
    if out.chars().count() > SHOWN {
        out = out.chars().take(SHOWN).collect();
        out.push('…');
    }
    out
}

fn is_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    SECRET_PARAMETERS.iter().any(|s| name.contains(s))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn no_credential_survives() {
        for (url, secret) in [
            ("redis://:s3cret-pass@127.0.0.1:6379", "s3cret-pass"),
            (
                "rediss://user:s3cret@h:6380/3?protocol=resp3#insecure",
                "s3cret",
            ),
            ("redis+cluster://u:s3cret@a:1,b:2", "s3cret"),
            (
                "redis+sentinel://u:p4ss@s1:1,s2:2/m?sentinel_password=s3cret",
                "s3cret",
            ),
            (
                "redis+sentinel://u:p4ss@s1:1,s2:2/m?sentinel_password=s3cret",
                "p4ss",
            ),
            ("redis+unix:///tmp/r.sock?db=2&pass=s3cret", "s3cret"),
            ("redis://t0ken-only@h", "t0ken-only"),
            ("redis://a:b@c@h", "b@c"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shown as {shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        assert_eq!(
            redact_url("sqlite:///var/lib/rl.db"),
            "sqlite:///var/lib/rl.db"
        );
        assert_eq!(redact_url("redis://h/0?db=1"), "redis://h/0?db=1");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url(&"x".repeat(1_000)).chars().count(), 201);
    }
}
