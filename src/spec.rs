//! Declarative model specs: what a network looks like, independent of its
//! weights. A spec round-trips through JSON so a saved model can carry its
//! architecture, and the presets reproduce the study's CNNs exactly.

use serde::{Deserialize, Serialize};

use crate::{Error, Result, IMAGE_SIDE, NUM_CLASSES};

mod presets;

pub use presets::{preset, preset_description, preset_names};

/// Padding of a convolution or pooling window, with Keras semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// Output side `ceil(in / stride)`; an odd total puts the extra row/column
    /// after (bottom/right), as Keras/TensorFlow do.
    Same,
    /// No padding.
    Valid,
    /// The same amount on all four sides.
    Explicit(usize),
}

impl Padding {
    /// Padding before/after along one axis and the resulting output length,
    /// or `None` when the window does not fit.
    pub fn resolve(self, input: usize, kernel: usize, stride: usize) -> Option<(usize, usize, usize)> {
        if kernel == 0 || stride == 0 || input == 0 {
            return None;
        }
        match self {
            Padding::Same => {
                let out = input.div_ceil(stride);
                let total = ((out - 1) * stride + kernel).saturating_sub(input);
                Some((total / 2, total - total / 2, out))
            }
            Padding::Valid => (input >= kernel).then(|| (0, 0, (input - kernel) / stride + 1)),
            Padding::Explicit(p) => {
                let padded = p.checked_mul(2)?.checked_add(input)?;
                (padded >= kernel).then(|| (p, p, (padded - kernel) / stride + 1))
            }
        }
    }

    /// `[top, bottom, left, right]` padding and output `(h, w)` for a square window.
    pub fn resolve_2d(self, h: usize, w: usize, kernel: usize, stride: usize) -> Option<([usize; 4], usize, usize)> {
        let (t, b, oh) = self.resolve(h, kernel, stride)?;
        let (l, r, ow) = self.resolve(w, kernel, stride)?;
        Some(([t, b, l, r], oh, ow))
    }
}

impl Serialize for Padding {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Padding::Same => s.serialize_str("same"),
            Padding::Valid => s.serialize_str("valid"),
            Padding::Explicit(p) => s.serialize_u64(*p as u64),
        }
    }
}

impl<'de> Deserialize<'de> for Padding {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Name(String),
            Amount(usize),
        }
        match Repr::deserialize(d).map_err(|_| {
            serde::de::Error::custom("padding must be \"same\", \"valid\" or a non-negative integer")
        })? {
            Repr::Name(n) if n == "same" => Ok(Padding::Same),
            Repr::Name(n) if n == "valid" => Ok(Padding::Valid),
            Repr::Name(n) => Err(serde::de::Error::custom(format!(
                "unknown padding {n:?}; expected \"same\", \"valid\" or an integer"
            ))),
            Repr::Amount(p) => Ok(Padding::Explicit(p)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    #[default]
    None,
    Relu,
    /// Only valid on the final Dense layer; the network itself returns logits
    /// and the loss / `predict_proba` apply the softmax.
    Softmax,
}

fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
fn default_two() -> usize {
    2
}
fn default_valid() -> Padding {
    Padding::Valid
}
fn default_bn_momentum() -> f64 {
    0.99
}
fn default_bn_eps() -> f64 {
    1e-3
}

/// One layer. Defaults follow Keras (`padding` "valid", `stride` 1 for convs,
/// 2x2 pooling with stride 2, BatchNorm momentum 0.99 / eps 1e-3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    Conv2d {
        filters: usize,
        kernel: usize,
        #[serde(default = "default_one")]
        stride: usize,
        #[serde(default = "default_valid")]
        padding: Padding,
        #[serde(default)]
        activation: Activation,
        #[serde(default = "default_true")]
        use_bias: bool,
    },
    MaxPool2d {
        #[serde(default = "default_two")]
        kernel: usize,
        #[serde(default = "default_two")]
        stride: usize,
        #[serde(default = "default_valid")]
        padding: Padding,
    },
    Dropout {
        rate: f64,
    },
    BatchNorm2d {
        #[serde(default = "default_bn_momentum")]
        momentum: f64,
        #[serde(default = "default_bn_eps")]
        eps: f64,
    },
    Relu,
    Flatten,
    GlobalAvgPool,
    Dense {
        units: usize,
        #[serde(default)]
        activation: Activation,
    },
}

