//! Weights as safetensors: every parameter and BatchNorm running statistic
//! under its stable name (`layers.{i}.weight`, ...), float32 little-endian.
//! Loading checks the file against the spec tensor by tensor, so a
//! truncated, corrupted or foreign file is a `Format` error, never a panic.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use safetensors::{Dtype, SafeTensors};

use crate::network::Network;
use crate::spec::ModelSpec;
use crate::{Error, Result};

/// Header metadata key holding the spec JSON (shared with `model_file`).
pub const SPEC_KEY: &str = "fer.spec";

impl Network {
    /// The weights as a safetensors buffer; the header metadata carries the
    /// spec under [`SPEC_KEY`] so the file describes itself.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        self.to_safetensors_with(&[])
    }

    /// [`Network::to_safetensors`] with more header metadata. The same
    /// weights and metadata always give the same bytes, so files can be
    /// compared and hashed.
    pub fn to_safetensors_with(&self, extra_metadata: &[(&str, &str)]) -> Result<Vec<u8>> {
        let tensors = self.named_tensors()?;
        let mut metadata = HashMap::from([(SPEC_KEY.to_string(), self.spec().to_json())]);
        metadata.extend(extra_metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let bytes = safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
            .map_err(|e| Error::format(format!("cannot serialise the weights: {e}")))?;
        sort_header(bytes)
    }

    /// Builds `spec`'s network and fills it from a [`Network::to_safetensors`] buffer.
    pub fn from_safetensors(spec: ModelSpec, bytes: &[u8]) -> Result<Network> {
        let network = Network::new(spec, 0)?;
        network.load_safetensors(bytes)?;
        Ok(network)
    }

    /// Overwrites this network's variables in place (an optimizer holding
    /// them keeps working). All tensors are checked before any is written.
    pub fn load_safetensors(&self, bytes: &[u8]) -> Result<()> {
        self.load(bytes, false)
    }

    /// [`Network::load_safetensors`] that also refuses NaN and infinite
    /// values: for model files, where such weights mean a diverged or
    /// corrupted model that would predict NaN for every image.
    pub fn load_finite_safetensors(&self, bytes: &[u8]) -> Result<()> {
        self.load(bytes, true)
    }

    fn load(&self, bytes: &[u8], finite_only: bool) -> Result<()> {
        let loaded = read_tensors(bytes)?;
        let vars = self.named_vars();
        let mut staged = Vec::with_capacity(vars.len());
        for v in &vars {
            let (dtype, shape, data) = loaded
                .get(v.name.as_str())
                .ok_or_else(|| Error::format(format!("the weights have no tensor {:?} (is this file for another model?)", v.name)))?;
            if *dtype != Dtype::F32 {
                return Err(Error::format(format!("tensor {:?} is {dtype}, expected F32", v.name)));
            }
            if shape.as_slice() != v.var.dims() {
                return Err(Error::format(format!(
                    "tensor {:?} has shape {shape:?}, the model expects {:?}",
                    v.name,
                    v.var.dims()
                )));
            }
            let values: Vec<f32> = data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let non_finite = if finite_only { values.iter().position(|x| !x.is_finite()) } else { None };
            if let Some(pos) = non_finite {
                return Err(Error::format(format!(
                    "tensor {:?} holds a non-finite value ({}) at element {pos}: the model was saved after training diverged, or the file is corrupted",
                    v.name, values[pos]
                )));
            }
            staged.push(Tensor::from_vec(values, shape.as_slice(), &Device::Cpu)?);
        }
        if let Some(extra) = loaded.keys().find(|k| !vars.iter().any(|v| v.name == **k)) {
            return Err(Error::format(format!("the weights have an unexpected tensor {extra:?} (is this file for another model?)")));
        }
        for (v, t) in vars.iter().zip(staged) {
            v.var.set(&t)?;
        }
        Ok(())
    }
}

