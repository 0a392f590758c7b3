//! `fer`: facial-emotion recognition CNNs. The numeric core is plain Rust
//! (tested by `cargo test`); `python.rs` holds the pyo3 bindings that maturin
//! builds into `fer._core`.

pub mod augment;
pub mod checkpoint;
pub mod error;
pub mod layers;
pub mod loss;
pub mod model_file;
pub mod network;
pub mod optim;
pub mod ops;
pub mod pixels;
pub mod schedule;
pub mod spec;
pub mod threads;
pub mod train;

/// Large blocks start on a cache line (see [`ops::alloc::CacheAligned`]).
#[global_allocator]
static ALLOCATOR: ops::alloc::CacheAligned = ops::alloc::CacheAligned;

#[cfg(feature = "python")]
mod python;

pub use error::{Error, Result};

/// Side of the square grayscale face images.
pub const IMAGE_SIDE: usize = 48;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;
/// Number of emotion classes.
pub const NUM_CLASSES: usize = 7;
/// The seven FER2013 emotions in label order.
pub const EMOTIONS: [&str; NUM_CLASSES] = ["Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"];
