//! Backend URLs: `scheme://[userinfo@]host[:port][,host[:port]...][/path][?query]`.
//!
//! The `url` crate cannot read these URLs whole: it takes a comma-separated
//! host list for one host with a bad port (`etcd://a:1,b:2` fails to parse), and it
//! ends the userinfo at the first `/`, `?` or `#`, while passwords often hold
//! those unencoded. So [`split`] cuts the URL into its parts first (the
//! userinfo up to the LAST `@`, see `redact.rs`), and each host is then checked
//! by the `url` crate's host parser ([`check_host_port`]). Percent-decoding is
//! `percent-encoding`'s; durations in query options use the crate's one duration
//! grammar (`lock_vocab::parse_duration`, see [`positive_duration`]).
//!
//! No reason any function here gives quotes a userinfo or a host: with a lost
//! `@`, a host or the path may hold a password.

use std::borrow::Cow;
use std::time::Duration;

use percent_encoding::percent_decode_str;

use super::redact::{scheme_of, split_userinfo};
use super::secret::Secret;

/// What is wrong with a backend URL. Never quotes the userinfo or a host; the
/// backends put it in their `InvalidUrl { reason }`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UrlProblem(pub(crate) Cow<'static, str>);

impl UrlProblem {
    fn new(reason: impl Into<Cow<'static, str>>) -> Self {
        UrlProblem(reason.into())
    }

    /// The reason, to put in a backend's configuration error.
    pub(crate) fn into_reason(self) -> String {
        self.0.into_owned()
    }
}

/// A backend URL cut into its parts, none of them decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parts<'a> {
    /// The scheme, one of those [`split`] was given.
    pub(crate) scheme: &'a str,
    /// Everything before the last `@` (`None`: no `@`).
    pub(crate) userinfo: Option<&'a str>,
    /// The comma-separated hosts (`host[:port],...`), not checked yet (see [`hosts`]).
    pub(crate) hosts: &'a str,
    /// What follows the first `/` after the hosts (`None`: no `/`).
    pub(crate) path: Option<&'a str>,
    /// What follows the first `?` (`None`: no `?`).
    pub(crate) query: Option<&'a str>,
    /// What follows the first `#` (`None`: no `#`). No backend uses fragments.
    pub(crate) fragment: Option<&'a str>,
}

/// Cuts `url` into its parts. Its scheme must be one of `schemes` (followed by
/// `://`). The userinfo ends at the last `@`; then the fragment starts at the
/// first `#`, the query at the first `?`, and the path at the first `/`.
pub(crate) fn split<'a>(url: &'a str, schemes: &[&str]) -> Result<Parts<'a>, UrlProblem> {
    let expected = || {
        schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let scheme = match scheme_of(url) {
        Some(scheme) if schemes.contains(&scheme) => scheme,
        Some(scheme) => {
            return Err(UrlProblem::new(format!(
                "unknown scheme {scheme:?} (use {})",
                expected()
            )));
        }
        None => {
            return Err(UrlProblem::new(format!(
                "missing scheme (it must start with {})",
                expected()
            )));
        }
    };
    let (userinfo, rest) = split_userinfo(&url[scheme.len() + 3..]);
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (hosts, path) = match rest.split_once('/') {
        Some((hosts, path)) => (hosts, Some(path)),
        None => (rest, None),
    };
    Ok(Parts {
        scheme,
        userinfo,
        hosts,
        path,
        query,
        fragment,
    })
}

/// Checks a comma-separated host list and returns its hosts, as written.
/// `port_required`: each must have a `:port`.
pub(crate) fn hosts(list: &str, port_required: bool) -> Result<Vec<&str>, UrlProblem> {
    let what = if port_required { "host:port" } else { "host" };
    if list.is_empty() {
        return Err(UrlProblem::new(format!("no {what}")));
    }
    let count = list.split(',').count();
    list.split(',')
        .enumerate()
        .map(|(i, host)| {
            check_host_port(host, port_required)
                .map(|()| host)
                .map_err(|reason| UrlProblem::new(format!("{what} {} of {count}: {reason}", i + 1)))
        })
        .collect()
}

