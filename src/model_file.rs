//! The model file: the safetensors weights of `checkpoint`, whose header
//! metadata carries the model spec (`fer.spec`) and the Python side's JSON
//! metadata (`fer.meta`: history, training settings). Any safetensors reader
//! can open the weights; nothing is pickled.

use safetensors::SafeTensors;

use crate::checkpoint::spec_from_safetensors;
use crate::network::Network;
use crate::{Error, Result};

const META_KEY: &str = "fer.meta";

pub fn encode(network: &Network, meta_json: &str) -> Result<Vec<u8>> {
    network.to_safetensors_with(&[(META_KEY, meta_json)])
}

/// Reads a model file; returns the network and the stored JSON metadata.
pub fn decode(bytes: &[u8]) -> Result<(Network, String)> {
    let spec = spec_from_safetensors(bytes)?
        .ok_or_else(|| Error::format("not a fer model file: the safetensors header has no fer model spec"))?;
    spec.validate()
        .and_then(|_| spec.check_fer_input())
        .map_err(|e| Error::format(format!("the model file's spec is invalid: {e}")))?;
    let network = Network::new(spec, 0)?;
    network.load_finite_safetensors(bytes)?;
    // The header already parsed above, so this cannot fail on hostile input.
    let meta = SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref().and_then(|h| h.get(META_KEY).cloned()))
        .unwrap_or_else(|| "{}".into());
    Ok((network, meta))
}
