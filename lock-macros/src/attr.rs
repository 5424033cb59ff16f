//! The attribute's options: parsed with their spans first, then validated
//! together so that every problem is reported in one compile.

use std::time::Duration;

use lock_vocab::{IfLocked, MIN_TTL, OnLost, Wait, parse_duration};
use proc_macro2::{Span, TokenStream};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

use crate::errors::Errors;

/// Every option, in the order the docs list them.
pub(crate) const OPTIONS: &[&str] = &[
    "key",
    "ttl",
    "wait",
    "if_locked",
    "hold_at_least",
    "on_lost",
    "renew",
    "client",
    "crate",
];

/// `name = value`, before validation.
struct RawOption {
    name: Ident,
    value: Expr,
}

impl Parse for RawOption {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `parse_any` so that `crate = "..."` parses.
        let name = Ident::parse_any(input)?;
        if !input.peek(Token![=]) {
            return Err(syn::Error::new(
                name.span(),
                format!(
                    "expected `{name} = ...`: every option of #[distributed_lock] takes a value"
                ),
            ));
        }
        input.parse::<Token![=]>()?;
        let value = input.parse()?;
        Ok(RawOption { name, value })
    }
}

/// `key = ...`.
pub(crate) enum KeyOption {
    /// A template literal such as `"orders/<id>"`.
    Template(LitStr),
    /// Any expression giving a `&str`-like key, used as it is.
    Expr(Box<Expr>),
}

/// The validated options; each remembers the span of its value.
#[derive(Default)]
pub(crate) struct Options {
    pub key: Option<KeyOption>,
    pub ttl: Option<(Duration, Span)>,
    /// With the literal: its text is quoted in messages.
    pub wait: Option<(Wait, LitStr)>,
    pub if_locked: Option<(IfLocked, Span)>,
    pub hold_at_least: Option<(Duration, Span)>,
    pub on_lost: Option<(OnLost, Span)>,
    pub renew: Option<(bool, Span)>,
    pub client: Option<Expr>,
    pub krate: Option<syn::Path>,
}

impl Options {
    pub fn if_locked(&self) -> IfLocked {
        self.if_locked.map_or(IfLocked::Wait, |(mode, _)| mode)
    }
}

/// Parses and validates `args`. Syntax errors stop early (nothing after them
/// can be trusted); every other problem is added to `errors` and parsing goes on.
pub(crate) fn parse(args: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let raw = match Punctuated::<RawOption, Token![,]>::parse_terminated.parse2(args) {
        Ok(raw) => raw,
        Err(error) => {
            errors.push(error);
            return options;
        }
    };
    let mut seen: Vec<Ident> = Vec::new();
    for RawOption { name, value } in raw {
        let key = name.unraw().to_string();
        if let Some(first) = seen.iter().find(|seen| **seen == key) {
            errors.error(
                name.span(),
                format!("`{key}` is given twice (first at `{first} = ...`); keep one"),
            );
            continue;
        }
        seen.push(name.clone());
        match key.as_str() {
            "key" => options.key = key_option(value, errors),
            "ttl" => {
                options.ttl = duration(&key, &value, errors).and_then(|(ttl, span)| {
                    if ttl < MIN_TTL {
                        errors.error(
                            span,
                            format!(
                                "`ttl` must be at least {MIN_TTL:?}: the lock is renewed every ttl/3 \
                                 and each renewal needs a round trip; use a few seconds in production"
                            ),
                        );
                        None
                    } else {
                        Some((ttl, span))
                    }
                });
            }
            "hold_at_least" => options.hold_at_least = duration(&key, &value, errors),
            "wait" => options.wait = wait(&value, errors),
            "if_locked" => {
                options.if_locked = choice(
                    &key,
                    &value,
                    &IfLocked::ALL.map(|mode| (mode.name(), mode)),
                    errors,
                );
            }
            "on_lost" => {
                options.on_lost = choice(
                    &key,
                    &value,
                    &OnLost::ALL.map(|choice| (choice.name(), choice)),
                    errors,
                );
            }
            "renew" => match &value {
                Expr::Lit(ExprLit {
                    lit: Lit::Bool(flag),
                    ..
                }) => options.renew = Some((flag.value, flag.span())),
                other => errors.error(
                    other.span(),
                    "`renew` takes `true` or `false` (renew the lock in the background while the body runs)",
                ),
            },
            "client" => options.client = Some(value),
            "crate" => match string(&value) {
                Some(lit) => match lit.parse_with(syn::Path::parse_mod_style) {
                    Ok(path) => options.krate = Some(path),
                    Err(_) => errors.error(
                        lit.span(),
                        format!(
                            "`crate` takes the path of the distlock crate, such as \"::distlock\"; {:?} is not a path",
                            lit.value()
                        ),
                    ),
                },
                None => errors.error(
                    value.span(),
                    "`crate` takes the path as a string, such as `crate = \"::my_reexport::distlock\"`",
                ),
            },
            _ => errors.error(name.span(), unknown_option(&key)),
        }
    }
    check_together(&options, errors);
    options
}

