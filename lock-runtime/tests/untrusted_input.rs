//! Property tests of the parsers that take untrusted text through the public
//! API: lock keys, the key escaping of `#[distributed_lock]`, durations and
//! waits, and backend URLs. Each one: no panic on any input, a typed error for
//! garbage, known-good input accepted, round trips where there is one, and no
//! password in any error.
//!
//! Run: `cargo test -p lock-runtime --features etcd,ravendb --test untrusted_input`
//! (without the features the URL properties check the "feature missing" errors).

use std::time::Duration;

use lock_runtime::__private::escape;
use lock_runtime::{
    LockClient, LockError, MAX_KEY_LEN, Wait, is_unreserved, parse_duration, validate_key,
};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Keys

/// The documented rule: non-empty, at most 1024 bytes, no C0/C1 control or DEL.
fn key_is_valid(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.chars().any(char::is_control)
}

fn check_key(key: &str) -> Result<(), TestCaseError> {
    match validate_key(key) {
        Ok(()) => prop_assert!(key_is_valid(key), "accepted {key:?}"),
        Err(LockError::InvalidKey { key: shown, reason }) => {
            prop_assert!(!key_is_valid(key), "rejected {key:?}: {reason}");
            prop_assert!(!reason.is_empty());
            let expected: String = key.chars().take(64).collect();
            prop_assert_eq!(shown, expected);
        }
        Err(other) => prop_assert!(false, "not InvalidKey for {key:?}: {other:?}"),
    }
    Ok(())
}

fn key_strings() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z/é\\x00-\\x1f\\x7f\\x{80}-\\x{9f}\\x{a0}\\x{ff}\\x{2028}]{0,12}",
        // Around the length limit, with a multi-byte character across it.
        ("[a-z]{1015,1030}", prop::option::of("[é日\u{1F512}]")).prop_map(|(base, tail)| {
            let mut key = base;
            key.extend(tail);
            key
        }),
    ]
}

// ---------------------------------------------------------------------------
// Key escaping (`#[distributed_lock(key = "orders/<id>")]`)

/// Inverse of the escaping: `%XX` (upper-case hex) back to bytes. `None` if the
/// text is not something `escape` could have produced.
fn unescape(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else if is_unreserved(b) {
            out.push(b);
            i += 1;
        } else {
            return None;
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// Durations

fn durations() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..10_000_000).prop_map(Duration::from_millis),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn duration_texts() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[0-9 .a-z-]{0,16}",
        // Huge numbers with every unit.
        ("[0-9]{15,30}", "(ns|us|ms|s|m|h|d|w|M|y|years|)").prop_map(|(n, u)| format!("{n}{u}")),
        Just("18446744073709551615s".to_owned()),
        Just("18446744073709551616s".to_owned()),
        Just("584542046090years 7months 15days 17h 5m 3s 999ms 999us 999ns".to_owned()),
    ]
}

// ---------------------------------------------------------------------------
// Backend URLs

/// A password made so that no 6-character piece of it can appear in an error
/// message by chance (upper-case letters and digits; messages are lower-case
/// words and our own host names).
fn password() -> impl Strategy<Value = String> {
    "[A-Z][A-Z0-9]{7}"
}

/// Whether any 6-character window of `secret` occurs in `text`.
fn leaks(text: &str, secret: &str) -> Option<String> {
    let chars: Vec<char> = secret.chars().collect();
    chars
        .windows(6)
        .map(|w| w.iter().collect::<String>())
        .find(|window| text.contains(window.as_str()))
}

/// Display, Debug and the whole `source()` chain of an error.
fn everything_shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = format!("{error}\n{error:?}");
    let mut cause = error.source();
    while let Some(e) = cause {
        shown.push_str(&format!("\n{e}\n{e:?}"));
        cause = e.source();
    }
    shown
}

fn check_secret(
    url: &str,
    error: &(dyn std::error::Error + 'static),
    secrets: &[&str],
) -> Result<(), TestCaseError> {
    let shown = everything_shown(error);
    for secret in secrets {
        if let Some(piece) = leaks(&shown, secret) {
            prop_assert!(
                false,
                "the password {secret:?} leaks ({piece:?}) for {url:?}:\n{shown}"
            );
        }
    }
    Ok(())
}

fn etcd_hosts() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "h:1",
            "h:2",
            "127.0.0.1:2379",
            "[::1]:2379",
            "localhost:22379",
        ]),
        1..4,
    )
    .prop_map(|hosts| hosts.join(","))
}

/// `?timeout=..&connect_timeout=..` (or nothing): options every network
/// backend's URL takes, always valid.
fn timeout_query() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            "timeout=250ms",
            "timeout=2s",
            "timeout=1m",
            "connect_timeout=3s",
            "connect_timeout=1m%2030s",
            "timeout=18446744073709551615s",
            "connect_timeout=18446744073709551615s",
        ]),
        0..3,
    )
    .prop_map(|options| {
        if options.is_empty() {
            String::new()
        } else {
            format!("?{}", options.join("&"))
        }
    })
}