impl LayerSpec {
    /// Keras' class name, shown in summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "Conv2D",
            LayerSpec::MaxPool2d { .. } => "MaxPooling2D",
            LayerSpec::Dropout { .. } => "Dropout",
            LayerSpec::BatchNorm2d { .. } => "BatchNormalization",
            LayerSpec::Relu => "ReLU",
            LayerSpec::Flatten => "Flatten",
            LayerSpec::GlobalAvgPool => "GlobalAveragePooling2D",
            LayerSpec::Dense { .. } => "Dense",
        }
    }

    /// Keras' auto-generated layer-name stem (`conv2d`, `conv2d_1`, ...).
    fn name_stem(&self) -> &'static str {
        match self {
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::MaxPool2d { .. } => "max_pooling2d",
            LayerSpec::Dropout { .. } => "dropout",
            LayerSpec::BatchNorm2d { .. } => "batch_normalization",
            LayerSpec::Relu => "re_lu",
            LayerSpec::Flatten => "flatten",
            LayerSpec::GlobalAvgPool => "global_average_pooling2d",
            LayerSpec::Dense { .. } => "dense",
        }
    }
}

/// A feature map flowing between layers: NCHW without the batch, or flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureShape {
    Spatial { c: usize, h: usize, w: usize },
    Flat(usize),
}

impl FeatureShape {
    pub fn len(self) -> usize {
        match self {
            FeatureShape::Spatial { c, h, w } => c * h * w,
            FeatureShape::Flat(n) => n,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// Keras order (H, W, C), no batch.
    pub fn keras_dims(self) -> Vec<usize> {
        match self {
            FeatureShape::Spatial { c, h, w } => vec![h, w, c],
            FeatureShape::Flat(n) => vec![n],
        }
    }
}

/// What one layer does to shapes, plus its parameter counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPlan {
    pub input: FeatureShape,
    pub output: FeatureShape,
    /// `[top, bottom, left, right]` for convs and pools, zeros otherwise.
    pub padding: [usize; 4],
    pub params: usize,
    pub trainable_params: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    pub name: String,
    pub kind: String,
    /// Keras order (H, W, C) without the batch dimension.
    pub output_shape: Vec<usize>,
    pub params: usize,
    pub trainable_params: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub name: String,
    /// (C, H, W); FER2013 is (1, 48, 48).
    pub input_shape: [usize; 3],
    pub layers: Vec<LayerSpec>,
}

impl ModelSpec {
    pub fn to_json(&self) -> String {
        // Serialising plain structs of numbers and strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(json: &str) -> Result<Self> {
        let spec: ModelSpec =
            serde_json::from_str(json).map_err(|e| Error::format(format!("invalid model spec JSON: {e}")))?;
        Ok(spec)
    }

    /// Checks the spec end to end: valid hyper-parameters, shapes that
    /// propagate without collapsing, and a final `Dense(7)` classifier.
    pub fn validate(&self) -> Result<()> {
        self.plan().map(|_| ())
    }

    /// What the Python package runs: 48x48 grayscale images. (Rust tests
    /// also build smaller inputs.)
    pub fn check_fer_input(&self) -> Result<()> {
        let want = [1, IMAGE_SIDE, IMAGE_SIDE];
        if self.input_shape != want {
            let [c, h, w] = self.input_shape;
            return Err(Error::invalid(format!(
                "model {:?}: input_shape must be [1, {IMAGE_SIDE}, {IMAGE_SIDE}] (48x48 grayscale faces), got [{c}, {h}, {w}]",
                self.name
            )));
        }
        Ok(())
    }