/// The spec stored in a weights file's header, if any.
pub fn spec_from_safetensors(bytes: &[u8]) -> Result<Option<ModelSpec>> {
    let (_, metadata) = guarded(|| SafeTensors::read_metadata(bytes))?;
    match metadata.metadata().as_ref().and_then(|m| m.get(SPEC_KEY)) {
        Some(json) => Ok(Some(ModelSpec::from_json(json)?)),
        None => Ok(None),
    }
}

type Loaded<'a> = HashMap<String, (Dtype, Vec<usize>, &'a [u8])>;

fn read_tensors(bytes: &[u8]) -> Result<Loaded<'_>> {
    let st = guarded(|| SafeTensors::deserialize(bytes))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let (dtype, shape, data) = (view.dtype(), view.shape().to_vec(), view.data());
        let expected = shape.iter().try_fold(dtype.bitsize() / 8, |acc, d| acc.checked_mul(*d));
        if expected != Some(data.len()) {
            return Err(Error::format(format!("tensor {name:?} is corrupted: its data does not match its shape {shape:?}")));
        }
        out.insert(name, (dtype, shape, data));
    }
    Ok(out)
}

/// safetensors writes its metadata from a `HashMap`, in an order that
/// changes from one map to the next; this rewrites the header with every
/// object's keys sorted (and the same space padding to 8 bytes).
fn sort_header(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let broken = || Error::format("cannot serialise the weights: unexpected safetensors header");
    let n = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize).ok_or_else(broken)?;
    let header = bytes.get(8..8 + n).ok_or_else(broken)?;
    let mut value: serde_json::Value = serde_json::from_slice(header).map_err(|_| broken())?;
    let outer = value.as_object_mut().ok_or_else(broken)?;
    outer.sort_keys();
    if let Some(meta) = outer.get_mut("__metadata__").and_then(|m| m.as_object_mut()) {
        meta.sort_keys();
    }
    let mut sorted = serde_json::to_vec(&value).map_err(|_| broken())?;
    sorted.resize(sorted.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + sorted.len() + bytes.len() - 8 - n);
    out.extend_from_slice(&(sorted.len() as u64).to_le_bytes());
    out.extend_from_slice(&sorted);
    out.extend_from_slice(&bytes[8 + n..]);
    Ok(out)
}

