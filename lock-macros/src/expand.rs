//! The expansion: check the function, resolve the key template against its
//! arguments, and wrap the body.
//!
//! ```text
//! #[attrs] vis async fn name(args) -> Ret {          // signature re-emitted as is
//!     let key = Key::...;                              // borrows the arguments
//!     let client = installed() | client(&expr);
//!     const SPEC: Spec = Spec { .. };                  // options parsed at compile time
//!     run(client, key, &SPEC, async { let ret: Ret = { body }; ret }, failed).await
//! }
//! ```
//!
//! The body stays an `async` block in the fn (captures inferred, so it can
//! borrow or move the arguments as it did before), and the `let ret: Ret`
//! keeps type errors in the body on the user's code (tracing-attributes'
//! "fake return"). Inside an `#[async_trait]` impl the method arrives already
//! rewritten to `Box::pin(async move { .. let __ret: Ret = { body }; __ret })`;
//! the lock then wraps that innermost block, where `self` is `__self`.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Attribute, Block, Expr, FnArg, Ident, Index, Member, Pat, ReturnType, Signature, Stmt,
    Visibility,
};

use lock_vocab::{IfLocked, OnLost, Wait};

use crate::attr::{self, KeyOption, Options};
use crate::errors::Errors;
use crate::template::{self, Part};

/// A fn item: free, method, or trait method (whose body may be missing).
struct Function {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
    body: Option<Block>,
}

impl Parse for Function {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        let body = if input.peek(syn::Token![;]) {
            input.parse::<syn::Token![;]>()?;
            None
        } else {
            Some(input.parse()?)
        };
        Ok(Function {
            attrs,
            vis,
            sig,
            body,
        })
    }
}

