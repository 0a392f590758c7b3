//! Data augmentation for 48x48 grayscale faces, on the fly and seeded, and
//! the views averaged by test-time augmentation.
//!
//! Geometry (flip, shift, rotation, scale) is one affine map sampled
//! bilinearly with edge replication, so an image is resampled once however
//! many transforms apply. Each image of a batch gets its own ChaCha stream,
//! seeded in order from the trainer's RNG, so results do not depend on how
//! rayon schedules the images.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Error, Result, IMAGE_PIXELS, IMAGE_SIDE};

/// What to randomise; zero/false switches a transform off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Mirror left-right with probability 1/2 (faces are near-symmetric).
    pub flip: bool,
    /// Largest translation in pixels, each axis.
    pub shift: f32,
    /// Largest rotation in degrees, either way.
    pub rotation: f32,
    /// Largest relative zoom: the scale is drawn from [1 - scale, 1 + scale].
    pub scale: f32,
    /// Largest brightness offset (pixels are in [0, 1]).
    pub brightness: f32,
    /// Largest relative contrast change around the image mean.
    pub contrast: f32,
    /// Probability of erasing one random rectangle (2-20% of the image).
    pub erasing: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        // Random erasing is off: with fer_vgg it cost 60-minute runs accuracy
        // (benchmarks/bench_recipe.py); long runs may want it back.
        AugmentConfig { flip: true, shift: 4.0, rotation: 10.0, scale: 0.1, brightness: 0.1, contrast: 0.2, erasing: 0.0 }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        AugmentConfig { flip: false, shift: 0.0, rotation: 0.0, scale: 0.0, brightness: 0.0, contrast: 0.0, erasing: 0.0 }
    }

    pub fn validate(&self) -> Result<()> {
        let checks: [(&str, f32, f32); 6] = [
            ("shift", self.shift, IMAGE_SIDE as f32 / 2.0),
            ("rotation", self.rotation, 180.0),
            ("scale", self.scale, 0.9),
            ("brightness", self.brightness, 1.0),
            ("contrast", self.contrast, 1.0),
            ("erasing", self.erasing, 1.0),
        ];
        for (name, value, max) in checks {
            if !value.is_finite() || value < 0.0 || value > max {
                return Err(Error::invalid(format!("augmentation {name} must be in [0, {max}], got {value}")));
            }
        }
        Ok(())
    }

    fn geometric(&self) -> bool {
        self.flip || self.shift > 0.0 || self.rotation > 0.0 || self.scale > 0.0
    }

    /// Augments a batch of images (N * 2304 floats in [0, 1]) in place.
    pub fn apply(&self, images: &mut [f32], rng: &mut ChaCha8Rng) {
        let seeds: Vec<u64> = (0..images.len() / IMAGE_PIXELS).map(|_| rng.random()).collect();
        images.par_chunks_mut(IMAGE_PIXELS).zip(seeds.par_iter()).for_each(|(image, &seed)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            self.apply_one(image, &mut rng);
        });
    }

    fn apply_one(&self, image: &mut [f32], rng: &mut ChaCha8Rng) {
        if self.geometric() {
            let flip = self.flip && rng.random::<bool>();
            let angle = symmetric(rng, self.rotation).to_radians();
            let zoom = 1.0 + symmetric(rng, self.scale);
            let (dx, dy) = (symmetric(rng, self.shift), symmetric(rng, self.shift));
            let source: Vec<f32> = image.to_vec();
            warp(&source, image, Affine::new(flip, angle, zoom, dx, dy));
        }
        if self.brightness > 0.0 || self.contrast > 0.0 {
            let offset = symmetric(rng, self.brightness);
            let gain = 1.0 + symmetric(rng, self.contrast);
            let mean = image.iter().sum::<f32>() / IMAGE_PIXELS as f32;
            for v in image.iter_mut() {
                *v = ((*v - mean) * gain + mean + offset).clamp(0.0, 1.0);
            }
        }
        if self.erasing > 0.0 && rng.random::<f32>() < self.erasing {
            erase(image, rng);
        }
    }
}