    /// Per-layer shapes and parameter counts; fails with `InvalidInput`
    /// naming the first bad layer.
    pub fn plan(&self) -> Result<Vec<LayerPlan>> {
        let [c, h, w] = self.input_shape;
        if c == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "model {:?}: input_shape {:?} has a zero dimension",
                self.name, self.input_shape
            )));
        }
        if self.layers.is_empty() {
            return Err(Error::invalid(format!("model {:?} has no layers", self.name)));
        }
        let mut shape = FeatureShape::Spatial { c, h, w };
        let mut plans = Vec::with_capacity(self.layers.len());
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            let plan = plan_layer(layer, shape, i == last)
                .map_err(|msg| Error::invalid(format!("model {:?}, layer {i} ({}): {msg}", self.name, layer.kind())))?;
            shape = plan.output;
            plans.push(plan);
        }
        match self.layers[last] {
            LayerSpec::Dense { units, .. } if units == NUM_CLASSES => Ok(plans),
            _ => Err(Error::invalid(format!(
                "model {:?}: the last layer must be Dense with {NUM_CLASSES} units (one per emotion)",
                self.name
            ))),
        }
    }

    pub fn summary(&self) -> Result<Vec<SummaryRow>> {
        let plans = self.plan()?;
        let mut seen = std::collections::HashMap::<&str, usize>::new();
        Ok(self
            .layers
            .iter()
            .zip(plans)
            .map(|(layer, plan)| {
                let stem = layer.name_stem();
                let k = seen.entry(stem).or_insert(0);
                let name = if *k == 0 { stem.to_string() } else { format!("{stem}_{k}") };
                *k += 1;
                SummaryRow {
                    name,
                    kind: layer.kind().to_string(),
                    output_shape: plan.output.keras_dims(),
                    params: plan.params,
                    trainable_params: plan.trainable_params,
                }
            })
            .collect())
    }

    /// Total parameters, BatchNorm running statistics included (as Keras counts).
    pub fn param_count(&self) -> Result<usize> {
        Ok(self.plan()?.iter().map(|p| p.params).sum())
    }

    pub fn trainable_param_count(&self) -> Result<usize> {
        Ok(self.plan()?.iter().map(|p| p.trainable_params).sum())
    }

    /// Floats per input image (C*H*W).
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }
}

/// Bounds on one layer, far above any useful network for 48x48 faces, so
/// a hostile or mistyped spec (a model file's, say) is an error instead of
/// an allocation that aborts the process.
const MAX_PARAMS: usize = 1 << 28;
/// Floats of one layer's output, per image.
const MAX_ACTIVATION: usize = 1 << 24;
/// A convolution's unfolded input (C x K x K x OH x OW), per image.
const MAX_CONV_COLUMNS: usize = 1 << 28;

fn product(factors: &[usize]) -> Option<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f))
}

fn bounded(what: &str, factors: &[usize], max: usize) -> std::result::Result<usize, String> {
    product(factors)
        .filter(|&n| n <= max)
        .ok_or_else(|| format!("too large: {what} {} exceeds {max}", factors.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(" x ")))
}