/// The entry point, on `proc_macro2` so that it can be unit-tested.
pub(crate) fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = attr::parse(args, &mut errors);
    let function: Function = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(_) => {
            errors.error(
                Span::call_site(),
                "#[distributed_lock] goes on an `async fn` (a free fn, a method, or a fn in a trait impl)",
            );
            return with_item(errors, item);
        }
    };
    let Some(body) = &function.body else {
        errors.error(
            function.sig.span(),
            "#[distributed_lock] needs a fn with a body: put it on the fn in the `impl`, not on the trait's declaration",
        );
        return with_item(errors, item);
    };
    let sig = &function.sig;
    let boxed = async_trait_body(sig, body);
    if let Some(constness) = &sig.constness {
        errors.error(
            constness.span,
            "#[distributed_lock] cannot go on a `const fn`: taking a lock is I/O at run time; remove `const`",
        );
    }
    if sig.asyncness.is_none() && boxed.is_none() {
        errors.error(
            sig.fn_token.span,
            format!(
                "#[distributed_lock] needs an `async fn`: the lock is acquired and released with `.await`; \
                 write `async fn {}`",
                sig.ident
            ),
        );
    }
    let krate = options
        .krate
        .as_ref()
        .map_or_else(|| quote!(::distlock), ToTokens::to_token_stream);
    let key = match &options.key {
        Some(key) => key_tokens(key, sig, body, boxed, &krate, &mut errors),
        None => {
            errors.error(
                Span::call_site(),
                "#[distributed_lock] needs a `key`: name the lock, such as `key = \"orders/<id>\"` \
                 (`<id>` is replaced by the argument `id`)",
            );
            TokenStream::new()
        }
    };
    if !errors.is_empty() {
        return with_item(errors, item);
    }
    let prelude = prelude(&options, &krate, key, boxed.is_some());
    let Function {
        attrs, vis, sig, ..
    } = &function;
    let mut block = body.clone();
    let contract = match options.if_locked() {
        IfLocked::Skip => quote!(#krate::__private::skipped_or_failed),
        IfLocked::Wait | IfLocked::Error => quote!(#krate::__private::failed),
    };
    match boxed {
        Some(index) => {
            // `let __ret: Ret = { body };` inside async_trait's `Box::pin(async move { .. })`.
            let Some(init) = lookup(&mut block, index) else {
                // Unreachable while `async_trait_body` and `lookup` agree; never
                // emit the fn without its lock.
                let mut errors = Errors::default();
                errors.error(
                    sig.fn_token.span,
                    "#[distributed_lock] did not recognise this #[async_trait] method body; \
                     please report it with the #[async_trait] version",
                );
                return with_item(errors, item);
            };
            let inner = &*init;
            let (key, client, spec) = (
                mixed("__distlock_key"),
                mixed("__distlock_client"),
                mixed("__DISTLOCK_SPEC"),
            );
            let wrapped: Expr = syn::parse_quote! {{
                #prelude
                #krate::__private::run(#client, #key, &#spec, async #inner, #contract).await
            }};
            *init = wrapped;
            quote!(#(#attrs)* #vis #sig #block)
        }
        None => {
            let ret_span = match &sig.output {
                ReturnType::Default => sig.paren_token.span.close(),
                ReturnType::Type(_, ty) => ty.span(),
            };
            let ret = mixed("__distlock_ret");
            let inner = match &sig.output {
                ReturnType::Type(_, ty) if contains_impl_trait(ty) => quote!(#block),
                ReturnType::Type(_, ty) => quote! {
                    #[allow(clippy::diverging_sub_expression)]
                    let #ret: #ty = #block;
                    #[allow(unreachable_code)]
                    #ret
                },
                ReturnType::Default => quote! {
                    #[allow(clippy::diverging_sub_expression, clippy::let_unit_value)]
                    let #ret: () = #block;
                    #[allow(unreachable_code)]
                    #ret
                },
            };
            // Spanned at the return type (hygiene still mixed-site): an unmet
            // return contract is reported there, once.
            let at_ret = |name| Ident::new(name, Span::mixed_site().located_at(ret_span));
            let key = at_ret("__distlock_key");
            let client = at_ret("__distlock_client");
            let spec = at_ret("__DISTLOCK_SPEC");
            // Every token at the return type, `::distlock` included: a path's
            // span starts at its first token.
            let contract = respan(contract, ret_span);
            let call = quote_spanned! {ret_span=>
                #krate::__private::run(#client, #key, &#spec, async { #inner }, #contract).await
            };
            quote! {
                #(#attrs)* #vis #sig {
                    #prelude
                    #call
                }
            }
        }
    }
}

/// An identifier the user's code cannot see or shadow.
fn mixed(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

/// The errors, then the item exactly as written (so IDEs and the rest of the
/// crate keep working while the attribute is wrong).
///
/// `unused_variables` is allowed on it: arguments used only in the key would
/// otherwise add warnings that suggest renaming them, which is wrong advice.
fn with_item(errors: Errors, item: TokenStream) -> TokenStream {
    let mut out = errors.into_compile_errors();
    out.extend(quote!(#[allow(unused_variables)]));
    out.extend(item);
    out
}

/// Key, client and spec, as statements.
fn prelude(options: &Options, krate: &TokenStream, key: TokenStream, boxed: bool) -> TokenStream {
    let client = match &options.client {
        Some(expr) => {
            let span = expr.span();
            let mut expr = expr.to_token_stream();
            if boxed {
                // async_trait moved `self` into `__self` before the body.
                expr = rename_self(expr);
            }
            quote_spanned!(span=> #krate::__private::client(&(#expr)))
        }
        None => quote!(#krate::__private::installed()),
    };
    let duration = |d: std::time::Duration| {
        let (secs, nanos) = (d.as_secs(), d.subsec_nanos());
        quote!(#krate::__private::Duration::new(#secs, #nanos))
    };
    let option = |value: Option<TokenStream>| match value {
        Some(value) => quote!(::core::option::Option::Some(#value)),
        None => quote!(::core::option::Option::None),
    };
    let ttl = option(options.ttl.map(|(ttl, _)| duration(ttl)));
    let hold = option(options.hold_at_least.map(|(hold, _)| duration(hold)));
    let wait = option(options.wait.as_ref().map(|(wait, _)| match *wait {
        Wait::Never => quote!(#krate::__private::Wait::Never),
        Wait::Forever => quote!(#krate::__private::Wait::Forever),
        Wait::For(d) => {
            let d = duration(d);
            quote!(#krate::__private::Wait::For(#d))
        }
    }));
    let renew = option(options.renew.map(|(renew, _)| quote!(#renew)));
    let on_lost = option(options.on_lost.map(|(on_lost, _)| match on_lost {
        OnLost::Cancel => quote!(#krate::__private::OnLost::Cancel),
        OnLost::Continue => quote!(#krate::__private::OnLost::Continue),
    }));
    let mode = match options.if_locked() {
        IfLocked::Wait => quote!(#krate::__private::IfLocked::Wait),
        IfLocked::Skip => quote!(#krate::__private::IfLocked::Skip),
        IfLocked::Error => quote!(#krate::__private::IfLocked::Error),
    };
    let key_name = mixed("__distlock_key");
    let client_name = mixed("__distlock_client");
    let spec = mixed("__DISTLOCK_SPEC");
    quote! {
        let #key_name = #key;
        let #client_name = #client;
        const #spec: #krate::__private::Spec = #krate::__private::Spec {
            ttl: #ttl,
            wait: #wait,
            renew: #renew,
            hold_at_least: #hold,
            on_lost: #on_lost,
            mode: #mode,
        };
    }
}

fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            if let TokenTree::Group(group) = &token {
                let mut inner = Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                token = TokenTree::Group(inner);
            } else {
                token.set_span(span);
            }
            token
        })
        .collect()
}

fn rename_self(tokens: TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Ident(ident) if ident == "self" => {
                TokenTree::Ident(Ident::new("__self", ident.span()))
            }
            TokenTree::Group(group) => {
                let mut renamed = Group::new(group.delimiter(), rename_self(group.stream()));
                renamed.set_span(group.span());
                TokenTree::Group(renamed)
            }
            other => other,
        })
        .collect()
}

/// The expression building the key.
fn key_tokens(
    key: &KeyOption,
    sig: &Signature,
    body: &Block,
    boxed: Option<usize>,
    krate: &TokenStream,
    errors: &mut Errors,
) -> TokenStream {
    let lit = match key {
        KeyOption::Expr(expr) => {
            return quote_spanned!(expr.span()=> #krate::__private::Key::from_expr(&(#expr)));
        }
        KeyOption::Template(lit) => lit,
    };
    let span = lit.span();
    let (parts, problems) = template::parse(&lit.value());
    let malformed = !problems.is_empty();
    for problem in problems {
        errors.error(span, problem);
    }
    let names = match boxed {
        Some(index) => async_trait_bindings(sig, body, index),
        None => bindings(sig),
    };
    let has_self = sig.receiver().is_some();
    let self_name = if boxed.is_some() { "__self" } else { "self" };
    let mut unknown = false;
    let buf = mixed("__distlock_key_buf");
    let mut pushes = Vec::new();
    let mut capacity = 0usize;
    for part in &parts {
        match part {
            Part::Text(text) => {
                capacity += text.len();
                pushes.push(quote!(#buf.push_str(#text);));
            }
            Part::Value { root, fields } => {
                capacity += 16;
                let known = if root == "self" {
                    has_self
                } else {
                    names.iter().any(|name| name.unraw_eq(root))
                };
                if !known {
                    unknown = true;
                    let shown = std::iter::once(root.as_str())
                        .chain(fields.iter().map(String::as_str))
                        .collect::<Vec<_>>()
                        .join(".");
                    let message = if root == "self" {
                        format!(
                            "`<{shown}>` uses `self`, but `{}` takes no `self`; name one of its arguments instead",
                            sig.ident
                        )
                    } else {
                        let close = names
                            .iter()
                            .map(ToString::to_string)
                            .filter(|name| crate::attr::edit_distance(name, root) <= 2)
                            .min_by_key(|name| crate::attr::edit_distance(name, root));
                        let hint = close
                            .map(|name| format!("; did you mean `<{name}>`?"))
                            .unwrap_or_default();
                        format!(
                            "`<{shown}>` in the lock key does not name an argument of `{}`{hint}",
                            sig.ident
                        )
                    };
                    errors.error(span, message);
                    continue;
                }
                let root = if root == "self" {
                    Ident::new(self_name, span).into_token_stream()
                } else if let Some(raw) = root.strip_prefix("r#") {
                    Ident::new_raw(raw, span).into_token_stream()
                } else {
                    Ident::new(root, span).into_token_stream()
                };
                let members = fields.iter().map(|field| match field.parse::<u32>() {
                    Ok(index) => Member::Unnamed(Index { index, span }),
                    Err(_) => match field.strip_prefix("r#") {
                        Some(raw) => Member::Named(Ident::new_raw(raw, span)),
                        None => Member::Named(Ident::new(field, span)),
                    },
                });
                pushes.push(quote_spanned!(span=> #buf.push_value(&#root #(.#members)*);));
            }
        }
    }
    if unknown {
        let available = names
            .iter()
            .map(|name| format!("`{name}`"))
            .chain(has_self.then(|| "`self`".to_owned()))
            .collect::<Vec<_>>();
        let note = if available.is_empty() {
            format!(
                "`{}` has no arguments: a key without arguments is fixed text, such as `key = \"reports/daily\"`",
                sig.ident
            )
        } else {
            format!(
                "the lock key can use these arguments of `{}`: {}",
                sig.ident,
                available.join(", ")
            )
        };
        errors.error(sig.paren_token.span.join(), note);
    }
    if unknown || malformed {
        return TokenStream::new();
    }
    if !parts.iter().any(|part| matches!(part, Part::Value { .. })) {
        let text = lit.value();
        return quote!(#krate::__private::Key::fixed(#text));
    }
    quote! {{
        let mut #buf = #krate::__private::Key::with_capacity(#capacity);
        #(#pushes)*
        #buf
    }}
}

trait UnrawEq {
    fn unraw_eq(&self, name: &str) -> bool;
}

impl UnrawEq for Ident {
    fn unraw_eq(&self, name: &str) -> bool {
        let name = name.strip_prefix("r#").unwrap_or(name);
        syn::ext::IdentExt::unraw(self) == name
    }
}

/// Every name the arguments bind, including inside patterns (`Path(id)`,
/// `(a, b)`, `Order { id, .. }`).
fn bindings(sig: &Signature) -> Vec<Ident> {
    let mut names = Vec::new();
    for input in &sig.inputs {
        if let FnArg::Typed(typed) = input {
            pattern_bindings(&typed.pat, &mut names);
        }
    }
    names
}

fn pattern_bindings(pat: &Pat, names: &mut Vec<Ident>) {
    match pat {
        Pat::Ident(ident) => {
            // async_trait renames pattern arguments `__arg0`, ...; they are not
            // names the user wrote, but they are still valid bindings.
            names.push(ident.ident.clone());
            if let Some((_, sub)) = &ident.subpat {
                pattern_bindings(sub, names);
            }
        }
        Pat::Tuple(tuple) => tuple
            .elems
            .iter()
            .for_each(|elem| pattern_bindings(elem, names)),
        Pat::TupleStruct(tuple) => tuple
            .elems
            .iter()
            .for_each(|elem| pattern_bindings(elem, names)),
        Pat::Struct(strukt) => strukt
            .fields
            .iter()
            .for_each(|field| pattern_bindings(&field.pat, names)),
        Pat::Slice(slice) => slice
            .elems
            .iter()
            .for_each(|elem| pattern_bindings(elem, names)),
        Pat::Reference(reference) => pattern_bindings(&reference.pat, names),
        Pat::Type(typed) => pattern_bindings(&typed.pat, names),
        Pat::Paren(paren) => pattern_bindings(&paren.pat, names),
        // Every case of an or-pattern binds the same names.
        Pat::Or(or) => {
            if let Some(first) = or.cases.first() {
                pattern_bindings(first, names);
            }
        }
        _ => {}
    }
}

/// Inside an `#[async_trait]` body, arguments written as patterns were renamed
/// `__argN` in the signature and are bound again by `let` statements before
/// the user's block; those statements bind the names the user wrote.
fn async_trait_bindings(sig: &Signature, body: &Block, index: usize) -> Vec<Ident> {
    let mut names: Vec<Ident> = bindings(sig)
        .into_iter()
        .filter(|name| !is_positional(name))
        .collect();
    if let Some(inner) = boxed_async_block(body) {
        for stmt in inner.stmts.iter().take(index) {
            if let Stmt::Local(local) = stmt {
                let mut bound = Vec::new();
                pattern_bindings(&local.pat, &mut bound);
                for name in bound {
                    if name != "__self" && !is_positional(&name) && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
    }
    names
}

fn is_positional(name: &Ident) -> bool {
    name.to_string()
        .strip_prefix("__arg")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn contains_impl_trait(ty: &syn::Type) -> bool {
    struct Finder(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finder {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finder = Finder(false);
    syn::visit::Visit::visit_type(&mut finder, ty);
    finder.0
}

/// Where, inside an `#[async_trait]`-rewritten body, the user's block sits:
/// `Box::pin(async move { ..; let __ret: Ret = { body }; __ret })` (or
/// `let _: () = { body };`). Returns the statement's index in the async block.
fn async_trait_body(sig: &Signature, body: &Block) -> Option<usize> {
    if sig.asyncness.is_some() {
        return None;
    }
    let inner = boxed_async_block(body)?;
    inner.stmts.iter().rposition(|stmt| match stmt {
        Stmt::Local(local) => {
            let named = match &local.pat {
                Pat::Type(typed) => match &*typed.pat {
                    Pat::Ident(ident) => ident.ident == "__ret",
                    Pat::Wild(_) => true,
                    _ => false,
                },
                _ => false,
            };
            named
                && local
                    .init
                    .as_ref()
                    .is_some_and(|init| matches!(&*init.expr, Expr::Block(_)))
        }
        _ => false,
    })
}

fn boxed_async_block(body: &Block) -> Option<&Block> {
    let [Stmt::Expr(Expr::Call(call), None)] = body.stmts.as_slice() else {
        return None;
    };
    let Expr::Path(path) = &*call.func else {
        return None;
    };
    let segments: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|segment| segment.ident.to_string())
        .collect();
    if !segments.ends_with(&["Box".to_owned(), "pin".to_owned()]) || call.args.len() != 1 {
        return None;
    }
    match call.args.first() {
        Some(Expr::Async(block)) if block.capture.is_some() => Some(&block.block),
        _ => None,
    }
}

/// The initializer of the `let __ret` statement at `index`.
fn lookup(block: &mut Block, index: usize) -> Option<&mut Expr> {
    let Some(Stmt::Expr(Expr::Call(call), None)) = block.stmts.first_mut() else {
        return None;
    };
    let Some(Expr::Async(inner)) = call.args.first_mut() else {
        return None;
    };
    match inner.block.stmts.get_mut(index) {
        Some(Stmt::Local(local)) => local.init.as_mut().map(|init| &mut *init.expr),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(args: TokenStream, item: TokenStream) -> String {
        distributed_lock(args, item).to_string()
    }

    #[test]
    fn pattern_arguments_are_bindings() {
        let sig: Signature = syn::parse_quote!(async fn f(Path(id): Path<u64>, (a, b): (u8, u8), Order { shop, .. }: Order));
        let names: Vec<String> = bindings(&sig).iter().map(ToString::to_string).collect();
        assert_eq!(names, ["id", "a", "b", "shop"]);
    }

    #[test]
    fn errors_keep_the_original_fn() {
        let out = expand(
            quote!(ttl = "soon"),
            quote!(
                fn f() {}
            ),
        );
        assert!(out.contains("compile_error"));
        assert!(out.contains("needs an `async fn`"));
        assert!(out.contains("invalid duration"));
        assert!(out.contains("needs a `key`"));
        assert!(out.ends_with("fn f () { }"), "{out}");
    }

    #[test]
    fn a_template_borrows_its_argument() {
        let out = expand(
            quote!(key = "orders/<id>"),
            quote!(
                async fn f(id: u64) {}
            ),
        );
        assert!(out.contains("push_value (& id)"), "{out}");
        assert!(out.contains(":: distlock :: __private :: run"), "{out}");
    }
}
