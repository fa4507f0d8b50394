//! The attribute macros of the regio runtime: `#[regio::main]` and `#[regio::test]`.
//!
//! Use them through the crate you depend on: `regio_runtime::main` / `regio_runtime::test`, or
//! `regio::main` / `regio::test` from the `regio` facade. Each turns an `async fn` into a plain
//! function that builds a runtime and runs the body with
//! `Runtime::block_on`:
//!
//! ```ignore
//! #[regio_runtime::main(worker_threads = 2)]
//! async fn main() {
//!     let answer = regio_runtime::spawn(async { 6 * 7 }).await.unwrap();
//!     assert_eq!(answer, 42);
//! }
//!
//! #[regio_runtime::test]
//! async fn nop_completes() {
//!     regio_runtime::nop().await.unwrap();
//! }
//! ```
//!
//! (The example is compiled and run in `regio-runtime`'s documentation; this crate cannot name
//! the runtime it expands to.)
//!
//! Options, comma-separated:
//! - `worker_threads = N`: the number of workers (N > 0). `main` defaults to the runtime's
//!   default (the CPUs the process may use), `test` to 1.
//! - `crate = "path"`: the path of the runtime crate in the expansion, for a crate that renames
//!   its dependency (by default `::regio_runtime`, or `::regio::runtime` through the facade).
//!
//! A `#[test]` function made by `test` needs io_uring. Where the host has it disabled, a test
//! returning `()` prints `SKIP: <reason>` and passes, unless `REGIO_REQUIRE_ALL=1` is set, which
//! turns the skip into a failure (as regio's own tests do); a test returning a value fails.
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::parse::Parser;
use syn::{ItemFn, LitInt, LitStr, Path, ReturnType};

/// Runs an `async fn main` on a new regio runtime; see the crate docs.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Main, Root::Runtime, args, item)
}

/// Runs an `async fn` test on a new regio runtime (one worker unless told otherwise); see the
/// crate docs.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Test, Root::Runtime, args, item)
}

/// [`main`] for the `regio` facade: the expansion names `::regio::runtime`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_main(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Main, Root::Facade, args, item)
}

/// [`test`] for the `regio` facade: the expansion names `::regio::runtime`.
#[doc(hidden)]
#[proc_macro_attribute]
pub fn facade_test(args: TokenStream, item: TokenStream) -> TokenStream {
    expand(Kind::Test, Root::Facade, args, item)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Main,
    Test,
}

/// Where the runtime crate is found by default.
#[derive(Clone, Copy)]
enum Root {
    /// `::regio_runtime`, for crates that depend on it directly.
    Runtime,
    /// `::regio::runtime`, for crates that depend on the facade.
    Facade,
}

/// The options inside the attribute's parentheses.
#[derive(Default)]
struct Options {
    workers: Option<usize>,
    krate: Option<Path>,
}

fn parse_options(args: TokenStream) -> syn::Result<Options> {
    let mut options = Options::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("worker_threads") {
            let lit: LitInt = meta.value()?.parse()?;
            let n: usize = lit.base10_parse()?;
            if n == 0 {
                return Err(syn::Error::new_spanned(
                    lit,
                    "worker_threads must be at least 1",
                ));
            }
            options.workers = Some(n);
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit: LitStr = meta.value()?.parse()?;
            options.krate = Some(lit.parse()?);
            Ok(())
        } else {
            Err(meta.error("unknown option: expected `worker_threads = N` or `crate = \"path\"`"))
        }
    });
    parser.parse(args)?;
    Ok(options)
}

fn expand(kind: Kind, root: Root, args: TokenStream, item: TokenStream) -> TokenStream {
    let options = match parse_options(args) {
        Ok(o) => o,
        Err(e) => return e.to_compile_error().into(),
    };
    let function = match syn::parse::<ItemFn>(item) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error().into(),
    };
    match expand_fn(kind, root, options, function) {
        Ok(tokens) => tokens.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn expand_fn(kind: Kind, root: Root, options: Options, f: ItemFn) -> syn::Result<TokenStream2> {
    let what = match kind {
        Kind::Main => "#[regio::main]",
        Kind::Test => "#[regio::test]",
    };
    if f.sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            f.sig.fn_token,
            format!("{what} needs an `async fn`"),
        ));
    }
    if !f.sig.inputs.is_empty() {
        return Err(syn::Error::new_spanned(
            &f.sig.inputs,
            format!("{what} functions take no arguments"),
        ));
    }
    if !f.sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &f.sig.generics,
            format!("{what} functions cannot be generic"),
        ));
    }
    if kind == Kind::Test {
        if let Some(attr) = f.attrs.iter().find(|a| a.path().is_ident("test")) {
            return Err(syn::Error::new_spanned(
                attr,
                "#[regio::test] adds #[test] itself; remove this one",
            ));
        }
    }
    let krate = options.krate.unwrap_or_else(|| match root {
        Root::Runtime => syn::parse_quote!(::regio_runtime),
        Root::Facade => syn::parse_quote!(::regio::runtime),
    });
    let ItemFn {
        attrs,
        vis,
        mut sig,
        block,
    } = f;
    sig.asyncness = None;
    let body = quote! { let body = async #block; };
    let expanded = match kind {
        Kind::Main => {
            let workers = options
                .workers
                .map(|n| quote! { .worker_threads(#n) })
                .unwrap_or_default();
            quote! {
                #(#attrs)*
                #vis #sig {
                    #body
                    #krate::Builder::new()
                        #workers
                        .build()
                        .unwrap_or_else(|e| ::core::panic!("cannot start the regio runtime: {e}"))
                        .block_on(body)
                }
            }
        }
        Kind::Test => {
            let workers = options.workers.unwrap_or(1);
            // A test returning `()` can be skipped; one returning a value cannot.
            let runtime = match &sig.output {
                ReturnType::Default => quote! {
                    let ::core::option::Option::Some(runtime) =
                        #krate::__private::test_runtime(#workers) else { return; };
                },
                ReturnType::Type(..) => quote! {
                    let runtime = #krate::__private::test_runtime(#workers).expect(
                        "io_uring is disabled on this host, and a test that returns a value \
                         cannot be skipped",
                    );
                },
            };
            quote! {
                #[::core::prelude::v1::test]
                #(#attrs)*
                #vis #sig {
                    #body
                    #runtime
                    runtime.block_on(body)
                }
            }
        }
    };
    Ok(expanded)
}