/// Runs a safetensors parse, turning its errors, and any panic inside the
/// parser on hostile input, into `Format` errors.
fn guarded<T>(parse: impl FnOnce() -> std::result::Result<T, safetensors::SafeTensorError>) -> Result<T> {
    let describe = |e: String| {
        Error::format(format!("not a readable weights file (truncated, corrupted or not safetensors): {e}"))
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(describe(e.to_string())),
        Err(_) => Err(describe("the parser panicked".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::tests::tiny_spec;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn trained_net() -> Network {
        let net = Network::new(tiny_spec(), 5).unwrap();
        // A training-mode pass moves the BatchNorm running stats off their defaults.
        let x = Tensor::rand(0f32, 1f32, (4, 1, 12, 12), &Device::Cpu).unwrap();
        net.forward_t(&x, true, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        net
    }

    fn images(n: usize) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        (0..n * 144).map(|_| rng.random()).collect()
    }

    fn format_err<T>(r: Result<T>) -> String {
        match r {
            Err(Error::Format(m)) => m,
            Err(e) => panic!("expected a Format error, got {e:?}"),
            Ok(_) => panic!("expected a Format error, got Ok"),
        }
    }

    #[test]
    fn same_weights_and_metadata_give_the_same_bytes() {
        let net = trained_net();
        let meta = [("fer.meta", "{}"), ("b", "2"), ("a", "1")];
        let first = net.to_safetensors_with(&meta).unwrap();
        // Each HashMap iterates in its own random order: with four keys, 20
        // encodings all equal to the first by chance would be about 1 in 24^20.
        for _ in 0..20 {
            assert_eq!(net.to_safetensors_with(&meta).unwrap(), first);
        }
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let at = |k: &str| header.find(&format!("\"{k}\":")).unwrap();
        assert!(at("__metadata__") < at("layers.0.weight"), "{header}");
        assert!(at("a") < at("b") && at("b") < at("fer.meta") && at("fer.meta") < at(SPEC_KEY), "{header}");
        let (_, read) = SafeTensors::read_metadata(&first).unwrap();
        let read = read.metadata().clone().unwrap();
        assert_eq!((read["a"].as_str(), read["fer.meta"].as_str(), read.len()), ("1", "{}", 4));
        let back = Network::from_safetensors(tiny_spec(), &first).unwrap();
        assert_eq!(back.to_safetensors().unwrap(), net.to_safetensors().unwrap());
    }

    #[test]
    fn round_trip_predicts_identically() {
        let net = trained_net();
        let bytes = net.to_safetensors().unwrap();
        let back = Network::from_safetensors(tiny_spec(), &bytes).unwrap();
        let x = images(6);
        assert_eq!(net.predict_logits(&x, 6, 4).unwrap(), back.predict_logits(&x, 6, 4).unwrap());
        assert_eq!(spec_from_safetensors(&bytes).unwrap(), Some(tiny_spec()));
        let a = net.named_tensors().unwrap();
        let b = back.named_tensors().unwrap();
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            let (va, vb): (Vec<f32>, Vec<f32>) =
                (ta.flatten_all().unwrap().to_vec1().unwrap(), tb.flatten_all().unwrap().to_vec1().unwrap());
            assert!(va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{na}");
        }
    }

    #[test]
    fn truncated_and_garbage_bytes_are_format_errors() {
        let bytes = trained_net().to_safetensors().unwrap();
        for cut in [0, 3, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            format_err(Network::from_safetensors(tiny_spec(), &bytes[..cut]));
        }
        format_err(Network::from_safetensors(tiny_spec(), b"definitely not a safetensors file"));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for _ in 0..50 {
            let mut corrupt = bytes.clone();
            for _ in 0..4 {
                let i = rng.random_range(0..corrupt.len().min(200));
                corrupt[i] = rng.random();
            }
            // Corruption in the header must fail cleanly; corruption that
            // happens to leave a valid file is allowed to load.
            let _ = Network::from_safetensors(tiny_spec(), &corrupt);
        }
        let mut huge_header = bytes.clone();
        huge_header[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        format_err(Network::from_safetensors(tiny_spec(), &huge_header));
    }

    #[test]
    fn foreign_or_mismatched_files_are_format_errors() {
        let net = trained_net();
        // Another architecture's weights: names or shapes disagree.
        let mut other = tiny_spec();
        if let crate::spec::LayerSpec::Conv2d { filters, .. } = &mut other.layers[0] {
            *filters = 5;
        }
        let m = format_err(Network::from_safetensors(other, &net.to_safetensors().unwrap()));
        assert!(m.contains("shape"), "{m}");
        // Missing tensor.
        let tensors = net.named_tensors().unwrap();
        let partial = safetensors::serialize(tensors.iter().skip(1).map(|(n, t)| (n.as_str(), t)), None).unwrap();
        let m = format_err(Network::from_safetensors(tiny_spec(), &partial));
        assert!(m.contains("layers.0.weight"), "{m}");
        // Extra tensor.
        let extra = Tensor::zeros(3, candle_core::DType::F32, &Device::Cpu).unwrap();
        let with_extra = safetensors::serialize(
            tensors.iter().map(|(n, t)| (n.as_str(), t)).chain([("bogus", &extra)]),
            None,
        )
        .unwrap();
        assert!(format_err(Network::from_safetensors(tiny_spec(), &with_extra)).contains("bogus"));
        // Wrong dtype.
        let as_f64: Vec<(String, Tensor)> =
            tensors.iter().map(|(n, t)| (n.clone(), t.to_dtype(candle_core::DType::F64).unwrap())).collect();
        let f64_bytes = safetensors::serialize(as_f64.iter().map(|(n, t)| (n.as_str(), t)), None).unwrap();
        assert!(format_err(Network::from_safetensors(tiny_spec(), &f64_bytes)).contains("F32"));
    }
}
