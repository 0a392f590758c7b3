//! The pyo3 bindings: the only module that knows about Python. Every long
//! call goes through [`detach`], which runs plain Rust on owned data with the
//! GIL released, turns panics into exceptions and Ctrl-C into
//! KeyboardInterrupt.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::Array3;
use numpy::PyArray3;
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyFloat, PyString};

use crate::error::Error;
use crate::{pixels, EMOTIONS, IMAGE_SIDE};

create_exception!(fer, FerValueError, PyValueError, "Invalid data or arguments given to fer.");
create_exception!(
    fer,
    ModelFileError,
    PyValueError,
    "A model file that is truncated, corrupted or not a fer model."
);
create_exception!(fer, FerInternalError, PyRuntimeError, "A bug in fer's native code; please report it.");

pub(crate) fn to_pyerr(err: Error) -> PyErr {
    match err {
        Error::InvalidInput(m) => FerValueError::new_err(m),
        Error::Format(m) => ModelFileError::new_err(m),
        Error::Io(e) => PyOSError::new_err(e.to_string()),
        Error::Candle(e) => FerInternalError::new_err(format!("tensor error: {e}")),
        Error::Panic(m) => FerInternalError::new_err(format!("internal error (panic): {m}")),
        Error::Interrupted => Python::attach(|py| {
            PyErr::take(py).unwrap_or_else(|| pyo3::exceptions::PyKeyboardInterrupt::new_err(()))
        }),
    }
}

/// Checks for Ctrl-C from inside a detached computation, between batches.
pub(crate) struct Interrupt;

impl Interrupt {
    pub(crate) fn check(&self) -> crate::Result<()> {
        Python::attach(|py| py.check_signals()).map_err(|e| {
            Python::attach(|py| e.restore(py));
            Error::Interrupted
        })
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs `f` without the GIL. `f` owns its inputs (copied out of Python
/// first), so other Python threads can run and mutate their objects meanwhile.
pub(crate) fn detach<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    F: FnOnce(&Interrupt) -> crate::Result<T> + Send,
    T: Send,
{
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| f(&Interrupt))));
    match outcome {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_pyerr(e)),
        Err(payload) => Err(to_pyerr(Error::Panic(panic_message(payload)))),
    }
}

fn describe_non_string(item: &Bound<'_, PyAny>) -> String {
    if item.is_none() {
        return "is missing (None), expected a string of 2304 space-separated integers 0-255".into();
    }
    if let Ok(f) = item.cast::<PyFloat>() {
        if f.value().is_nan() {
            return "is missing (NaN), expected a string of 2304 space-separated integers 0-255".into();
        }
    }
    let type_name = item
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "object".into());
    format!("is a {type_name}, expected a string of 2304 space-separated integers 0-255")
}

/// A borrowed UTF-8 buffer of a Python string kept alive by the caller.
struct RawSpan(*const u8, usize);
// SAFETY: the buffer is immutable and outlives the detached parse.
unsafe impl Send for RawSpan {}

fn row_label(index: Option<&Bound<'_, PyAny>>, pos: usize) -> String {
    index
        .and_then(|idx| idx.get_item(pos).ok())
        // numpy scalars repr as `np.int64(13)`; show the plain Python value.
        .map(|label| label.call_method0("item").unwrap_or(label))
        .and_then(|label| label.repr().ok())
        .map(|r| r.to_string())
        .unwrap_or_else(|| pos.to_string())
}

/// Parses pixel strings into a (N, 48, 48) uint8 array, in parallel.
/// `index` (optional, same length) supplies the row labels used in errors.
#[pyfunction]
#[pyo3(signature = (rows, index=None))]
fn parse_pixels<'py>(
    py: Python<'py>,
    rows: &Bound<'py, PyAny>,
    index: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray3<u8>>> {
    let n = rows.len()?;
    // Python strings are immutable and `keep` holds a reference to each, so
    // their UTF-8 buffers stay valid while the GIL is released: parse them in
    // place rather than copying ~9 kB per row.
    let mut keep: Vec<Bound<'py, PyString>> = Vec::with_capacity(n);
    let mut spans: Vec<RawSpan> = Vec::with_capacity(n);
    for (pos, item) in rows.try_iter()?.enumerate() {
        let item = item?;
        let Ok(s) = item.cast::<PyString>() else {
            return Err(FerValueError::new_err(format!(
                "pixels at row {}: {}",
                row_label(index, pos),
                describe_non_string(&item)
            )));
        };
        let bytes = s.to_str()?.as_bytes();
        spans.push(RawSpan(bytes.as_ptr(), bytes.len()));
        keep.push(s.clone());
    }
    let parsed = py.detach(move || {
        // SAFETY: see `keep` above; the spans are only read.
        let rows: Vec<&[u8]> = spans.iter().map(|s| unsafe { std::slice::from_raw_parts(s.0, s.1) }).collect();
        pixels::parse_slices(&rows)
    });
    drop(keep);
    match parsed {
        Ok(buf) => {
            let arr = Array3::from_shape_vec((n, IMAGE_SIDE, IMAGE_SIDE), buf)
                .map_err(|e| FerInternalError::new_err(e.to_string()))?;
            Ok(PyArray3::from_owned_array(py, arr))
        }
        Err(e) => Err(FerValueError::new_err(format!(
            "pixels at row {}: {}",
            row_label(index, e.row),
            e.message
        ))),
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("EMOTIONS", EMOTIONS.to_vec())?;
    m.add("FerValueError", py.get_type::<FerValueError>())?;
    m.add("ModelFileError", py.get_type::<ModelFileError>())?;
    m.add("FerInternalError", py.get_type::<FerInternalError>())?;
    m.add_function(wrap_pyfunction!(parse_pixels, m)?)?;
    Ok(())
}