/// Options that each parse but cannot be meant together.
fn check_together(options: &Options, errors: &mut Errors) {
    match (options.if_locked, &options.wait) {
        (Some((IfLocked::Error, _)), Some((_, wait))) => errors.error(
            wait.span(),
            "`wait` contradicts `if_locked = \"error\"`, which tries once and returns `Busy` at once; \
             remove `wait`, or use `if_locked = \"wait\"` to wait and then return `Timeout`",
        ),
        (Some((IfLocked::Wait, _)), Some((Wait::Never, wait))) => errors.error(
            wait.span(),
            format!(
                "`wait = {:?}` never waits, which contradicts `if_locked = \"wait\"`; \
                 use `if_locked = \"error\"` to fail at once, or give a wait such as \"5s\"",
                wait.value()
            ),
        ),
        _ => {}
    }
    if let (Some((false, _)), Some((ttl, _)), Some((hold, hold_span))) =
        (options.renew, options.ttl, options.hold_at_least)
        && hold >= ttl
    {
        errors.error(
            hold_span,
            format!(
                "`hold_at_least` ({hold:?}) outlives the `ttl` ({ttl:?}) while `renew = false`: \
                 the lock would expire before the hold ends; remove `renew = false` or raise the ttl"
            ),
        );
    }
}

fn unknown_option(name: &str) -> String {
    let valid = OPTIONS
        .iter()
        .map(|option| format!("`{option}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let close = OPTIONS
        .iter()
        .filter(|option| edit_distance(option, name) <= 2)
        .min_by_key(|option| edit_distance(option, name));
    match close {
        Some(option) => {
            format!("unknown option `{name}`; did you mean `{option}`? The options are {valid}")
        }
        None => format!("unknown option `{name}`; the options are {valid}"),
    }
}

/// Levenshtein distance, for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

fn string(value: &Expr) -> Option<&LitStr> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(lit),
        _ => None,
    }
}

fn key_option(value: Expr, errors: &mut Errors) -> Option<KeyOption> {
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => Some(KeyOption::Template(lit)),
        Expr::Lit(other) => {
            errors.error(
                other.span(),
                "`key` takes a string template such as \"orders/<id>\", or an expression giving a `&str`",
            );
            None
        }
        expr => Some(KeyOption::Expr(Box::new(expr))),
    }
}

fn duration(name: &str, value: &Expr, errors: &mut Errors) -> Option<(Duration, Span)> {
    let Some(lit) = string(value) else {
        errors.error(
            value.span(),
            format!("`{name}` takes a duration string such as \"30s\", \"500ms\" or \"1m 30s\""),
        );
        return None;
    };
    match parse_duration(&lit.value()) {
        Ok(duration) => Some((duration, lit.span())),
        Err(error) => {
            errors.error(
                lit.span(),
                format!(
                    "invalid duration {:?} for `{name}`: {}; write it like \"500ms\", \"30s\" or \"1m 30s\"",
                    error.input(),
                    error.reason()
                ),
            );
            None
        }
    }
}

fn wait(value: &Expr, errors: &mut Errors) -> Option<(Wait, LitStr)> {
    let Some(lit) = string(value) else {
        errors.error(
            value.span(),
            "`wait` takes \"forever\" or a duration string such as \"5s\" (\"0s\" tries once)",
        );
        return None;
    };
    // The runtime's grammar: "forever", "never", or a duration ("0s" = never).
    match lit.value().parse::<Wait>() {
        Ok(wait) => Some((wait, lit.clone())),
        Err(error) => {
            errors.error(
                lit.span(),
                format!(
                    "invalid `wait` {:?}: {}; write \"forever\" or a duration like \"5s\" (\"0s\" tries once)",
                    error.input(),
                    error.reason()
                ),
            );
            None
        }
    }
}

fn choice<T: Copy>(
    name: &str,
    value: &Expr,
    choices: &[(&str, T)],
    errors: &mut Errors,
) -> Option<(T, Span)> {
    let listed = choices
        .iter()
        .map(|(text, _)| format!("\"{text}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(lit) = string(value) else {
        errors.error(value.span(), format!("`{name}` takes one of {listed}"));
        return None;
    };
    let text = lit.value();
    match choices.iter().find(|(choice, _)| *choice == text) {
        Some((_, value)) => Some((*value, lit.span())),
        None => {
            errors.error(
                lit.span(),
                format!("`{name} = {text:?}` is not an option; `{name}` takes one of {listed}"),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("ttl", "tll"), 1);
        assert_eq!(edit_distance("wait", "wiat"), 2);
        assert_eq!(edit_distance("", "key"), 3);
    }
}
