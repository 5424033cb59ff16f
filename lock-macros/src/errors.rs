//! Accumulated diagnostics: every problem of one attribute is reported in the
//! same compile (serde_derive's `Ctxt`, in miniature).

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};

#[derive(Default)]
pub(crate) struct Errors {
    list: Vec<syn::Error>,
}

impl Errors {
    pub fn push(&mut self, error: syn::Error) {
        self.list.push(error);
    }

    pub fn error(&mut self, span: Span, message: impl Display) {
        self.list.push(syn::Error::new(span, message));
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// One `compile_error!` per problem, each at its own span.
    pub fn into_compile_errors(self) -> TokenStream {
        self.list.iter().map(syn::Error::to_compile_error).collect()
    }
}
