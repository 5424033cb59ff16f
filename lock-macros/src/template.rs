//! Key templates: `"orders/<id>"`, `"tenants/<self.tenant>/jobs/<job.id>"`.
//!
//! The template is split into literal text and placeholders here, without
//! knowing the function; `expand` then resolves each placeholder against the
//! function's arguments (Rocket's two steps). Stable Rust cannot point inside
//! a string literal, so every message names the placeholder it is about.

use lock_vocab::{MAX_KEY_LEN, is_unreserved_char};

/// One piece of a template.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Part {
    /// Text copied into the key as it is.
    Text(String),
    /// `<root.field.field>`: an argument (or `self`) and a field path.
    Value { root: String, fields: Vec<String> },
}

/// Splits `template` into parts, and lists every problem found in it (the
/// well-formed placeholders are still returned, so that they can be checked
/// against the arguments in the same compile).
pub(crate) fn parse(template: &str) -> (Vec<Part>, Vec<String>) {
    let mut parts = Vec::new();
    let mut problems = Vec::new();
    if template.trim().is_empty() {
        return (
            parts,
            vec![
                "the lock key is empty; name the lock, such as `key = \"orders/<id>\"`".to_owned(),
            ],
        );
    }
    if template.chars().any(char::is_control) {
        problems
            .push("the lock key contains a control character; keys are printable text".to_owned());
    }
    if template.contains('%') {
        problems.push(
            "the lock key contains a `%`: escaped values are written `%XX`, so a literal `%` could make \
             two different keys look alike; use another character"
                .to_owned(),
        );
    }
    if template.len() > MAX_KEY_LEN {
        problems.push(format!(
            "the lock key is longer than {MAX_KEY_LEN} bytes (the runtime's limit); shorten it"
        ));
    }
    let mut rest = template;
    let mut text = String::new();
    while let Some(at) = rest.find(['<', '>']) {
        text.push_str(&rest[..at]);
        if rest[at..].starts_with('>') {
            problems.push(format!(
                "unmatched `>` in the lock key {template:?}; placeholders are written `<name>`"
            ));
            rest = &rest[at + 1..];
            continue;
        }
        let inner = &rest[at + 1..];
        // A placeholder ends at the next `>`; a `<` before it means this one
        // was never closed.
        let end = inner
            .find(['<', '>'])
            .filter(|&end| inner[end..].starts_with('>'));
        let Some(end) = end else {
            let shown: String = inner.chars().take_while(|c| *c != '<').collect();
            problems.push(format!(
                "unclosed `<` in the lock key: `<{shown}` needs a closing `>`, such as `<id>`"
            ));
            rest = &inner[inner.find('<').unwrap_or(inner.len())..];
            continue;
        };
        let body = &inner[..end];
        rest = &inner[end + 1..];
        match placeholder(body) {
            Ok(value) => {
                if let Some(Part::Value { root, fields }) = parts.last()
                    // Escaped values are made of unreserved characters (and
                    // `%XX`): a separator needs another one.
                    && text.chars().all(is_unreserved_char)
                {
                    let before = display(root, fields);
                    problems.push(format!(
                        "placeholders `<{before}>` and `<{body}>` need a separator between them that \
                         values cannot contain, such as `/` or `:` (values are escaped to \
                         `A-Za-z0-9-._~` and `%XX`), or two different values could give the same key"
                    ));
                }
                if !text.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut text)));
                }
                parts.push(value);
            }
            Err(problem) => problems.push(problem),
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    (parts, problems)
}

fn display(root: &str, fields: &[String]) -> String {
    std::iter::once(root)
        .chain(fields.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(".")
}

/// Parses the inside of `<...>`.
fn placeholder(body: &str) -> Result<Part, String> {
    if body.trim().is_empty() {
        return Err(
            "empty placeholder `<>` in the lock key; name an argument inside it, such as `<id>`"
                .to_owned(),
        );
    }
    let mut segments = body.split('.');
    let root = segments.next().unwrap_or_default();
    if root.is_empty() {
        return Err(format!(
            "`<{body}>` has nothing before the `.`; write `<name.field>` with an argument name first"
        ));
    }
    if !is_ident(root) {
        return Err(format!(
            "`<{body}>` is not a placeholder: `{root}` is not an argument name; write `<name>` or `<name.field>`"
        ));
    }
    let mut fields = Vec::new();
    for field in segments {
        if field.is_empty() {
            return Err(format!(
                "`<{body}>` has an empty field name after a `.`; write `<name.field>`, or drop the `.`"
            ));
        }
        if !is_ident(field) && !field.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "`<{body}>`: `{field}` is not a field name; fields are identifiers or tuple indexes (`<pair.0>`)"
            ));
        }
        fields.push(field.to_owned());
    }
    Ok(Part::Value {
        root: root.to_owned(),
        fields,
    })
}

fn is_ident(text: &str) -> bool {
    let text = text.strip_prefix("r#").unwrap_or(text);
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first == '_' || first.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && text != "_"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(root: &str, fields: &[&str]) -> Part {
        Part::Value {
            root: root.to_owned(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    fn ok(template: &str) -> Result<Vec<Part>, Vec<String>> {
        match parse(template) {
            (parts, problems) if problems.is_empty() => Ok(parts),
            (_, problems) => Err(problems),
        }
    }

    #[test]
    fn splits_text_and_placeholders() {
        assert_eq!(
            ok("orders/<id>/lines/<self.shop.0>"),
            Ok(vec![
                Part::Text("orders/".into()),
                value("id", &[]),
                Part::Text("/lines/".into()),
                value("self", &["shop", "0"]),
            ])
        );
        assert_eq!(
            ok("daily-report"),
            Ok(vec![Part::Text("daily-report".into())])
        );
    }

    #[test]
    fn reports_every_problem() {
        let (parts, problems) = parse("<>/<a.>/<id>/<b");
        assert_eq!(
            parts
                .iter()
                .filter(|p| matches!(p, Part::Value { .. }))
                .count(),
            1
        );
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("empty placeholder"));
        assert!(problems[1].contains("empty field"));
        assert!(problems[2].contains("unclosed"));
    }

    #[test]
    fn adjacent_placeholders_need_a_reserved_separator() {
        assert!(ok("<a><b>").is_err());
        assert!(ok("<a>-<b>").is_err());
        assert!(ok("<a>:<b>").is_ok());
        assert!(ok("<a>/x-<b>").is_ok());
    }

    #[test]
    fn a_literal_percent_is_rejected() {
        // "a%2F<x>" with x = "y" and "a<x>" with x = "/y" would both be "a%2Fy".
        assert!(ok("a%2F<x>").is_err());
    }

    #[test]
    fn rejects_strays_and_empty() {
        assert!(ok("").is_err());
        assert!(ok("a>b").is_err());
        assert!(ok("<a b>").is_err());
        assert!(ok("<a<b>").is_err());
    }
}

#[cfg(test)]
#[path = "template_proptest.rs"]
mod proptests;