/// Checks one `host[:port]` (`[v6]:port` for IPv6), the port required or
/// optional. The host must parse with the `url` crate's host parser (a domain, an
/// IPv4 or an IPv6 address). The reason never quotes the input: a malformed host
/// may be a password whose `@` was lost.
pub(crate) fn check_host_port(hostport: &str, port_required: bool) -> Result<(), &'static str> {
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or("unclosed '[' in an IPv6 address")?;
        if v6.is_empty()
            || !v6
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.'))
        {
            return Err("invalid IPv6 address in [brackets]");
        }
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or("only :port may follow an IPv6 address in [brackets]")?,
            ),
        };
        (&hostport[..v6.len() + 2], port)
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
                || matches!(c, ',' | '[' | ']' | '@' | '/' | '?' | '#' | '%')
        }) {
            return Err("invalid character in the host");
        }
        (host, port)
    };
    if url::Host::parse(host).is_err() {
        return Err(if host.starts_with('[') {
            "invalid IPv6 address in [brackets]"
        } else {
            "not a valid host name or IP address"
        });
    }
    match port {
        None if port_required => Err("missing :port"),
        None => Ok(()),
        Some(port) => match port.parse::<u16>() {
            Ok(p) if p > 0 && port.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
            _ => Err("invalid port (expected 1-65535)"),
        },
    }
}

/// Why one node or endpoint URL (`scheme://host[:port]`) cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndpointProblem {
    /// It holds a `user:password@` (each backend says where credentials go).
    Credentials,
    /// It has a path, a query or a fragment.
    Path,
    /// The host or port is wrong (the reason quotes neither).
    Host(&'static str),
}

/// Splits one endpoint URL, `[scheme://]host[:port][/]`, into its scheme (if
/// given) and its checked `host[:port]`. The scheme is not checked.
pub(crate) fn split_endpoint(
    raw: &str,
    port_required: bool,
) -> Result<(Option<&str>, &str), EndpointProblem> {
    let (scheme, rest) = match raw.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, raw),
    };
    let hostport = rest.strip_suffix('/').unwrap_or(rest);
    if hostport.contains('@') {
        return Err(EndpointProblem::Credentials);
    }
    if hostport.contains(['/', '?', '#']) {
        return Err(EndpointProblem::Path);
    }
    check_host_port(hostport, port_required).map_err(EndpointProblem::Host)?;
    Ok((scheme, hostport))
}

/// Percent-decodes `s` (with `percent-encoding`) into UTF-8. A `%` not
/// followed by two hex digits is an error here (the decoder would keep it as
/// it is). The reason quotes nothing.
pub(crate) fn decode(s: &str) -> Result<String, UrlProblem> {
    let bytes = s.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(UrlProblem::new("a '%' is not followed by two hex digits"));
    }
    percent_decode_str(s)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| UrlProblem::new("not UTF-8 once decoded"))
}

#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // only etcd uses it
/// A user name and password from a URL's userinfo, percent-decoded.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// The user name (not empty).
    pub(crate) user: String,
    /// The password (empty when the userinfo has no `:`).
    pub(crate) password: Secret<String>,
}

#[cfg_attr(not(feature = "etcd"), allow(dead_code))] // only etcd uses it
/// Reads `user[:password]` (split at the first `:`, each percent-decoded).
/// Errors never quote the password.
pub(crate) fn credentials(userinfo: &str) -> Result<Credentials, UrlProblem> {
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let user = decode(user).map_err(|r| UrlProblem::new(format!("user name: {r}")))?;
    let password = decode(password).map_err(|_| UrlProblem::new("bad %-escape in the password"))?;
    if user.is_empty() {
        return Err(UrlProblem::new("empty user name before '@'"));
    }
    Ok(Credentials {
        user,
        password: Secret::new(password),
    })
}

