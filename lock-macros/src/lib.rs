//! The `#[distributed_lock]` attribute of [distlock](https://docs.rs/distlock).
//! Depend on `distlock`, not on this crate: the expansion goes through
//! `::distlock::__private`.

mod attr;
mod errors;
mod expand;
mod template;

use proc_macro::TokenStream;

/// Runs the body of an `async fn` while holding a cluster-wide lock.
///
/// ```
/// use distlock::{distributed_lock, LockClient, LockError};
/// # struct Db;
/// # struct Receipt { token: u64 }
/// # #[derive(Debug)] struct AppError;
/// # impl From<LockError> for AppError { fn from(_: LockError) -> Self { AppError } }
/// # impl Db { async fn pay(&self, _id: u64, token: u64) -> Result<Receipt, AppError> { Ok(Receipt { token }) } }
///
/// #[distributed_lock(key = "orders/<id>", ttl = "30s", wait = "5s")]
/// async fn pay(id: u64, db: &Db) -> Result<Receipt, AppError> {
///     // No other process runs a body locked on `orders/{id}` now.
///     // Fence writes with the token:
///     let token = distlock::current().map_or(0, |lock| lock.token());
///     db.pay(id, token).await
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// distlock::install(LockClient::memory())?;
/// let receipt = pay(42, &Db).await?;
/// assert!(receipt.token > 0);
/// # Ok::<(), AppError>(())
/// # }).unwrap();
/// ```
///
/// The lock is acquired before the body runs and released when it returns,
/// fails, panics or is cancelled (its future dropped). Inside the body
/// `distlock::current()` gives the key and the fencing token. The signature is
/// re-emitted as written, so docs, lints and spans stay yours.
///
/// # Options
///
/// | option | values | default |
/// |---|---|---|
/// | `key` | a template such as `"orders/<id>"`, or any expression giving an `AsRef<str>` | required |
/// | `ttl` | a duration such as `"30s"` (at least `"30ms"`) | the client's (library default `30s`) |
/// | `wait` | `"forever"`, or a duration (`"0s"`, also written `"never"`, tries once) | `if_locked = "wait"`: the client's (library default `forever`); `"skip"`: `"0s"` |
/// | `if_locked` | `"wait"`, `"skip"`, `"error"` | `"wait"` |
/// | `hold_at_least` | a duration | the client's (library default none) |
/// | `on_lost` | `"cancel"`, `"continue"` | the client's (library default `cancel`) |
/// | `renew` | `true`, `false` | the client's (library default `true`) |
/// | `client` | an expression giving a `LockClient`, `&LockClient` or `Arc<LockClient>` | the client installed with `distlock::install` |
/// | `crate` | the path of the `distlock` crate, as a string | `"::distlock"` |
///
/// Options left out come from the client (`LockClient::options`), so a service
/// sets its policy once on the client builder; an HTTP service should give the
/// client (or each handler) a bounded `wait`, since the library default waits
/// forever like `tokio::sync::Mutex::lock`. Durations are parsed at compile
/// time; a bad one is a compile error.
///
/// - `if_locked = "wait"`: wait up to `wait`, then return `LockError::Timeout`.
/// - `if_locked = "skip"`: if another holder keeps the lock for the whole `wait`
///   (by default: it is held right now), do not run the body and return the
///   *skipped value*: `()`, `None`, `Ok(())` or `Ok(None)`. For scheduled jobs,
///   with `hold_at_least` longer than the clock skew between instances.
/// - `if_locked = "error"`: try once; return `LockError::Busy` if held (giving
///   `wait` too is a compile error).
/// - `on_lost = "cancel"`: if the lock is lost while the body runs (a pause or
///   partition longer than the ttl), the body is dropped at its next `.await`
///   and `LockError::Lost` is returned. `"continue"` lets it finish; it can
///   check `distlock::current().unwrap().is_lost()`.
///
/// # Key templates
///
/// `<name>` is replaced by the argument `name`, formatted with `Display`;
/// `<name.field.0>` reads a field; names bound inside argument patterns count
/// (`Path(id): Path<u64>`, `(shop, id): (u32, u64)`), and so does `self`
/// (`<self.tenant>`). Every interpolated value is escaped: each byte outside
/// `A-Z a-z 0-9 - . _ ~` becomes `%XX` (so `%` itself becomes `%25`). A value
/// therefore cannot add a `/` or reach another key: `id = "1/items"` locks
/// `orders/1%2Fitems`, never `orders/1/items`. Two placeholders must be
/// separated by a character that escaped values never contain (such as `/`
/// or `:`), so that one key always comes from one set of values, and the
/// template's own text may not contain `%` (it would look like an escaped
/// value). A key given
/// as an expression (`key = format!(..)`) is used as it is: escape user input
/// in it yourself.
///
/// # Return types
///
/// A fn returning `Result<T, E>` returns lock errors (no client installed,
/// timeout, busy, lost, backend down) as `Err(E::from(LockError))`, so `E`
/// needs `From<distlock::LockError>`. A fn returning `()` or `Option<T>` cannot
/// carry the error: it is logged with `tracing` at error level and the fn
/// returns `()` / `None`. Other return types are a compile error. The check is
/// on the type the body produces, so `-> impl IntoResponse` works when the
/// body returns such a `Result`.
///
/// Works on free fns, methods (`&self`, `self: Arc<Self>`), generic fns, fns in
/// trait impls (native `async fn` in traits, and inside `#[async_trait]`
/// impls, where `#[async_trait]` must be on the impl as usual).
///
/// # Compile errors
///
/// A sync or `const` fn, a missing or empty key, an unknown `<name>`, an
/// empty `<>`, an unclosed `<`, `<a.>`, an unknown or repeated option, a bad
/// duration or choice, and contradictory options are reported with their
/// spans, all in one compile; the fn is still emitted so the rest of the crate
/// type-checks.
#[proc_macro_attribute]
pub fn distributed_lock(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::distributed_lock(args.into(), item.into()).into()
}
