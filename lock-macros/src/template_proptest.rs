//! Property tests of the key-template parser ([`super::parse`]): any string is
//! split without a panic, every problem in it is reported (one message per
//! broken placeholder, stray `>` or unclosed `<`, plus one per global problem),
//! the well-formed placeholders are still returned, and a template without
//! problems round trips: printing its parts gives it back.

use proptest::prelude::*;

use lock_vocab::{MAX_KEY_LEN, is_unreserved_char};

use super::{Part, parse};

/// Prints parts back into template syntax.
fn render(parts: &[Part]) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Value { root, fields } => {
                out.push('<');
                out.push_str(root);
                for field in fields {
                    out.push('.');
                    out.push_str(field);
                }
                out.push('>');
            }
        }
    }
    out
}

fn values(parts: &[Part]) -> Vec<(String, Vec<String>)> {
    parts
        .iter()
        .filter_map(|part| match part {
            Part::Value { root, fields } => Some((root.clone(), fields.clone())),
            Part::Text(_) => None,
        })
        .collect()
}

/// Structural invariants that hold for every input: no empty text part, no two
/// text parts in a row, no more placeholders than `<` in the template.
fn check_shape(template: &str, parts: &[Part]) -> Result<(), TestCaseError> {
    for pair in parts.windows(2) {
        prop_assert!(
            !matches!(pair, [Part::Text(_), Part::Text(_)]),
            "two text parts in a row: {parts:?}"
        );
    }
    for part in parts {
        if let Part::Text(text) = part {
            prop_assert!(!text.is_empty(), "empty text part: {parts:?}");
        }
    }
    prop_assert!(values(parts).len() <= template.matches('<').count());
    Ok(())
}

fn ident() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z_][a-z0-9_]{0,8}".prop_filter("`_` alone is not a name", |s| s != "_"),
        1 => "[α-ω][α-ω0-9]{0,4}",
        1 => Just("r#type".to_owned()),
        1 => Just("self".to_owned()),
    ]
}

fn field() -> impl Strategy<Value = String> {
    prop_oneof![3 => ident(), 1 => "[0-9]{1,3}"]
}

/// The inside of a placeholder that is wrong in exactly one way.
fn bad_body() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        " {1,3}",
        ident().prop_map(|i| format!(".{i}")),
        ident().prop_map(|i| format!("{i}.")),
        (ident(), ident()).prop_map(|(a, b)| format!("{a}..{b}")),
        (1u8..10, ident()).prop_map(|(d, i)| format!("{d}{i}")),
        (ident(), ident()).prop_map(|(a, b)| format!("{a} {b}")),
        (ident(), ident(), ident()).prop_map(|(a, b, c)| format!("{a}.{b}-{c}")),
        ident().prop_map(|i| format!("{i}.-")),
        Just("_".to_owned()),
    ]
}

/// Literal text between placeholders: mostly ordinary, sometimes with a `%`,
/// a control character, or non-ASCII text.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        10 => "[a-zA-Z0-9/:._~-]{1,8}",
        1 => "[é日ключ/]{1,3}",
        1 => Just("%".to_owned()),
        1 => "[\\x00-\\x1f\\x7f\\x{85}\\x{9f}]",
        1 => "[a-z]{1000,1100}",
    ]
}

#[derive(Clone, Debug)]
enum Seg {
    Text(String),
    Good { root: String, fields: Vec<String> },
    Bad(String),
    Unclosed(String),
    Stray,
}

impl Seg {
    fn render(&self) -> String {
        match self {
            Seg::Text(text) => text.clone(),
            Seg::Good { root, fields } => render(&[Part::Value {
                root: root.clone(),
                fields: fields.clone(),
            }]),
            Seg::Bad(body) => format!("<{body}>"),
            Seg::Unclosed(name) => format!("<{name}"),
            Seg::Stray => ">".to_owned(),
        }
    }
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        4 => text().prop_map(Seg::Text),
        4 => (ident(), prop::collection::vec(field(), 0..3))
            .prop_map(|(root, fields)| Seg::Good { root, fields }),
        2 => bad_body().prop_map(Seg::Bad),
        1 => ident().prop_map(Seg::Unclosed),
        1 => Just(Seg::Stray),
    ]
}

