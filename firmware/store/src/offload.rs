//! Store calls never run on async worker threads (ARCHITECTURE,
//! "store calls never run on async workers").
//!
//! The services share a multi-thread runtime of two worker threads: a redb
//! transaction, a file read, an fsync or a statvfs run on a worker stalls
//! every session scheduled there. Async code therefore reaches the store
//! through [`spawn_blocking`] (tokio's blocking pool, the thread marked as
//! offloaded while the closure runs), and threads of its own (the commit
//! thread, the health monitor's loop, the CLI) run outside any runtime.
//!
//! The check ([`check`], called by every entry point that opens a redb
//! transaction, reads or writes a message file or asks statvfs) cannot ask
//! tokio "is this a worker?": a `spawn_blocking` thread has a runtime
//! context too (`Handle::try_current` is `Ok` there) and a task id
//! (`task::try_id` is `Some`), and `on_thread_start` runs for both kinds of
//! thread (the multi-thread runtime even starts its workers on the blocking
//! pool). What tells them apart is the marker: a call inside a runtime
//! context and outside an offloaded section is on an async worker (or on a
//! blocking thread that did not say so, which is refused alike, so that
//! every blocking section goes through [`spawn_blocking`]). In debug builds
//! a violation panics with the name of the call; release builds compile the
//! check to nothing.

use std::cell::Cell;

thread_local! {
    /// How many offloaded sections this thread is inside (a section may
    /// run another inline, e.g. a blocking closure calling a helper that
    /// is itself written for blocking callers).
    static OFFLOADED: Cell<u32> = const { Cell::new(0) };
}

/// Marks the current thread offloaded until dropped.
struct Section;

impl Section {
    fn enter() -> Section {
        OFFLOADED.with(|d| d.set(d.get().saturating_add(1)));
        Section
    }
}

impl Drop for Section {
    fn drop(&mut self) {
        OFFLOADED.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// A blocking job and what it owns. A job the runtime never started (it
/// shuts down) is dropped wherever tokio drops it, possibly on a worker;
/// what its drop does (an unfinished message file removed) is let through
/// as offloaded: the runtime is ending and serves no session.
struct Job<F>(Option<F>);

impl<F> Job<F> {
    fn run<R>(mut self) -> R
    where
        F: FnOnce() -> R,
    {
        let _section = Section::enter();
        let f = self.0.take().expect("a job runs once");
        f()
    }
}

impl<F> Drop for Job<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            let _section = Section::enter();
            drop(f);
        }
    }
}

/// `tokio::task::spawn_blocking` for work that calls the store: runs `f`
/// on the runtime's blocking pool, marked as offloaded. Must be called
/// inside a Tokio runtime, as tokio's own.
pub fn spawn_blocking<F, R>(f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let job = Job(Some(f));
    tokio::task::spawn_blocking(move || job.run())
}

/// [`spawn_blocking`] on a given runtime (from a `Drop`, where only a
/// `Handle` is at hand).
pub fn spawn_blocking_on<F, R>(rt: &tokio::runtime::Handle, f: F) -> tokio::task::JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let job = Job(Some(f));
    rt.spawn_blocking(move || job.run())
}

/// Whether a blocking store call here would break the invariant: inside a
/// runtime context (an async worker, or a blocking thread not started by
/// [`spawn_blocking`]) and outside an offloaded section. Always `false` in
/// release builds.
#[inline]
pub fn on_async_worker() -> bool {
    #[cfg(debug_assertions)]
    {
        OFFLOADED.with(Cell::get) == 0 && tokio::runtime::Handle::try_current().is_ok()
    }
    #[cfg(not(debug_assertions))]
    {
        false
    }
}

/// The debug-build guard of every blocking entry point: panics when
/// [`on_async_worker`]. `what` names the call (a redb read, a blob file, ...);
/// `RUST_BACKTRACE=1` shows who made it.
#[inline]
#[track_caller]
pub(crate) fn check(what: &'static str) {
    // Not while unwinding: a second panic (a `Drop` removing a file) aborts.
    #[cfg(debug_assertions)]
    if on_async_worker() && !std::thread::panicking() {
        panic!(
            "store call on an async worker thread ({what}): run it in \
             mxrack_store::spawn_blocking (ARCHITECTURE: store calls never run on async workers)"
        );
    }
    #[cfg(not(debug_assertions))]
    let _ = what;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// The check fires on an async worker, and the tokio facts it cannot
    /// rely on are what the module says.
    #[test]
    fn fires_on_an_async_worker() {
        let rt = multi_thread();
        let (on_worker, has_context, has_id) = rt.block_on(async {
            tokio::spawn(async {
                (
                    on_async_worker(),
                    tokio::runtime::Handle::try_current().is_ok(),
                    tokio::task::try_id().is_some(),
                )
            })
            .await
            .expect("task")
        });
        assert_eq!(on_worker, cfg!(debug_assertions));
        assert!(has_context && has_id);
        if cfg!(debug_assertions) {
            let panicked = rt.block_on(async {
                tokio::spawn(async { check("test") })
                    .await
                    .expect_err("the check panics on a worker")
            });
            assert!(panicked.is_panic());
        }
    }

    /// It does not fire in `spawn_blocking` (nor in nested sections, nor
    /// after one ended on a thread outside any runtime), nor on a plain
    /// thread; a bare `tokio::task::spawn_blocking`, which has a runtime
    /// context and a task id just like a worker, is refused.
    #[test]
    fn quiet_on_blocking_threads() {
        let rt = multi_thread();
        let (offloaded, nested) = rt.block_on(async {
            spawn_blocking(|| {
                let outer = on_async_worker();
                let _inner = Section::enter();
                (outer, on_async_worker())
            })
            .await
            .expect("blocking")
        });
        assert!(!offloaded && !nested);
        let (bare, bare_context, bare_id) = rt.block_on(async {
            tokio::task::spawn_blocking(|| {
                (
                    on_async_worker(),
                    tokio::runtime::Handle::try_current().is_ok(),
                    tokio::task::try_id().is_some(),
                )
            })
            .await
            .expect("blocking")
        });
        assert_eq!(bare, cfg!(debug_assertions));
        assert!(bare_context && bare_id);
        let handle = rt.handle().clone();
        let on_handle = rt.block_on(async move {
            spawn_blocking_on(&handle, on_async_worker)
                .await
                .expect("blocking")
        });
        assert!(!on_handle);
        let plain = std::thread::spawn(|| {
            check("test");
            on_async_worker()
        })
        .join()
        .expect("plain thread");
        assert!(!plain);
        check("test");
    }

    /// A store call made directly from async code panics (debug builds); the
    /// same call through `spawn_blocking` works.
    #[test]
    fn store_entry_points_are_guarded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::Store::open(dir.path()).expect("open");
        let rt = multi_thread();
        let s = std::sync::Arc::clone(&store);
        let direct = rt.block_on(async move {
            tokio::spawn(async move { s.domain_list().map(|d| d.len()) }).await
        });
        assert_eq!(direct.is_err(), cfg!(debug_assertions));
        let s = std::sync::Arc::clone(&store);
        let direct = rt
            .block_on(async move { tokio::spawn(async move { s.free_space().map(|_| ()) }).await });
        assert_eq!(direct.is_err(), cfg!(debug_assertions));
        let s = std::sync::Arc::clone(&store);
        let offloaded =
            rt.block_on(
                async move { spawn_blocking(move || s.domain_list().map(|d| d.len())).await },
            );
        assert_eq!(offloaded.expect("no panic").expect("listed"), 0);
    }
}