/// `etcd://user:pass@h:1,h:2/prefix?timeout=...`: always a usable URL.
fn valid_etcd_url() -> impl Strategy<Value = (String, String)> {
    (
        "[a-z]{1,6}",
        password(),
        etcd_hosts(),
        prop::option::of("[a-z]{1,5}(/[a-z]{1,5})?/?"),
        timeout_query(),
    )
        .prop_map(|(user, pass, hosts, prefix, query)| {
            let prefix = prefix.map(|p| format!("/{p}")).unwrap_or_default();
            (format!("etcd://{user}:{pass}@{hosts}{prefix}{query}"), pass)
        })
}

/// `ravendb+http://h:1/db?timeout=..`, sometimes with `user:pass@` (which
/// RavenDB rejects: it authenticates with client certificates).
fn raven_url() -> impl Strategy<Value = (String, Option<String>)> {
    (
        prop::sample::select(vec!["ravendb+http", "ravendb+https"]),
        prop::option::of(("[a-z]{1,6}", password())),
        prop::collection::vec(
            prop::sample::select(vec!["h:1", "127.0.0.1:8080", "[::1]:8080", "raven.local"]),
            1..3,
        ),
        "[A-Za-z0-9_.-]{1,12}",
        timeout_query(),
    )
        .prop_map(|(scheme, userinfo, hosts, db, query)| {
            let (prefix, pass) = match userinfo {
                Some((user, pass)) => (format!("{user}:{pass}@"), Some(pass)),
                None => (String::new(), None),
            };
            let url = format!("{scheme}://{prefix}{}/{db}{query}", hosts.join(","));
            (url, pass)
        })
}

/// RavenDB URLs with TLS file options where they do not fit or cannot be
/// used: over `ravendb+http://`, `cert=` without `key=` (or the reverse), an
/// unknown option, files that do not exist. Never usable.
fn unusable_raven_url() -> impl Strategy<Value = String> {
    (
        prop::sample::select(vec!["ravendb+http", "ravendb+https"]),
        prop::sample::select(vec!["h:1", "127.0.0.1:8080,[::1]:8080", "raven.local"]),
        prop::sample::select(vec![
            "ca=/nonexistent/ca.pem",
            "cert=/nonexistent/c.pem&key=/nonexistent/k.pem",
            "key=%2Fnonexistent%2Fk.pem&ca=/nonexistent/ca.pem&cert=/nonexistent/c.pem",
            "cert=/nonexistent/c.pem",
            "key=/nonexistent/k.pem&timeout=1s",
            "domain=raven.local",
            "ca=/nonexistent/ca.pem&timeout=0s",
        ]),
    )
        .prop_map(|(scheme, hosts, options)| format!("{scheme}://{hosts}/db?{options}"))
}

#[derive(Clone, Debug)]
enum Mutation {
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn url_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => prop::sample::select(vec![
            '/', '?', '#', '@', ':', ',', '%', '&', '=', ' ', '[', ']', '+', '.', '\0', '\n',
        ]),
        1 => any::<char>(),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    prop::collection::vec(
        prop_oneof![
            any::<usize>().prop_map(Mutation::Delete),
            (any::<usize>(), url_char()).prop_map(|(i, c)| Mutation::Insert(i, c)),
            (any::<usize>(), url_char()).prop_map(|(i, c)| Mutation::Replace(i, c)),
            any::<usize>().prop_map(Mutation::Truncate),
            (any::<usize>(), 1usize..8).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        ],
        1..4,
    )
}

fn mutate(url: &str, mutations: &[Mutation]) -> String {
    let mut chars: Vec<char> = url.chars().collect();
    for mutation in mutations {
        let len = chars.len().max(1);
        match *mutation {
            Mutation::Delete(i) if !chars.is_empty() => {
                chars.remove(i % len);
            }
            Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
            Mutation::Replace(i, c) if !chars.is_empty() => chars[i % len] = c,
            Mutation::Truncate(i) => chars.truncate(i % len),
            Mutation::Duplicate(i, n) if !chars.is_empty() => {
                let start = i % len;
                let piece: Vec<char> = chars[start..(start + n).min(chars.len())].to_vec();
                chars.splice(start..start, piece);
            }
            _ => {}
        }
    }
    chars.into_iter().collect()
}

