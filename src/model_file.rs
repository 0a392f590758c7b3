//! The model file: the safetensors weights of `checkpoint`, whose header
//! metadata carries the model spec (`fer.spec`) and the Python side's JSON
//! metadata (`fer.meta`: history, training settings). Any safetensors reader
//! can open the weights; nothing is pickled.

use std::collections::HashMap;

use safetensors::SafeTensors;

use crate::checkpoint::{spec_from_safetensors, SPEC_KEY};
use crate::network::Network;
use crate::{Error, Result};

const META_KEY: &str = "fer.meta";

pub fn encode(network: &Network, meta_json: &str) -> Result<Vec<u8>> {
    let tensors = network.named_tensors()?;
    let header = HashMap::from([
        (SPEC_KEY.to_string(), network.spec().to_json()),
        (META_KEY.to_string(), meta_json.to_string()),
    ]);
    safetensors::serialize(tensors.iter().map(|(n, t)| (n.as_str(), t)), Some(header))
        .map_err(|e| Error::format(format!("cannot serialise the model: {e}")))
}

/// Reads a model file; returns the network and the stored JSON metadata.
pub fn decode(bytes: &[u8]) -> Result<(Network, String)> {
    let spec = spec_from_safetensors(bytes)?
        .ok_or_else(|| Error::format("not a fer model file: the safetensors header has no fer model spec"))?;
    spec.validate()
        .and_then(|_| spec.check_fer_input())
        .map_err(|e| Error::format(format!("the model file's spec is invalid: {e}")))?;
    let network = Network::from_safetensors(spec, bytes)?;
    // Such a model predicts NaN for every image: say so at load instead.
    for v in network.named_vars() {
        let values = v.var.flatten_all()?.to_vec1::<f32>()?;
        if let Some(pos) = values.iter().position(|x| !x.is_finite()) {
            return Err(Error::format(format!(
                "tensor {:?} holds a non-finite value ({}) at element {pos}: the model was saved after training diverged, or the file is corrupted",
                v.name, values[pos]
            )));
        }
    }
    // The header already parsed above, so this cannot fail on hostile input.
    let meta = SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref().and_then(|h| h.get(META_KEY).cloned()))
        .unwrap_or_else(|| "{}".into());
    Ok((network, meta))
}
