//! What an error may show of a backend URL: never its userinfo, nor any part of it.
//!
//! The userinfo is everything between `scheme://` and the LAST `@` of the rest.
//! Passwords often hold unencoded `/`, `?` or `#`: cutting the authority at the
//! first `/` would take the end of a password for a host or a path. None of our
//! URLs needs an `@` in its path or query (RFC 3986 would allow one there): such an
//! `@` is written `%40`.
//!
//! A mistyped URL can hold a password where no `@` marks it (`user:passh:1`
//! for `user:pass@h:1`, or `user:pass,h:1`), so the host check of
//! `net::url` rejects a `:` anywhere but before the port, and no reason it
//! gives quotes its input.
//!
//! Always compiled: [`crate::LockClient::connect`] reads the scheme with
//! [`scheme_of`] whatever backends this build has.

/// The most characters of a scheme an error shows.
const MAX_SCHEME: usize = 32;

/// Splits what follows `scheme://` into the userinfo (before the last `@`), if
/// any, and the rest.
#[cfg_attr(not(any(feature = "etcd", feature = "ravendb")), allow(dead_code))]
pub(crate) fn split_userinfo(after_scheme: &str) -> (Option<&str>, &str) {
    match after_scheme.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, after_scheme),
    }
}

/// The scheme at the start of `url`, when `://` follows it: a letter, then
/// letters, digits, `+`, `-` or `.` (RFC 3986), at most 32 of them. Whatever
/// stands before a missing `://` may be a user name or a password: `None`.
pub(crate) fn scheme_of(url: &str) -> Option<&str> {
    if !url.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let end = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
        .unwrap_or(url.len());
    let scheme = &url[..end];
    (scheme.len() <= MAX_SCHEME && url[end..].starts_with("://")).then_some(scheme)
}

/// `url` as an error may show it: its userinfo replaced by `***`
/// (`http://user:pw@h:1` gives `http://***@h:1`). Without a `scheme://` start,
/// everything before the last `@` counts as userinfo.
#[cfg_attr(not(any(feature = "etcd", feature = "ravendb")), allow(dead_code))]
pub(crate) fn redact_url(url: &str) -> String {
    let start = scheme_of(url).map_or(0, |scheme| scheme.len() + 3);
    match split_userinfo(&url[start..]) {
        (Some(_), rest) => format!("{}***@{rest}", &url[..start]),
        (None, _) => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_ends_at_the_last_at_sign() {
        assert_eq!(
            split_userinfo("u:p/w?x#y@z@h:1/p"),
            (Some("u:p/w?x#y@z"), "h:1/p")
        );
        assert_eq!(split_userinfo("h:1/p"), (None, "h:1/p"));
        assert_eq!(split_userinfo("@h:1"), (Some(""), "h:1"));
    }

    #[test]
    fn schemes_are_shown_only_before_a_separator() {
        assert_eq!(scheme_of("etcd://u:p@h:1"), Some("etcd"));
        assert_eq!(scheme_of("ravendb+https://h/db"), Some("ravendb+https"));
        assert_eq!(scheme_of("etcdA//aaa:A0A00AAA@localhost:22379"), None);
        assert_eq!(scheme_of("user:SECRET@h://x"), None);
        assert_eq!(scheme_of("1etcd://h:1"), None);
        assert_eq!(scheme_of(""), None);
        assert_eq!(scheme_of(&format!("{}://h", "a".repeat(33))), None);
    }

    #[test]
    fn redaction_replaces_the_whole_userinfo() {
        assert_eq!(redact_url("http://u:SECRET@h:1"), "http://***@h:1");
        assert_eq!(redact_url("http://u:SE/C?R#E@T@h:1"), "http://***@h:1");
        assert_eq!(redact_url("u:SECRET@h:1"), "***@h:1");
        assert_eq!(redact_url("etcdA//u:SECRET@h:1"), "***@h:1");
        assert_eq!(redact_url("http://h:1"), "http://h:1");
    }
}