/// `LockClient::connect` never panics and fails only with `Config`.
fn check_connect(url: &str, secrets: &[&str]) -> Result<Option<LockClient>, TestCaseError> {
    match LockClient::connect(url) {
        Ok(client) => {
            let shown = format!("{client:?}");
            for secret in secrets {
                prop_assert!(leaks(&shown, secret).is_none(), "{url:?}: {shown}");
            }
            Ok(Some(client))
        }
        Err(error @ LockError::Config { .. }) => {
            check_secret(url, &error, secrets)?;
            Ok(None)
        }
        Err(other) => {
            prop_assert!(false, "{url:?}: not a Config error: {other:?}");
            Ok(None)
        }
    }
}

/// The special characters a user may leave unencoded in a password.
const PASSWORD_SPECIALS: &[char] = &['/', '?', '#', '@', ':', ',', '%', '&', '=', ' ', '[', ']'];

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn keys_are_valid_exactly_when_documented(key in key_strings()) {
        check_key(&key)?;
    }

    #[test]
    fn keys_from_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..48)) {
        if let Ok(key) = std::str::from_utf8(&bytes) {
            check_key(key)?;
        }
        check_key(&String::from_utf8_lossy(&bytes))?;
    }

    /// The escaping is reversible (so injective), uses only unreserved
    /// characters and `%XX`, and its output is a valid key for non-empty input.
    #[test]
    fn escaping_is_reversible_and_gives_valid_keys(
        value in prop_oneof![any::<String>(), "[%/2F5a-z~.\\x00\\x{85}é ]{0,12}"]
    ) {
        let escaped = escape(value.as_str());
        prop_assert_eq!(unescape(&escaped), Some(value.clone()), "escaped {:?}", escaped);
        if value.bytes().all(is_unreserved) {
            prop_assert_eq!(&escaped, &value);
        }
        if !value.is_empty() {
            let key = format!("orders/{escaped}");
            prop_assert_eq!(validate_key(&escaped).is_ok(), escaped.len() <= MAX_KEY_LEN);
            prop_assert_eq!(validate_key(&key).is_ok(), key.len() <= MAX_KEY_LEN);
        }
    }

    #[test]
    fn escaping_is_injective(a in "[%/2F5]{0,6}", b in "[%/2F5]{0,6}") {
        prop_assert_eq!(a == b, escape(a.as_str()) == escape(b.as_str()), "{:?} {:?}", a, b);
    }

    /// Any text: `Ok` or a typed error that quotes the input; never a panic.
    #[test]
    fn durations_parse_without_panic(text in duration_texts()) {
        match parse_duration(&text) {
            Ok(duration) => {
                // Whatever parses is a duration that formats and parses back.
                let again = parse_duration(&humantime::format_duration(duration).to_string());
                prop_assert_eq!(again, Ok(duration));
            }
            Err(error) => {
                let shown = error.to_string();
                prop_assert!(shown.contains(&format!("{text:?}")), "{shown}");
            }
        }
        match text.parse::<Wait>() {
            Ok(wait) => {
                let expected = match text.trim() {
                    "forever" => Ok(Wait::Forever),
                    "never" => Ok(Wait::Never),
                    other => parse_duration(other).map(Wait::from),
                };
                prop_assert_eq!(Ok(wait), expected);
            }
            Err(error) => prop_assert!(error.to_string().contains("forever"), "{error}"),
        }
    }

    /// `Display` of a duration or a wait parses back to the same value.
    #[test]
    fn durations_and_waits_round_trip(duration in durations()) {
        let text = humantime::format_duration(duration).to_string();
        prop_assert_eq!(parse_duration(&text), Ok(duration), "{}", text);
        let wait = Wait::from(duration);
        prop_assert_eq!(wait.to_string().parse::<Wait>(), Ok(wait));
        // `Wait::For(ZERO)` prints as "0s", which is `Never`: the same limit.
        let direct = Wait::For(duration);
        let parsed = direct.to_string().parse::<Wait>();
        prop_assert_eq!(parsed.map(Wait::limit), Ok(direct.limit()));
    }

    /// Any string as a backend URL: a client or `LockError::Config`.
    #[test]
    fn any_backend_url_is_a_client_or_config_error(
        url in prop_oneof![
            any::<String>(),
            "(memory|etcd|etcds|ravendb\\+http|ravendb\\+https|http|)(://)?[a-z0-9:@/,.?=&%#\\[\\]]{0,24}",
        ]
    ) {
        check_connect(&url, &[])?;
    }

    /// A well-formed etcd URL is accepted and its password is never shown.
    #[test]
    fn valid_etcd_urls_are_accepted((url, pass) in valid_etcd_url()) {
        let client = check_connect(&url, &[pass.as_str()])?;
        #[cfg(feature = "etcd")]
        {
            prop_assert!(client.is_some(), "{url:?} rejected");
            let store = lock_runtime::store::etcd::EtcdStore::from_url(&url);
            prop_assert!(store.is_ok(), "{url:?}: {store:?}");
            if let Ok(store) = store {
                let shown = format!("{store:?}");
                prop_assert!(leaks(&shown, &pass).is_none(), "{shown}");
            }
        }
        #[cfg(not(feature = "etcd"))]
        prop_assert!(client.is_none());
    }

    /// Mutated etcd URLs: no panic, `Config`, no piece of the password.
    #[test]
    fn mutated_etcd_urls_never_show_the_password(
        (url, pass) in valid_etcd_url(),
        mutations in mutations(),
    ) {
        let url = mutate(&url, &mutations);
        check_connect(&url, &[pass.as_str()])?;
        #[cfg(feature = "etcd")]
        if let Err(error) = lock_runtime::store::etcd::EtcdStore::from_url(&url) {
            check_secret(&url, &error, &[pass.as_str()])?;
        }
    }

    /// A password with an unencoded special character in it: a typed error or
    /// a store, and no piece of the password in the error either way.
    #[test]
    fn unencoded_password_characters_never_show_the_password(
        (user, first, second) in ("[a-z]{1,6}", password(), password()),
        special in prop::sample::select(PASSWORD_SPECIALS),
        rest in ("(/[a-z]{1,5})?", timeout_query()),
    ) {
        let url = format!("etcd://{user}:{first}{special}{second}@h:1,h:2{}{}", rest.0, rest.1);
        check_connect(&url, &[first.as_str(), second.as_str()])?;
        #[cfg(feature = "etcd")]
        if let Err(error) = lock_runtime::store::etcd::EtcdStore::from_url(&url) {
            check_secret(&url, &error, &[first.as_str(), second.as_str()])?;
        }
    }
}