/// A `>` after an unclosed `<` (with no `<` in between) closes it: that is
/// one placeholder, not two problems, so such sequences are left out.
fn well_separated(segs: &[Seg]) -> bool {
    let mut open = false;
    for seg in segs {
        match seg {
            Seg::Good { .. } | Seg::Bad(_) => open = false,
            Seg::Unclosed(_) => open = true,
            Seg::Stray if open => return false,
            Seg::Stray | Seg::Text(_) => {}
        }
    }
    true
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any string: no panic, a consistent split, and "no problem" means lossless.
    #[test]
    fn any_string_parses_without_panic(
        template in prop_oneof![
            any::<String>(),
            "[<>. a-z0-9%/_:\\x00é]{0,40}",
        ]
    ) {
        let (parts, problems) = parse(&template);
        check_shape(&template, &parts)?;
        prop_assert!(problems.iter().all(|p| !p.is_empty()));
        if problems.is_empty() {
            prop_assert_eq!(render(&parts), template.clone());
            prop_assert!(!template.trim().is_empty());
            prop_assert!(!template.contains('%'));
            prop_assert!(!template.chars().any(char::is_control));
            prop_assert!(template.len() <= MAX_KEY_LEN);
        }
    }

    /// Templates built from known pieces: exactly the expected problems, the
    /// well-formed placeholders in order, and a lossless round trip when clean.
    #[test]
    fn every_problem_is_reported_and_names_round_trip(
        segs in prop::collection::vec(seg(), 0..10).prop_filter("unclosed then stray", |s| well_separated(s))
    ) {
        let template = segs.iter().map(Seg::render).collect::<Vec<_>>().join("/");
        let (parts, problems) = parse(&template);
        check_shape(&template, &parts)?;
        if template.trim().is_empty() {
            prop_assert_eq!(problems.len(), 1, "{:?}", problems);
            prop_assert!(parts.is_empty());
            return Ok(());
        }
        let broken = segs
            .iter()
            .filter(|s| matches!(s, Seg::Bad(_) | Seg::Unclosed(_) | Seg::Stray))
            .count();
        let global = usize::from(template.chars().any(char::is_control))
            + usize::from(template.contains('%'))
            + usize::from(template.len() > MAX_KEY_LEN);
        prop_assert_eq!(
            problems.len(),
            broken + global,
            "template {:?}: {:?}",
            template,
            problems
        );
        let expected: Vec<(String, Vec<String>)> = segs
            .iter()
            .filter_map(|s| match s {
                Seg::Good { root, fields } => Some((root.clone(), fields.clone())),
                _ => None,
            })
            .collect();
        prop_assert_eq!(values(&parts), expected);
        if problems.is_empty() {
            prop_assert_eq!(render(&parts), template);
        }
    }

    /// Two placeholders need a separator that escaped values cannot contain.
    #[test]
    fn adjacent_placeholders_need_a_reserved_character(
        a in ident(),
        b in ident(),
        before in "[a-zA-Z0-9._~-]{0,3}",
        reserved in prop::option::of("[/:@!$&*+,;=|]"),
        after in "[a-zA-Z0-9._~-]{0,3}",
    ) {
        let sep = format!("{before}{}{after}", reserved.clone().unwrap_or_default());
        let template = format!("<{a}>{sep}<{b}>");
        let (parts, problems) = parse(&template);
        prop_assert!(sep.chars().all(is_unreserved_char) == reserved.is_none());
        if reserved.is_some() {
            prop_assert!(problems.is_empty(), "{:?}: {:?}", template, problems);
            prop_assert_eq!(render(&parts), template);
        } else {
            prop_assert_eq!(problems.len(), 1, "{:?}: {:?}", template, problems);
            prop_assert!(problems[0].contains("separator"), "{:?}", problems);
        }
        prop_assert_eq!(values(&parts).len(), 2);
    }
}