/// The most characters of an option name or value an error shows.
const MAX_SHOWN: usize = 32;

/// `s` cut to a length an error may show.
pub(crate) fn bounded(s: &str) -> String {
    s.chars().take(MAX_SHOWN).collect()
}

/// The `name=value` pairs of a query (`a=1&b=2`), values percent-decoded,
/// in order (empty pairs skipped, a pair without `=` has an empty value).
pub(crate) fn query_pairs(query: Option<&str>) -> Result<Vec<(&str, String)>, UrlProblem> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            decode(value)
                .map(|value| (name, value))
                .map_err(|r| UrlProblem::new(format!("{}: {r}", bounded(name))))
        })
        .collect()
}

/// A duration option (`timeout=250ms`) in the one duration grammar
/// ([`lock_vocab::parse_duration`]: `250ms`, `2s`, `1m`, `1m 30s`), not zero.
pub(crate) fn positive_duration(name: &str, value: &str) -> Result<Duration, UrlProblem> {
    match lock_vocab::parse_duration(value) {
        Ok(duration) if duration.is_zero() => Err(UrlProblem::new(format!(
            "{}: the duration must be greater than zero",
            bounded(name)
        ))),
        Ok(duration) => Ok(duration),
        Err(error) => Err(UrlProblem::new(format!(
            "{}: invalid duration {:?}: {} (write it like \"500ms\", \"2s\", \"1m\")",
            bounded(name),
            bounded(error.input()),
            error.reason()
        ))),
    }
}

/// The options every network backend's URL takes, read from its query by
/// [`options`]. Each backend decides which make sense for its scheme.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Options<'a> {
    /// `ca=/path/ca.pem`: the CA certificate file to trust.
    pub(crate) ca: Option<String>,
    /// `cert=/path/client.pem&key=/path/client.key`: the client certificate
    /// file and its key file (always both).
    pub(crate) client_certificate: Option<(String, String)>,
    /// `timeout=500ms`: the per-request timeout.
    pub(crate) timeout: Option<Duration>,
    /// `connect_timeout=2s`: the connect timeout.
    pub(crate) connect_timeout: Option<Duration>,
    /// The backend's own options (one of the `extra` names given to
    /// [`options`]), in order, values decoded.
    pub(crate) extra: Vec<(&'a str, String)>,
}

/// The options every backend URL may take (see [`Options`]).
const COMMON_OPTIONS: &[&str] = &["ca", "cert", "key", "timeout", "connect_timeout"];

