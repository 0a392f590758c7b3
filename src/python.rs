//! The pyo3 bindings: the only module that knows about Python. Every long
//! call goes through [`detach`], which runs plain Rust on owned data with the
//! GIL released, turns panics into exceptions and Ctrl-C into
//! KeyboardInterrupt.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ndarray::{Array2, Array3};
use numpy::{PyArray2, PyArray3, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::create_exception;
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyFloat, PyString};

use crate::error::Error;
use crate::augment::{AugmentConfig, Tta};
use crate::model_file;
use crate::schedule::Schedule;
use crate::network::Network;
use crate::optim::OptimizerConfig;
use crate::spec::{self, ModelSpec};
use crate::threads;
use crate::train::{TrainConfig, Trainer};
use crate::{pixels, EMOTIONS, IMAGE_PIXELS, IMAGE_SIDE, NUM_CLASSES};

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
    // pandas' missing-value markers (pd.NA, pd.NaT) are types of their own.
    if matches!(type_name.as_str(), "NAType" | "NaTType") {
        return format!("is missing ({type_name}), expected a string of 2304 space-separated integers 0-255");
    }
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
    if spans.len() != n {
        return Err(FerValueError::new_err(format!("pixels: the container reports {n} rows but yielded {}", spans.len())));
    }
    let parsed = detach(py, move |_| {
        // SAFETY: see `keep` above; the spans are only read.
        let rows: Vec<&[u8]> = spans.iter().map(|s| unsafe { std::slice::from_raw_parts(s.0, s.1) }).collect();
        threads::install(|| pixels::parse_slices(&rows))
    });
    drop(keep);
    let parsed = parsed?;
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
    // Before any worker thread exists, so none gets its own malloc arena.
    crate::ops::alloc::tune_allocator();
    threads::configure_candle();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("EMOTIONS", EMOTIONS.to_vec())?;
    m.add("FerValueError", py.get_type::<FerValueError>())?;
    m.add("ModelFileError", py.get_type::<ModelFileError>())?;
    m.add("FerInternalError", py.get_type::<FerInternalError>())?;
    m.add_function(wrap_pyfunction!(parse_pixels, m)?)?;
    m.add_function(wrap_pyfunction!(presets, m)?)?;
    m.add_function(wrap_pyfunction!(preset_spec, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_class::<NativeModel>()?;
    Ok(())
}

// ------------------------------------------------------------------ engine

/// Copies a float32 (N, 2304) C-contiguous array into owned memory.
fn owned_images(x: &PyReadonlyArray2<'_, f32>) -> PyResult<(Vec<f32>, usize)> {
    let shape = x.shape();
    if shape[1] != IMAGE_PIXELS {
        return Err(FerValueError::new_err(format!(
            "images must have {IMAGE_PIXELS} pixels each, got shape ({}, {})",
            shape[0], shape[1]
        )));
    }
    let data = x.as_slice().map(|s| s.to_vec()).unwrap_or_else(|_| x.as_array().iter().copied().collect());
    Ok((data, shape[0]))
}

fn owned_labels(y: &PyReadonlyArray1<'_, u8>, n: usize) -> PyResult<Vec<u8>> {
    let labels: Vec<u8> = y.as_array().iter().copied().collect();
    if labels.len() != n {
        return Err(FerValueError::new_err(format!("got {n} images but {} labels", labels.len())));
    }
    if let Some(pos) = labels.iter().position(|&l| l as usize >= NUM_CLASSES) {
        return Err(FerValueError::new_err(format!("label at row {pos} is {}, outside 0-6", labels[pos])));
    }
    Ok(labels)
}

enum State {
    Idle(Network),
    Fitting(Fit),
    /// Only while moving between the two.
    Empty,
}

/// A training run: the trainer and its learning-rate schedule.
struct Fit {
    trainer: Trainer,
    schedule: Schedule,
    base_lr: f64,
    step: u64,
    steps_per_epoch: u64,
}

/// The native half of `fer.Model`: a network, and its trainer while fitting.
#[pyclass(module = "fer._core")]
struct NativeModel {
    state: State,
}

impl NativeModel {
    fn network(&self) -> PyResult<&Network> {
        match &self.state {
            State::Idle(n) => Ok(n),
            State::Fitting(f) => Ok(&f.trainer.network),
            State::Empty => Err(FerInternalError::new_err("model in an inconsistent state")),
        }
    }

    fn fit(&mut self) -> PyResult<&mut Fit> {
        match &mut self.state {
            State::Fitting(f) => Ok(f),
            _ => Err(FerValueError::new_err("not fitting: call begin_fit first")),
        }
    }
}

/// Images are predicted in chunks so Ctrl-C is seen between them.
const PREDICT_CHUNK: usize = 1024;

/// `(start, end)` of each [`PREDICT_CHUNK`] of `n` images.
fn chunks(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n).step_by(PREDICT_CHUNK).map(move |start| (start, (start + PREDICT_CHUNK).min(n)))
}