proptest! {
    // Each case builds HTTP clients (TLS configuration included): fewer cases.
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// RavenDB URLs, valid and mutated: no panic, `Config`, no password.
    #[test]
    fn raven_urls_are_parsed_safely((url, pass) in raven_url(), mutations in mutations()) {
        let secrets: Vec<&str> = pass.iter().map(String::as_str).collect();
        let client = check_connect(&url, &secrets)?;
        #[cfg(feature = "ravendb")]
        {
            // Without credentials the unmutated URL is always usable.
            prop_assert_eq!(client.is_some(), pass.is_none(), "{:?}", url);
            if let Err(error) = lock_runtime::store::ravendb::RavenDbStore::from_url(&url) {
                check_secret(&url, &error, &secrets)?;
            }
        }
        #[cfg(not(feature = "ravendb"))]
        prop_assert!(client.is_none());
        let mutated = mutate(&url, &mutations);
        check_connect(&mutated, &secrets)?;
        #[cfg(feature = "ravendb")]
        if let Err(error) = lock_runtime::store::ravendb::RavenDbStore::from_url(&mutated) {
            check_secret(&mutated, &error, &secrets)?;
        }
    }

    /// RavenDB TLS file options that cannot be used, valid and mutated: no
    /// panic, a `Config` error (never a client), nothing of a host shown.
    #[test]
    fn unusable_raven_options_are_config_errors(url in unusable_raven_url(), mutations in mutations()) {
        prop_assert!(check_connect(&url, &[])?.is_none(), "{:?}", url);
        #[cfg(feature = "ravendb")]
        match lock_runtime::store::ravendb::RavenDbStore::from_url(&url) {
            Err(error) => {
                let shown = format!("{error} {error:?}");
                prop_assert!(!shown.contains("raven.local") && !shown.contains("127.0.0.1"), "{}", shown);
            }
            Ok(store) => prop_assert!(false, "{:?} built {:?}", url, store),
        }
        check_connect(&mutate(&url, &mutations), &[])?;
    }
}

/// Known inputs the properties above are built around.
#[test]
fn huge_duration_texts() {
    assert_eq!(
        parse_duration("18446744073709551615s"),
        Ok(Duration::from_secs(u64::MAX))
    );
    assert_eq!(
        "18446744073709551615s".parse::<Wait>(),
        Ok(Wait::For(Duration::from_secs(u64::MAX)))
    );
    assert!(parse_duration("18446744073709551616s").is_err());
    assert!("99999999999999999999999s".parse::<Wait>().is_err());
    assert_eq!(" forever ".parse::<Wait>(), Ok(Wait::Forever));
    assert_eq!("0s".parse::<Wait>(), Ok(Wait::Never));
}

#[test]
fn leak_check_detects_a_leak() {
    // The check itself must be able to fail.
    assert!(leaks("invalid port \"QW12ER34\"", "QW12ER34").is_some());
    assert!(leaks("invalid port \"QW12E\"", "QW12ER34").is_none());
    assert!(unescape("%2f").is_none());
    assert_eq!(unescape("a%2Fb").as_deref(), Some("a/b"));
}