fn symmetric(rng: &mut ChaCha8Rng, max: f32) -> f32 {
    if max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

/// Maps output pixel coordinates to source coordinates (the inverse map).
#[derive(Clone, Copy)]
struct Affine {
    a: f32,
    b: f32,
    c: f32,
    d: f32,
    tx: f32,
    ty: f32,
}

impl Affine {
    /// Flip, rotate and zoom about the centre, then shift by (dx, dy).
    fn new(flip: bool, angle: f32, zoom: f32, dx: f32, dy: f32) -> Affine {
        let centre = (IMAGE_SIDE as f32 - 1.0) / 2.0;
        let (sin, cos) = angle.sin_cos();
        let fx = if flip { -1.0 } else { 1.0 };
        // Inverse of: out = R * Z * F * (src - centre) + centre + shift.
        let a = fx * cos / zoom;
        let b = fx * sin / zoom;
        let c = -sin / zoom;
        let d = cos / zoom;
        let (ox, oy) = (-centre - dx, -centre - dy);
        Affine { a, b, c, d, tx: a * ox + b * oy + centre, ty: c * ox + d * oy + centre }
    }
}

fn warp(src: &[f32], dst: &mut [f32], m: Affine) {
    let side = IMAGE_SIDE as isize;
    let at = |x: isize, y: isize| src[(y.clamp(0, side - 1) * side + x.clamp(0, side - 1)) as usize];
    for oy in 0..IMAGE_SIDE {
        for ox in 0..IMAGE_SIDE {
            let (fx, fy) = (ox as f32, oy as f32);
            let sx = m.a * fx + m.b * fy + m.tx;
            let sy = m.c * fx + m.d * fy + m.ty;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (wx, wy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(x0, y0) * (1.0 - wx) + at(x0 + 1, y0) * wx;
            let bottom = at(x0, y0 + 1) * (1.0 - wx) + at(x0 + 1, y0 + 1) * wx;
            dst[oy * IMAGE_SIDE + ox] = top * (1.0 - wy) + bottom * wy;
        }
    }
}

/// Random erasing (Zhong et al.): one rectangle of 2-20% of the area, aspect
/// 0.3-3.3, filled with uniform noise.
fn erase(image: &mut [f32], rng: &mut ChaCha8Rng) {
    let area = (IMAGE_PIXELS as f32) * rng.random_range(0.02..0.2);
    let aspect = rng.random_range(0.3f32.ln()..3.3f32.ln()).exp();
    let h = ((area * aspect).sqrt().round() as usize).clamp(1, IMAGE_SIDE);
    let w = ((area / aspect).sqrt().round() as usize).clamp(1, IMAGE_SIDE);
    let top = rng.random_range(0..=IMAGE_SIDE - h);
    let left = rng.random_range(0..=IMAGE_SIDE - w);
    for y in top..top + h {
        for x in left..left + w {
            image[y * IMAGE_SIDE + x] = rng.random();
        }
    }
}

/// Test-time augmentation views.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tta {
    /// The image and its mirror.
    Flip,
    /// The image, four 2-pixel shifts, and the mirrors of all five.
    Crops,
}

impl Tta {
    pub fn parse(name: &str) -> Result<Option<Tta>> {
        match name {
            "" | "none" => Ok(None),
            "flip" => Ok(Some(Tta::Flip)),
            "crops" => Ok(Some(Tta::Crops)),
            other => Err(Error::invalid(format!("unknown tta {other:?}; use None, \"flip\" or \"crops\""))),
        }
    }

    fn transforms(self) -> Vec<Affine> {
        let shifts: &[(f32, f32)] = match self {
            Tta::Flip => &[(0.0, 0.0)],
            Tta::Crops => &[(0.0, 0.0), (2.0, 0.0), (-2.0, 0.0), (0.0, 2.0), (0.0, -2.0)],
        };
        [false, true]
            .iter()
            .flat_map(|&flip| shifts.iter().map(move |&(dx, dy)| Affine::new(flip, 0.0, 1.0, dx, dy)))
            .collect()
    }

    /// Number of views averaged.
    pub fn views(self) -> usize {
        self.transforms().len()
    }

    /// Each view of every image: `views()` blocks of `images.len()` floats.
    pub fn expand(self, images: &[f32]) -> Vec<f32> {
        let transforms = self.transforms();
        let mut out = vec![0f32; images.len() * transforms.len()];
        out.par_chunks_mut(images.len()).zip(transforms.par_iter()).for_each(|(block, &m)| {
            for (dst, src) in block.chunks_mut(IMAGE_PIXELS).zip(images.chunks(IMAGE_PIXELS)) {
                warp(src, dst, m);
            }
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient_image() -> Vec<f32> {
        (0..IMAGE_PIXELS).map(|i| (i % IMAGE_SIDE) as f32 / (IMAGE_SIDE - 1) as f32).collect()
    }

    #[test]
    fn identity_warp_is_exact() {
        let src = gradient_image();
        let mut dst = vec![0.0; IMAGE_PIXELS];
        warp(&src, &mut dst, Affine::new(false, 0.0, 1.0, 0.0, 0.0));
        for (a, b) in src.iter().zip(&dst) {
            assert!((a - b).abs() < 1e-5);
        }
    }

    #[test]
    fn flip_mirrors_columns_and_shift_moves_pixels() {
        let src = gradient_image();
        let mut dst = vec![0.0; IMAGE_PIXELS];
        warp(&src, &mut dst, Affine::new(true, 0.0, 1.0, 0.0, 0.0));
        for y in 0..IMAGE_SIDE {
            for x in 0..IMAGE_SIDE {
                let mirrored = src[y * IMAGE_SIDE + IMAGE_SIDE - 1 - x];
                assert!((dst[y * IMAGE_SIDE + x] - mirrored).abs() < 1e-5);
            }
        }
        warp(&src, &mut dst, Affine::new(false, 0.0, 1.0, 3.0, 0.0));
        // Content moves right by 3: output x reads source x - 3.
        assert!((dst[10] - src[7]).abs() < 1e-5);
        // Edge replication on the left.
        assert!((dst[0] - src[0]).abs() < 1e-5);
    }

    #[test]
    fn augmentation_is_seeded_bounded_and_changes_images() {
        let config = AugmentConfig::default();
        let batch: Vec<f32> = (0..4).flat_map(|_| gradient_image()).collect();
        let mut a = batch.clone();
        let mut b = batch.clone();
        config.apply(&mut a, &mut ChaCha8Rng::seed_from_u64(7));
        config.apply(&mut b, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
        assert_ne!(a, batch);
        assert!(a.iter().all(|v| (0.0..=1.0).contains(v)));
        let mut c = batch.clone();
        config.apply(&mut c, &mut ChaCha8Rng::seed_from_u64(8));
        assert_ne!(a, c);
    }

    #[test]
    fn none_leaves_images_alone_and_bad_configs_are_rejected() {
        let mut a = gradient_image();
        AugmentConfig::none().apply(&mut a, &mut ChaCha8Rng::seed_from_u64(1));
        assert_eq!(a, gradient_image());
        let bad = AugmentConfig { rotation: -1.0, ..AugmentConfig::default() };
        assert!(bad.validate().unwrap_err().to_string().contains("rotation"));
        assert!(AugmentConfig::default().validate().is_ok());
    }

    #[test]
    fn tta_views_start_with_the_image_itself() {
        let img = gradient_image();
        for (tta, views) in [(Tta::Flip, 2), (Tta::Crops, 10)] {
            let out = tta.expand(&img);
            assert_eq!(out.len(), views * IMAGE_PIXELS);
            assert_eq!(tta.views(), views);
            for (a, b) in out[..IMAGE_PIXELS].iter().zip(&img) {
                assert!((a - b).abs() < 1e-5);
            }
        }
        assert!(Tta::parse("mirror").is_err());
    }
}