/// Optimizer steps in `epochs` epochs, or a ValueError when that overflows.
fn epoch_steps(epochs: u64, steps_per_epoch: u64) -> PyResult<u64> {
    epochs
        .checked_mul(steps_per_epoch)
        .ok_or_else(|| FerValueError::new_err(format!("epochs={epochs} is too many ({steps_per_epoch} steps each)")))
}

#[pymethods]
impl NativeModel {
    #[new]
    fn new(py: Python<'_>, spec_json: &str, seed: u64) -> PyResult<Self> {
        // A spec given here is input, not a file: a ValueError, not a ModelFileError.
        let spec = ModelSpec::from_json(spec_json).map_err(|e| FerValueError::new_err(e.to_string()))?;
        spec.check_fer_input().map_err(to_pyerr)?;
        let network = detach(py, move |_| Network::new(spec, seed))?;
        Ok(NativeModel { state: State::Idle(network) })
    }

    /// Returns `(model, metadata_json)`.
    #[staticmethod]
    fn from_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<(Self, String)> {
        let (network, meta) = detach(py, move |_| model_file::decode(&data))?;
        Ok((NativeModel { state: State::Idle(network) }, meta))
    }

    fn to_bytes<'py>(&self, py: Python<'py>, metadata_json: &str) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = model_file::encode(self.network()?, metadata_json).map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn get_weights<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.network()?.to_safetensors().map_err(to_pyerr)?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn set_weights(&self, data: &[u8]) -> PyResult<()> {
        self.network()?.load_safetensors(data).map_err(to_pyerr)
    }

    #[getter]
    fn spec_json(&self) -> PyResult<String> {
        Ok(self.network()?.spec().to_json())
    }

    /// `(name, kind, output_shape, params, trainable_params)` per layer.
    fn summary(&self) -> PyResult<Vec<(String, String, Vec<usize>, usize, usize)>> {
        let rows = self.network()?.spec().summary().map_err(to_pyerr)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.name, r.kind, r.output_shape, r.params, r.trainable_params))
            .collect())
    }

    /// Class probabilities; with `tta` ("flip" or "crops") averaged over views.
    #[pyo3(signature = (x, batch_size, tta=None))]
    fn predict_proba<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        batch_size: usize,
        tta: Option<&str>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (images, n) = owned_images(&x)?;
        let tta = Tta::parse(tta.unwrap_or("none")).map_err(to_pyerr)?;
        let network = self.network()?;
        // Results do not depend on the batch size; a huge one would only
        // ask for memory (a failed allocation aborts the process).
        let batch_size = batch_size.clamp(1, PREDICT_CHUNK);
        let proba = detach(py, |interrupt| {
            let mut out = Vec::with_capacity(n * NUM_CLASSES);
            for (start, end) in chunks(n) {
                interrupt.check()?;
                let chunk = &images[start * IMAGE_PIXELS..end * IMAGE_PIXELS];
                out.extend(threads::install(|| network.predict_proba_tta(chunk, end - start, batch_size, tta))??);
            }
            Ok(out)
        })?;
        let arr = Array2::from_shape_vec((n, NUM_CLASSES), proba).map_err(|e| FerInternalError::new_err(e.to_string()))?;
        Ok(PyArray2::from_owned_array(py, arr))
    }

    #[pyo3(signature = (x, y, *, batch_size, optimizer, learning_rate, weight_decay, momentum, nesterov, label_smoothing, class_weights, seed, augment=None, lr_schedule="constant", epochs=1, warmup_epochs=0.0, initial_epoch=0))]
    #[allow(clippy::too_many_arguments)]
    fn begin_fit(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        y: PyReadonlyArray1<'_, u8>,
        batch_size: usize,
        optimizer: &str,
        learning_rate: f64,
        weight_decay: f64,
        momentum: f64,
        nesterov: bool,
        label_smoothing: f32,
        class_weights: Option<Vec<f32>>,
        seed: u64,
        augment: Option<&str>,
        lr_schedule: &str,
        epochs: u64,
        warmup_epochs: f64,
        initial_epoch: u64,
    ) -> PyResult<()> {
        let (images, n) = owned_images(&x)?;
        let labels = owned_labels(&y, n)?;
        let augment = match augment {
            None => None,
            Some(json) => {
                let config: AugmentConfig = serde_json::from_str(json)
                    .map_err(|e| FerValueError::new_err(format!("invalid augmentation settings: {e}")))?;
                config.validate().map_err(to_pyerr)?;
                Some(config)
            }
        };
        let steps_per_epoch = n.div_ceil(batch_size.max(1)) as u64;
        let warmup_steps = (warmup_epochs.max(0.0) * steps_per_epoch as f64).round() as u64;
        let total_steps = epoch_steps(epochs.max(1), steps_per_epoch)?;
        let first_step = epoch_steps(initial_epoch, steps_per_epoch)?;
        let schedule = Schedule::parse(lr_schedule, total_steps, warmup_steps).map_err(to_pyerr)?;
        let optimizer = match optimizer {
            // Keras' Adam applies a weight_decay decoupled, as AdamW does.
            "adam" if weight_decay > 0.0 => OptimizerConfig::AdamW { lr: learning_rate, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay },
            "adam" => OptimizerConfig::Adam { lr: learning_rate, beta1: 0.9, beta2: 0.999, eps: 1e-7 },
            "adamw" => OptimizerConfig::AdamW { lr: learning_rate, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay },
            "sgd" => OptimizerConfig::Sgd { lr: learning_rate, momentum, nesterov, weight_decay },
            other => return Err(FerValueError::new_err(format!("unknown optimizer {other:?}; choose adam, adamw or sgd"))),
        };
        let config = TrainConfig { batch_size, optimizer, label_smoothing, class_weights, seed };
        // Trainer::new takes the network; if it rejects the config, rebuild
        // the network from a snapshot (taken while the model still holds
        // it) so the model survives the error.
        let (spec, snapshot) = {
            let network = self.network()?;
            (network.spec().clone(), network.to_safetensors().map_err(to_pyerr)?)
        };
        let network = match std::mem::replace(&mut self.state, State::Empty) {
            State::Idle(n) => n,
            State::Fitting(f) => f.trainer.network,
            State::Empty => return Err(FerInternalError::new_err("model in an inconsistent state")),
        };
        match detach(py, move |_| Trainer::new(network, config, images, labels)) {
            Ok(mut trainer) => {
                if let Some(config) = augment {
                    trainer.set_augmentation(Some(Box::new(move |batch, _labels, rng| {
                        config.apply(batch, rng);
                        Ok(())
                    })));
                }
                // A resumed run picks the schedule up where it stopped.
                self.state = State::Fitting(Fit { trainer, schedule, base_lr: learning_rate, step: first_step, steps_per_epoch });
                Ok(())
            }
            Err(e) => {
                self.state = State::Idle(Network::from_safetensors(spec, &snapshot).map_err(to_pyerr)?);
                Err(e)
            }
        }
    }

    /// Lays the learning-rate schedule out over `epochs` epochs in all (the
    /// ones done included), from the next step on.
    fn set_epochs(&mut self, epochs: u64) -> PyResult<()> {
        if epochs == 0 {
            return Err(FerValueError::new_err("epochs must be >= 1"));
        }
        let fit = self.fit()?;
        fit.schedule = fit.schedule.with_total_steps(epoch_steps(epochs, fit.steps_per_epoch)?);
        Ok(())
    }

    /// Shuffles for a new epoch; returns its number of batches.
    fn start_epoch(&mut self) -> PyResult<usize> {
        Ok(self.fit()?.trainer.start_epoch())
    }

    /// Trains on the epoch's next batch: `(loss_sum, correct, count)`.
    fn train_batch(&mut self, py: Python<'_>) -> PyResult<(f64, usize, usize)> {
        let fit = self.fit()?;
        let lr = fit.schedule.at(fit.base_lr, fit.step);
        fit.trainer.set_learning_rate(lr).map_err(to_pyerr)?;
        let trainer = &mut fit.trainer;
        let stats = detach(py, |_| threads::install(|| trainer.train_batch())?)?;
        fit.step += 1;
        Ok((stats.loss_sum, stats.correct, stats.count))
    }

    /// The learning rate of the last step (the schedule applied to the base rate).
    #[getter]
    fn current_learning_rate(&mut self) -> PyResult<f64> {
        Ok(self.fit()?.trainer.learning_rate())
    }

    /// Sets the base learning rate the schedule scales.
    fn set_learning_rate(&mut self, lr: f64) -> PyResult<()> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(FerValueError::new_err(format!("learning rate must be a finite number > 0, got {lr}")));
        }
        if let State::Fitting(f) = &mut self.state {
            f.base_lr = lr;
            // A finished cosine schedule is at 0, which no step will use.
            let now = f.schedule.at(lr, f.step);
            if now > 0.0 {
                f.trainer.set_learning_rate(now).map_err(to_pyerr)?;
            }
        }
        Ok(())
    }

    /// Mean loss and accuracy on labelled images (uses the trainer's loss).
    fn evaluate(
        &mut self,
        py: Python<'_>,
        x: PyReadonlyArray2<'_, f32>,
        y: PyReadonlyArray1<'_, u8>,
        batch_size: usize,
    ) -> PyResult<(f64, f64)> {
        let (images, n) = owned_images(&x)?;
        let labels = owned_labels(&y, n)?;
        let trainer = &self.fit()?.trainer;
        let batch_size = batch_size.clamp(1, PREDICT_CHUNK);
        detach(py, |interrupt| {
            if n == 0 {
                return trainer.evaluate(&images, &labels, batch_size);
            }
            let (mut loss, mut correct) = (0.0, 0.0);
            for (start, end) in chunks(n) {
                interrupt.check()?;
                let chunk = (&images[start * IMAGE_PIXELS..end * IMAGE_PIXELS], &labels[start..end]);
                let (l, a) = threads::install(|| trainer.evaluate(chunk.0, chunk.1, batch_size))??;
                loss += l * (end - start) as f64;
                correct += a * (end - start) as f64;
            }
            Ok((loss / n as f64, correct / n as f64))
        })
    }

    fn end_fit(&mut self) -> PyResult<()> {
        if let State::Fitting(_) = self.state {
            if let State::Fitting(f) = std::mem::replace(&mut self.state, State::Empty) {
                self.state = State::Idle(f.trainer.network);
            }
        }
        // The buffers training steps recycle are not needed between fits.
        crate::ops::gemm::clear_pool();
        Ok(())
    }
}

#[pyfunction]
fn presets() -> Vec<(String, String)> {
    spec::preset_names()
        .iter()
        .map(|n| (n.to_string(), spec::preset_description(n).unwrap_or("").to_string()))
        .collect()
}

/// The JSON spec of a named preset with options given as a JSON object.
#[pyfunction]
fn preset_spec(name: &str, options_json: &str) -> PyResult<String> {
    let options: serde_json::Map<String, serde_json::Value> = serde_json::from_str(options_json)
        .map_err(|e| FerValueError::new_err(format!("model options must be JSON-compatible: {e}")))?;
    Ok(spec::preset(name, &options).map_err(to_pyerr)?.to_json())
}

#[pyfunction]
fn set_num_threads(n: usize) {
    threads::set_num_threads(n)
}

#[pyfunction]
fn get_num_threads() -> PyResult<usize> {
    threads::num_threads().map_err(to_pyerr)
}