/// Reads a query (`ca=..&cert=..&key=..&timeout=..&connect_timeout=..`) into
/// [`Options`]; `extra` names the backend's own options. A repeated option:
/// the last one counts. `cert=` without `key=` (or the reverse), a bad or zero
/// duration, or a name neither common nor in `extra` is an error (an unknown
/// name is shown cut to a few characters, with the known names).
pub(crate) fn options<'a>(
    query: Option<&'a str>,
    extra: &[&str],
) -> Result<Options<'a>, UrlProblem> {
    let mut options = Options::default();
    let (mut cert, mut key) = (None, None);
    for (name, value) in query_pairs(query)? {
        match name {
            "ca" => options.ca = Some(value),
            "cert" => cert = Some(value),
            "key" => key = Some(value),
            "timeout" => options.timeout = Some(positive_duration(name, &value)?),
            "connect_timeout" => options.connect_timeout = Some(positive_duration(name, &value)?),
            name if extra.contains(&name) => options.extra.push((name, value)),
            other => {
                let known = COMMON_OPTIONS.iter().chain(extra).copied();
                return Err(UrlProblem::new(format!(
                    "unknown option {:?} (known: {})",
                    bounded(other),
                    known.collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    options.client_certificate = match (cert, key) {
        (Some(cert), Some(key)) => Some((cert, key)),
        (Some(_), None) => {
            return Err(UrlProblem::new(
                "cert= needs key= (the client's private key)",
            ));
        }
        (None, Some(_)) => {
            return Err(UrlProblem::new("key= needs cert= (the client certificate)"));
        }
        (None, None) => None,
    };
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ETCD: &[&str] = &["etcd", "etcds"];

    #[test]
    fn the_url_crate_cannot_read_host_lists_or_last_at_userinfo() {
        // Why `split` exists: the url crate reads `a:1,b:2` as host `a` with port `1,b:2`.
        assert!(url::Url::parse("etcd://a:1,b:2/p").is_err());
        // ... and ends the userinfo at the first '/'.
        let parsed =
            url::Url::parse("etcd://u:pa/ss@h:1/p").map(|u| u.host_str().map(str::to_owned));
        assert_ne!(parsed.ok().flatten().as_deref(), Some("h"));
    }

    #[test]
    fn urls_split_into_parts() {
        let parts = split(
            "etcd://u:p/w?x#y@z@h:1,[::1]:2/my/app?timeout=1m&ca=%2Fca.pem",
            ETCD,
        );
        assert_eq!(
            parts,
            Ok(Parts {
                scheme: "etcd",
                userinfo: Some("u:p/w?x#y@z"),
                hosts: "h:1,[::1]:2",
                path: Some("my/app"),
                query: Some("timeout=1m&ca=%2Fca.pem"),
                fragment: None,
            })
        );
        let parts = split("etcds://h:1#frag", ETCD).map(|p| (p.hosts, p.path, p.fragment));
        assert_eq!(parts, Ok(("h:1", None, Some("frag"))));
        for bad in ["http://h:1", "h:1", "etcdA//h:1", "user:SECRET@h://x"] {
            match split(bad, ETCD) {
                Err(problem) => assert!(!problem.0.contains("SECRET"), "{problem}"),
                Ok(parts) => panic!("{bad}: {parts:?}"),
            }
        }
    }

    #[test]
    fn host_lists() {
        assert_eq!(hosts("h:1,[::1]:2", true), Ok(vec!["h:1", "[::1]:2"]));
        assert_eq!(
            hosts("raven.local,h:8080", false),
            Ok(vec!["raven.local", "h:8080"])
        );
        for bad in ["", "h:1,", ",h:1", "h:1,,h:2", "h", "h:1,h"] {
            assert!(hosts(bad, true).is_err(), "{bad:?}");
        }
        assert_eq!(
            hosts("h:1,SECRETh", true).map_err(UrlProblem::into_reason),
            Err("host:port 2 of 2: missing :port".into())
        );
    }

    #[test]
    fn hosts_and_ports() {
        for good in [
            "h:1",
            "127.0.0.1:2379",
            "[::1]:2379",
            "localhost:65535",
            "etcd_1:2379",
        ] {
            assert_eq!(check_host_port(good, true), Ok(()), "{good}");
        }
        for good in ["raven.local", "[::1]", "h:8080", "Raven.Local."] {
            assert_eq!(check_host_port(good, false), Ok(()), "{good}");
        }
        for bad in [
            "h",
            "[::1]",
            "h:0",
            "h:65536",
            "h:+1",
            "h:",
            ":1",
            "[::1:1",
            "[u:x]:1",
            "[::1]x",
            "a b:1",
            "a,b:1",
            "[1:2:3]:1",
            "a<b:1",
            "h%41:1",
            "a|b:1",
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

    #[test]
    fn endpoints() {
        assert_eq!(
            split_endpoint("http://h:1/", true),
            Ok((Some("http"), "h:1"))
        );
        assert_eq!(split_endpoint("h:1", true), Ok((None, "h:1")));
        assert_eq!(
            split_endpoint("https://raven.local", false),
            Ok((Some("https"), "raven.local"))
        );
        assert_eq!(
            split_endpoint("http://u:SECRET@h:1", true),
            Err(EndpointProblem::Credentials)
        );
        for bad in [
            "http://h:1/x",
            "http://h:1?x",
            "http://h:1#x",
            "http://h:1//",
        ] {
            assert_eq!(
                split_endpoint(bad, true),
                Err(EndpointProblem::Path),
                "{bad}"
            );
        }
        assert!(matches!(
            split_endpoint("http://u:SECRETh:1", true),
            Err(EndpointProblem::Host(reason)) if !reason.contains("SECRET")
        ));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("s%40cret%2F%3F"), Ok("s@cret/?".into()));
        assert_eq!(decode("a+b"), Ok("a+b".into()));
        for bad in ["%", "%4", "%zz", "a%g0", "%ff"] {
            match decode(bad) {
                // A fixed reason: it quotes nothing.
                Err(problem) => assert!(
                    [
                        "a '%' is not followed by two hex digits",
                        "not UTF-8 once decoded"
                    ]
                    .contains(&&*problem.0),
                    "{problem}"
                ),
                Ok(decoded) => panic!("{bad:?} decoded to {decoded:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_decoded_and_never_shown() {
        let creds = credentials("app:p%40ss:w").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(creds.user, "app");
        assert_eq!(creds.password.expose(), "p@ss:w");
        assert!(!format!("{creds:?}").contains("p@ss"));
        let creds = credentials("app").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(creds.password.expose(), "");
        for bad in [":hunter2", "u:hunter2%zz", "u:hunter2%ff", "u%zz:hunter2"] {
            match credentials(bad) {
                Err(problem) => assert!(!problem.0.contains("hunter"), "{bad}: {problem}"),
                Ok(_) => panic!("{bad} accepted"),
            }
        }
    }

    #[test]
    fn query_options() {
        assert_eq!(
            query_pairs(Some("timeout=1m&&ca=%2Fx%2By.pem&flag")),
            Ok(vec![
                ("timeout", "1m".into()),
                ("ca", "/x+y.pem".into()),
                ("flag", String::new())
            ])
        );
        assert_eq!(query_pairs(None), Ok(vec![]));
        assert!(query_pairs(Some("ca=%zz")).is_err());
        assert_eq!(
            positive_duration("timeout", "250ms"),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(
            positive_duration("timeout", "1m"),
            Ok(Duration::from_secs(60))
        );
        assert_eq!(
            positive_duration("timeout", " 2s "),
            Ok(Duration::from_secs(2))
        );
        for bad in ["0s", "soon", "", "250"] {
            assert!(positive_duration("timeout", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn common_options() {
        let read = options(
            Some("ca=%2Fca.pem&key=k.pem&timeout=1s&cert=c.pem&domain=x&timeout=250ms"),
            &["domain"],
        );
        assert_eq!(
            read,
            Ok(Options {
                ca: Some("/ca.pem".into()),
                client_certificate: Some(("c.pem".into(), "k.pem".into())),
                timeout: Some(Duration::from_millis(250)),
                connect_timeout: None,
                extra: vec![("domain", "x".into())],
            })
        );
        assert_eq!(options(None, &[]), Ok(Options::default()));
        assert_eq!(
            options(Some("domain=x"), &[]).map_err(UrlProblem::into_reason),
            Err(
                "unknown option \"domain\" (known: ca, cert, key, timeout, connect_timeout)".into()
            )
        );
        for (bad, reason) in [
            ("cert=c.pem", "cert= needs key="),
            ("key=k.pem", "key= needs cert="),
            ("connect_timeout=0s", "greater than zero"),
            ("timeout=750", "invalid duration"),
            ("password=SECRET", "unknown option"),
        ] {
            match options(Some(bad), &["domain"]) {
                Err(problem) => assert!(problem.0.contains(reason), "{bad}: {problem}"),
                Ok(read) => panic!("{bad}: {read:?}"),
            }
        }
    }
}
