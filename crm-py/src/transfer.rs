//! CSV import and export for Python: where a file comes from (a path or bytes),
//! progress handed to a Python callable, and the export as a stream of chunks.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use crm_core::leads::{Export, ImportOptions, ImportReport, Progress};
use crm_core::{Result, Workspace};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;

use crate::bridge::{call_back, spawn};

/// A file to import: a path (opened now, so a missing file raises at once) or the
/// bytes themselves.
pub(crate) fn source(
    path: Option<PathBuf>,
    data: Option<PyBackedBytes>,
) -> PyResult<Box<dyn Read + Send>> {
    match (path, data) {
        (Some(path), None) => Ok(Box::new(std::fs::File::open(path)?)),
        (None, Some(data)) => Ok(Box::new(std::io::Cursor::new(data))),
        _ => Err(pyo3::exceptions::PyTypeError::new_err(
            "give the file's path or its bytes",
        )),
    }
}

/// The file to import as a file of its own (a tracked import reads it in the
/// background): the path's file, or the bytes written to a temporary one.
pub(crate) fn file(
    py: Python<'_>,
    path: Option<PathBuf>,
    data: Option<PyBackedBytes>,
) -> PyResult<std::fs::File> {
    match (path, data) {
        (Some(path), None) => Ok(std::fs::File::open(path)?),
        (None, Some(data)) => py.detach(|| {
            let mut file = tempfile::tempfile()?;
            std::io::Write::write_all(&mut file, &data)?;
            Ok(file)
        }),
        _ => Err(pyo3::exceptions::PyTypeError::new_err(
            "give the file's path or its bytes",
        )),
    }
}

/// Imports, handing each progress report to `on_progress` in order; every report
/// is delivered before the import's result.
pub(crate) async fn import(
    w: Workspace,
    source: Box<dyn Read + Send>,
    options: ImportOptions,
    on_progress: Option<Py<PyAny>>,
) -> Result<ImportReport> {
    let Some(cb) = on_progress else {
        return w.leads().import(source, options, |_| {}).await;
    };
    let cb = Arc::new(cb);
    let (send, mut reports) = tokio::sync::mpsc::unbounded_channel::<Progress>();
    let forward = tokio::spawn(async move {
        while let Some(p) = reports.recv().await {
            call_back(cb.clone(), p).await;
        }
    });
    let report = w
        .leads()
        .import(source, options, move |p| {
            let _ = send.send(p.clone());
        })
        .await;
    let _ = forward.await;
    report
}

/// An export in progress: `next_chunk()` answers the next part of the CSV file, or
/// `None` at the end.
#[pyclass(module = "crm._native", frozen)]
pub(crate) struct ExportStream(Arc<tokio::sync::Mutex<Export>>);

impl ExportStream {
    pub(crate) fn new(export: Export) -> Self {
        Self(Arc::new(tokio::sync::Mutex::new(export)))
    }
}

#[pymethods]
impl ExportStream {
    /// An awaitable of the next chunk (`bytes`), or `None` at the end.
    fn next_chunk<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let export = self.0.clone();
        spawn(py, async move { export.lock().await.next_chunk().await })
    }

    /// The leads written so far (all of them once `next_chunk` answered `None`);
    /// 0 while a chunk is being read.
    fn rows(&self) -> u64 {
        self.0.try_lock().map_or(0, |e| e.rows())
    }
}
