//! Winograd tile sizes against each other and against im2col on one
//! stride-1 convolution: forward (no kept tiles) and the backward (dx +
//! dw; fused for Winograd), best of 8 interleaved rounds. What
//! `choose_algo`'s rules were measured with.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example wino_ab -- N C HW O [R]`
//! (e.g. `64 48 44 48`, seed3x3's second conv; R is the kernel side, 3 by
//! default): F(2x2, 3x3) and F(4x4, 3x3) for R = 3, F(4x4, 4x4),
//! F(3x3, 4x4) and F(2x2, 4x4) for R = 4, then im2col; `ONLY=2` (a tile size) or
//! `ONLY=im2col` times one; `TILES=4,6` picks the tile sizes.
//! `FER_WINOGRAD=general` for the general transforms.

use std::time::Instant;

use _core::ops::conv::{self, Geom};
use _core::ops::winograd::{self, Epilogue, Wanted};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let (n, c, h, o, r) = match args[..] {
        [n, c, h, o] => (n, c, h, o, 3),
        [n, c, h, o, r] => (n, c, h, o, r),
        _ => {
            eprintln!("usage: wino_ab N C HW O [R]");
            std::process::exit(2);
        }
    };
    let g = Geom::new(&[n, c, h, h], &[o, c, r, r], [1; 4], 1).unwrap();
    let fill = |len: usize, k: usize| -> Vec<f32> { (0..len).map(|i| ((i * k) % 1000) as f32 / 1000.0 - 0.5).collect() };
    let (x, w, dy) = (fill(n * c * h * h, 7919), fill(o * c * r * r, 104729), fill(n * o * g.p(), 15485863));
    let only = std::env::var("ONLY").ok();
    let tiles: Vec<usize> = match std::env::var("TILES") {
        Ok(list) => list.split(',').filter_map(|m| m.parse().ok()).collect(),
        Err(_) if r == 3 => vec![2, 4],
        Err(_) => vec![4, 3, 2],
    };
    // 0 stands for im2col
    let ms: Vec<usize> = tiles.iter().copied().chain([0]).filter(|&m| only.as_deref().is_none_or(|v| v == if m == 0 { "im2col".into() } else { m.to_string() })).collect();
    let mut best = vec![(f64::MAX, f64::MAX); ms.len()];
    let all = Wanted { dx: true, dw: true, db: false };
    for _ in 0..8 {
        for (k, &m) in ms.iter().enumerate() {
            let t = Instant::now();
            let y = if m == 0 { conv::conv2d_fwd(&g, &x, &w) } else { winograd::conv2d_fwd_keep(&g, m, &x, &w, false, &Epilogue::NONE).0 };
            let fwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = if m == 0 {
                (Some(conv::conv2d_bwd_input(&g, &dy, &w)), Some(conv::conv2d_bwd_weight(&g, &x, &dy)), None)
            } else {
                winograd::conv2d_bwd_fused(&g, m, &x, None, &w, None, winograd::OutGrad::Plain(&dy), all)
            };
            let bwd = t.elapsed().as_secs_f64();
            std::hint::black_box((y, grads));
            best[k] = (best[k].0.min(fwd), best[k].1.min(bwd));
        }
    }
    for (&m, (fwd, bwd)) in ms.iter().zip(best) {
        let name = if m == 0 { "im2col".to_string() } else { format!("F({m}x{m}, {r}x{r})") };
        println!("{name} n{n} c{c} {h}x{h} o{o}: fwd {:.1} ms, bwd {:.1} ms", fwd * 1e3, bwd * 1e3);
    }
}
