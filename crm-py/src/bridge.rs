//! Rust futures as Python awaitables, on the module's one tokio runtime.
//!
//! [`spawn`] runs a future on the runtime and returns an `asyncio.Future` of the
//! running loop that gets its result. The future runs in a task of its own, so a
//! panic becomes a `crm.CrmError` and never reaches Python as a panic; the GIL is
//! taken only on a blocking thread, to hand the result over; cancelling the
//! awaitable drops the Rust future. Written here rather than taken from
//! pyo3-async-runtimes because of exit: a result handed over while the interpreter
//! shuts down crashed it (about one short script in ten, after `asyncio.run`
//! returned), and only the bridge knows when a hand-over has fully ended. A
//! hand-over counts as under way until it has released the GIL; [`quiesce`],
//! registered with `atexit` by `crm/__init__.py`, stops new hand-overs and waits
//! for those under way (a call still running then is simply never answered).
//!
//! A forked child inherits the runtime without its threads: the runtime belongs to
//! the process that built it, a child builds its own on first use, and a client
//! connected before the fork refuses calls in the child (`client_closed`).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crm_core::Result;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::IntoPyObjectExt;
use tokio::task::{AbortHandle, JoinHandle};

use crate::errors;

/// The module's runtime (worker threads named `crm`), started on first use in each
/// process: after a fork, the child's first call builds its own (the parent's is
/// left alone, its threads did not come along).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: Mutex<Option<(u32, &'static tokio::runtime::Runtime)>> = Mutex::new(None);
    let mut slot = RUNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let pid = std::process::id();
    match *slot {
        Some((owner, rt)) if owner == pid => rt,
        _ => {
            let rt: &'static _ = Box::leak(Box::new(
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .thread_name("crm")
                    .build()
                    .expect("the tokio runtime starts"), // no input reaches this: a broken OS
            ));
            HANDING_OVER.store(0, Ordering::SeqCst);
            *slot = Some((pid, rt));
            rt
        }
    }
}

/// Hand-overs under way (from before the GIL is taken until it is released).
static HANDING_OVER: AtomicUsize = AtomicUsize::new(0);

/// Set by [`quiesce`]: the interpreter is shutting down, hand nothing over.
static CLOSING: AtomicBool = AtomicBool::new(false);

/// One hand-over under way; `None` once the interpreter is shutting down. The
/// count goes up before `CLOSING` is read and `quiesce` sets `CLOSING` before it
/// reads the count (both sequentially consistent), so either the hand-over sees
/// the flag or `quiesce` waits for it.
struct HandOver;

impl HandOver {
    fn start() -> Option<Self> {
        HANDING_OVER.fetch_add(1, Ordering::SeqCst);
        let guard = HandOver;
        (!CLOSING.load(Ordering::SeqCst)).then_some(guard)
    }
}

impl Drop for HandOver {
    fn drop(&mut self) {
        HANDING_OVER.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Aborts the task when dropped: a cancelled call drops its future.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `asyncio.get_running_loop`, looked up once.
fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static GET: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    GET.get_or_try_init(py, || {
        py.import("asyncio")
            .and_then(|m| m.getattr("get_running_loop"))
            .map(Bound::unbind)
    })?
    .bind(py)
    .call0()
}

/// Runs `fut` on the module's runtime and hands Python an awaitable of its result
/// (`RuntimeError` when called with no running event loop).
pub(crate) fn spawn<'py, T>(
    py: Python<'py>,
    fut: impl Future<Output = Result<T>> + Send + 'static,
) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let py_fut = event_loop.call_method0("create_future")?;
    let complete = complete(py)?;
    let (loop_ref, fut_ref) = (event_loop.unbind(), py_fut.clone().unbind());
    let task = runtime().spawn(async move {
        let work = AbortOnDrop(tokio::spawn(fut));
        let outcome = (&mut { work }.0).await;
        // The GIL is taken on a blocking thread, never on a worker.
        let _ = tokio::task::spawn_blocking(move || {
            let Some(_handing_over) = HandOver::start() else {
                return; // the interpreter is shutting down: no one is waiting
            };
            Python::attach(|py| {
                let result = match outcome {
                    Ok(Ok(v)) => v.into_py_any(py),
                    Ok(Err(e)) => Err(errors::to_py(py, &e)),
                    Err(_) => Err(errors::internal(py)),
                };
                let (value, error) = match result {
                    Ok(v) => (v, None),
                    Err(e) => (py.None(), Some(e.into_value(py))),
                };
                // A closed loop has no one left to tell.
                let _ = loop_ref
                    .bind(py)
                    .call_method1("call_soon_threadsafe", (complete, fut_ref, value, error));
            });
        })
        .await;
    });
    py_fut.call_method1("add_done_callback", (OnCancel(task.abort_handle()),))?;
    Ok(py_fut)
}

/// Sets the result or the exception of `fut`, unless it is done (cancelled).
#[pyfunction]
fn set_outcome(
    fut: &Bound<'_, PyAny>,
    value: Bound<'_, PyAny>,
    error: Option<Bound<'_, PyAny>>,
) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    match error {
        Some(e) => fut.call_method1("set_exception", (e,))?,
        None => fut.call_method1("set_result", (value,))?,
    };
    Ok(())
}

fn complete(py: Python<'_>) -> PyResult<Py<PyAny>> {
    static COMPLETE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    COMPLETE
        .get_or_try_init(py, || {
            wrap_pyfunction!(set_outcome, py).map(|f| f.into_any().unbind())
        })
        .map(|f| f.clone_ref(py))
}

/// The done-callback of an awaitable: a cancelled one aborts its task.
#[pyclass(module = "crm._native", frozen)]
struct OnCancel(AbortHandle);

#[pymethods]
impl OnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

/// Stops handing results over and waits (with the GIL released, for at most two
/// seconds) for the hand-overs under way, so that none runs while the interpreter
/// shuts down. Registered with `atexit` by the package; after it, awaitables of
/// calls still running never complete.
#[pyfunction]
pub(crate) fn quiesce(py: Python<'_>) {
    CLOSING.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + Duration::from_secs(2);
        while HANDING_OVER.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}

/// This process's id, for a client to know the process it was connected in.
pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// Calls the Python callable `cb` with `arg` (as Python objects) on a blocking
/// thread, as results are handed over: never on a worker. An exception it raises is
/// reported as unraisable (`sys.unraisablehook`) and the caller's work goes on.
pub(crate) async fn call_back<T: serde::Serialize + Send + 'static>(
    cb: std::sync::Arc<Py<PyAny>>,
    arg: T,
) {
    let _ = tokio::task::spawn_blocking(move || {
        let Some(_handing_over) = HandOver::start() else {
            return;
        };
        Python::attach(|py| {
            let called = pythonize::pythonize(py, &arg)
                .map_err(PyErr::from)
                .and_then(|a| cb.bind(py).call1((a,)));
            if let Err(e) = called {
                e.write_unraisable(py, Some(cb.bind(py)));
            }
        });
    })
    .await;
}