fn plan_layer(layer: &LayerSpec, input: FeatureShape, is_last: bool) -> std::result::Result<LayerPlan, String> {
    let spatial = |what: &str| match input {
        FeatureShape::Spatial { c, h, w } => Ok((c, h, w)),
        FeatureShape::Flat(_) => Err(format!("{what} needs a spatial (C, H, W) input but got a flat vector; remove the Flatten before it")),
    };
    let plan = |output: FeatureShape, padding, params, trainable_params| LayerPlan {
        input,
        output,
        padding,
        params,
        trainable_params,
    };
    let window = |h: usize, w: usize, kernel: usize, stride: usize, padding: Padding| {
        if kernel == 0 || stride == 0 {
            return Err("kernel and stride must be positive".to_string());
        }
        padding
            .resolve_2d(h, w, kernel, stride)
            .ok_or_else(|| format!("a {kernel}x{kernel} window does not fit the {h}x{w} input"))
    };
    Ok(match *layer {
        LayerSpec::Conv2d { filters, kernel, stride, padding, activation, use_bias } => {
            let (c, h, w) = spatial("Conv2D")?;
            if filters == 0 {
                return Err("filters must be positive".into());
            }
            if activation == Activation::Softmax {
                return Err("softmax is only allowed on the final Dense layer".into());
            }
            if let Padding::Explicit(p) = padding {
                if p >= kernel {
                    return Err(format!("padding {p} must be smaller than the {kernel}x{kernel} kernel"));
                }
            }
            let (pad, oh, ow) = window(h, w, kernel, stride, padding)?;
            let n = bounded("weights", &[kernel, kernel, c, filters], MAX_PARAMS)? + if use_bias { filters } else { 0 };
            bounded("output", &[filters, oh, ow], MAX_ACTIVATION)?;
            bounded("unfolded input", &[c, kernel, kernel, oh, ow], MAX_CONV_COLUMNS)?;
            plan(FeatureShape::Spatial { c: filters, h: oh, w: ow }, pad, n, n)
        }
        LayerSpec::MaxPool2d { kernel, stride, padding } => {
            let (c, h, w) = spatial("MaxPooling2D")?;
            let (pad, oh, ow) = window(h, w, kernel, stride, padding)?;
            if let Some(p) = pad.iter().find(|&&p| p >= kernel) {
                return Err(format!("padding {p} must be smaller than the {kernel}x{kernel} window"));
            }
            if kernel > h.max(w) {
                return Err(format!("a {kernel}x{kernel} window is larger than the {h}x{w} input"));
            }
            plan(FeatureShape::Spatial { c, h: oh, w: ow }, pad, 0, 0)
        }
        LayerSpec::Dropout { rate } => {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("rate {rate} must be in [0, 1)"));
            }
            plan(input, [0; 4], 0, 0)
        }
        LayerSpec::BatchNorm2d { momentum, eps } => {
            let (c, _, _) = spatial("BatchNormalization")?;
            if !(0.0..=1.0).contains(&momentum) {
                return Err(format!("momentum {momentum} must be in [0, 1]"));
            }
            if !(eps > 0.0 && eps.is_finite()) {
                return Err(format!("eps {eps} must be positive"));
            }
            plan(input, [0; 4], 4 * c, 2 * c)
        }
        LayerSpec::Relu => plan(input, [0; 4], 0, 0),
        LayerSpec::Flatten => plan(FeatureShape::Flat(input.len()), [0; 4], 0, 0),
        LayerSpec::GlobalAvgPool => {
            let (c, _, _) = spatial("GlobalAveragePooling2D")?;
            plan(FeatureShape::Flat(c), [0; 4], 0, 0)
        }
        LayerSpec::Dense { units, activation } => {
            let n_in = match input {
                FeatureShape::Flat(n) => n,
                FeatureShape::Spatial { .. } => {
                    return Err("Dense needs a flat input; add Flatten or GlobalAvgPool before it".into())
                }
            };
            if units == 0 {
                return Err("units must be positive".into());
            }
            if activation == Activation::Softmax && !is_last {
                return Err("softmax is only allowed on the final Dense layer".into());
            }
            bounded("output", &[units], MAX_ACTIVATION)?;
            let n = bounded("weights", &[n_in, units], MAX_PARAMS)? + units;
            plan(FeatureShape::Flat(units), [0; 4], n, n)
        }
    })
    .and_then(|p: LayerPlan| {
        if p.output.is_empty() {
            Err("the output collapses to zero elements".into())
        } else {
            Ok(p)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_same_padding_is_asymmetric_for_even_kernels() {
        assert_eq!(Padding::Same.resolve(48, 4, 1), Some((1, 2, 48)));
        assert_eq!(Padding::Same.resolve(48, 3, 1), Some((1, 1, 48)));
        assert_eq!(Padding::Same.resolve(48, 2, 1), Some((0, 1, 48)));
        assert_eq!(Padding::Same.resolve(48, 3, 2), Some((0, 1, 24)));
        assert_eq!(Padding::Same.resolve(5, 3, 2), Some((1, 1, 3)));
        assert_eq!(Padding::Same.resolve(48, 1, 2), Some((0, 0, 24)));
        assert_eq!(Padding::Valid.resolve(48, 2, 2), Some((0, 0, 24)));
        assert_eq!(Padding::Valid.resolve(1, 2, 2), None);
        assert_eq!(Padding::Explicit(1).resolve(6, 3, 2), Some((1, 1, 3)));
    }

    #[test]
    fn padding_json_forms() {
        assert_eq!(serde_json::to_string(&Padding::Same).unwrap(), "\"same\"");
        assert_eq!(serde_json::to_string(&Padding::Explicit(2)).unwrap(), "2");
        assert_eq!(serde_json::from_str::<Padding>("\"valid\"").unwrap(), Padding::Valid);
        assert_eq!(serde_json::from_str::<Padding>("3").unwrap(), Padding::Explicit(3));
        assert!(serde_json::from_str::<Padding>("\"full\"").is_err());
        assert!(serde_json::from_str::<Padding>("-1").is_err());
    }

    #[test]
    fn layer_defaults_follow_keras() {
        let l: LayerSpec = serde_json::from_str(r#"{"type":"conv2d","filters":8,"kernel":3}"#).unwrap();
        assert_eq!(
            l,
            LayerSpec::Conv2d {
                filters: 8,
                kernel: 3,
                stride: 1,
                padding: Padding::Valid,
                activation: Activation::None,
                use_bias: true
            }
        );
        let l: LayerSpec = serde_json::from_str(r#"{"type":"batch_norm2d"}"#).unwrap();
        assert_eq!(l, LayerSpec::BatchNorm2d { momentum: 0.99, eps: 1e-3 });
        let l: LayerSpec = serde_json::from_str(r#"{"type":"max_pool2d"}"#).unwrap();
        assert_eq!(l, LayerSpec::MaxPool2d { kernel: 2, stride: 2, padding: Padding::Valid });
    }

    #[test]
    fn json_round_trip_of_every_preset() {
        for name in preset_names() {
            let spec = preset(name, &Default::default()).unwrap();
            let back = ModelSpec::from_json(&spec.to_json()).unwrap();
            assert_eq!(spec, back, "{name}");
        }
    }

    #[test]
    fn bad_json_is_a_format_error() {
        for bad in [
            "",
            "{",
            "[]",
            r#"{"name":"x","input_shape":[1,48,48],"layers":[{"type":"conv3d"}]}"#,
            r#"{"name":"x","input_shape":[1,48],"layers":[]}"#,
            r#"{"name":"x","input_shape":[1,48,48],"layers":[{"type":"dense","units":7,"activation":"tanh"}]}"#,
            r#"{"name":"x","input_shape":[1,48,48],"layers":[],"extra":1}"#,
        ] {
            match ModelSpec::from_json(bad) {
                Err(Error::Format(msg)) => assert!(msg.contains("invalid model spec JSON"), "{msg}"),
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    fn spec(layers: Vec<LayerSpec>) -> ModelSpec {
        ModelSpec { name: "t".into(), input_shape: [1, 48, 48], layers }
    }

    fn dense7() -> LayerSpec {
        LayerSpec::Dense { units: 7, activation: Activation::Softmax }
    }

    #[test]
    fn oversized_layers_are_errors_not_allocations() {
        let conv = |kernel, padding| LayerSpec::Conv2d {
            filters: 1,
            kernel,
            stride: 1,
            padding: Padding::Explicit(padding),
            activation: Activation::None,
            use_bias: true,
        };
        let wide = LayerSpec::Dense { units: 100_000_000, activation: Activation::None };
        let cases = [
            (vec![conv(1 << 32, (1 << 31) + 1), LayerSpec::Flatten, dense7()], "too large: weights"),
            (vec![conv(3, 100_000), LayerSpec::GlobalAvgPool, dense7()], "padding 100000 must be smaller"),
            (vec![conv(2048, 2047), LayerSpec::GlobalAvgPool, dense7()], "too large: unfolded input"),
            (vec![LayerSpec::Flatten, wide, dense7()], "too large: output"),
            (vec![LayerSpec::MaxPool2d { kernel: 1000, stride: 1, padding: Padding::Same }, LayerSpec::Flatten, dense7()], "larger than the 48x48"),
            (vec![conv(usize::MAX, usize::MAX - 1), LayerSpec::Flatten, dense7()], "does not fit"),
        ];
        for (layers, want) in cases {
            let err = spec(layers).validate().unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        }
        let mut grey24 = spec(vec![LayerSpec::Flatten, dense7()]);
        grey24.input_shape = [4, 24, 24];
        assert!(grey24.validate().is_ok());
        assert!(grey24.check_fer_input().unwrap_err().to_string().contains("input_shape must be [1, 48, 48]"));
    }

    #[test]
    fn validate_rejects_broken_specs() {
        let pool = |k| LayerSpec::MaxPool2d { kernel: k, stride: k, padding: Padding::Valid };
        let bad = [
            spec(vec![]),
            spec(vec![LayerSpec::Flatten, LayerSpec::Dense { units: 5, activation: Activation::None }]),
            spec(vec![dense7()]),
            spec(vec![pool(64), LayerSpec::Flatten, dense7()]),
            spec(vec![pool(2), pool(2), pool(2), pool(2), pool(2), pool(2), LayerSpec::Flatten, dense7()]),
            spec(vec![LayerSpec::Flatten, LayerSpec::Dropout { rate: 1.0 }, dense7()]),
            spec(vec![LayerSpec::Flatten, dense7(), LayerSpec::Flatten, dense7()]),
            spec(vec![LayerSpec::Flatten, LayerSpec::GlobalAvgPool, dense7()]),
            ModelSpec { name: "t".into(), input_shape: [0, 48, 48], layers: vec![LayerSpec::Flatten, dense7()] },
        ];
        for s in bad {
            assert!(matches!(s.validate(), Err(Error::InvalidInput(_))), "{s:?}");
        }
        assert!(spec(vec![LayerSpec::Flatten, dense7()]).validate().is_ok());
    }

    #[test]
    fn summary_names_count_like_keras() {
        let s = preset("seed3x3", &Default::default()).unwrap();
        let names: Vec<_> = s.summary().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(&names[..5], ["conv2d", "conv2d_1", "max_pooling2d", "dropout", "conv2d_2"]);
        assert_eq!(names.last().unwrap(), "dense");
    }
}
