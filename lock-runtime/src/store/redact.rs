//! What an error may show of a backend URL: never its userinfo, nor any part of it.
//!
//! The userinfo is everything between `scheme://` and the LAST `@` of the rest.
//! Passwords often hold unencoded `/`, `?` or `#`: cutting the authority at the
//! first `/` would take the end of a password for a host or a path. None of our
//! URLs needs an `@` in its path or query (RFC 3986 would allow one there): such an
//! `@` is written `%40`.
//!
//! A mistyped URL can hold a password where no `@` marks it (`user:passh:1`
//! for `user:pass@h:1`, or `user:pass,h:1`), so [`check_host_port`] rejects a
//! `:` anywhere but before the port, and no reason it gives quotes its input.

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

/// Checks one `host[:port]` of a URL's authority (`[v6]:port` for IPv6), with
/// the port required or optional. The reason never quotes the input: a
/// malformed host may be a password whose `@` was lost.
#[cfg_attr(not(any(feature = "etcd", feature = "ravendb")), allow(dead_code))]
pub(crate) fn check_host_port(hostport: &str, port_required: bool) -> Result<(), &'static str> {
    let port = if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("unclosed '[' in an IPv6 address")?;
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        {
            return Err("invalid IPv6 address in [brackets]");
        }
        match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or("only :port may follow an IPv6 address in [brackets]")?,
            ),
        }
    } else {
        let (host, port) = match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        };
        if port.is_some_and(|port| port.contains(':')) {
            return Err("a host must not contain ':' except before the port \
                        (user:password goes before '@', an IPv6 address in [brackets])");
        }
        if host.is_empty() {
            return Err("missing host");
        }
        if host.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, ',' | '[' | ']' | '@' | '/' | '?' | '#')
        }) {
            return Err("invalid character in the host");
        }
        port
    };
    match port {
        None if port_required => Err("missing :port"),
        None => Ok(()),
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err("invalid port (expected 1-65535)"),
        },
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

    #[test]
    fn hosts_and_ports() {
        for good in ["h:1", "127.0.0.1:2379", "[::1]:2379", "localhost:65535"] {
            assert_eq!(check_host_port(good, true), Ok(()), "{good}");
        }
        for good in ["raven.local", "[::1]", "h:8080"] {
            assert_eq!(check_host_port(good, false), Ok(()), "{good}");
        }
        for bad in [
            "h", "[::1]", "h:0", "h:65536", "h:+1", "h:", ":1", "[::1:1", "[u:x]:1", "[::1]x",
            "a b:1", "a,b:1",
        ] {
            assert!(check_host_port(bad, true).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_lost_at_sign_is_caught_without_quoting_the_password() {
        // `etcd://user:SECRET@h:1` with its '@' deleted, or replaced by ',' or '/'.
        for bad in ["user:SECRETh:1", "user:SECRET", "user:SECRET.h"] {
            for port_required in [true, false] {
                match check_host_port(bad, port_required) {
                    Err(reason) => assert!(!reason.contains("SECRET"), "{bad}: {reason}"),
                    Ok(()) => panic!("{bad} accepted"),
                }
            }
        }
    }
}
