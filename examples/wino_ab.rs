//! F(2x2, 3x3) against F(4x4, 3x3) on one 3x3 convolution: forward (no
//! kept tiles) and the fused backward (dx + dw), best of 8 interleaved
//! rounds. What `choose_algo`'s 40x40 rule was measured with.
//!
//! `RAYON_NUM_THREADS=1 cargo run --release --example wino_ab -- N C HW O`
//! (e.g. `64 48 44 48`, seed3x3's second conv); `ONLY=2` or `ONLY=4` times one.

use std::time::Instant;

use _core::ops::conv::Geom;
use _core::ops::winograd::{self, Epilogue, Wanted};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|s| s.parse().ok()).collect();
    let [n, c, h, o] = args[..] else {
        eprintln!("usage: wino_ab N C HW O");
        std::process::exit(2);
    };
    let g = Geom::new(&[n, c, h, h], &[o, c, 3, 3], [1; 4], 1).unwrap();
    let fill = |len: usize, k: usize| -> Vec<f32> { (0..len).map(|i| ((i * k) % 1000) as f32 / 1000.0 - 0.5).collect() };
    let (x, w, dy) = (fill(n * c * h * h, 7919), fill(o * c * 9, 104729), fill(n * o * h * h, 15485863));
    let only = std::env::var("ONLY").ok();
    let ms: Vec<usize> = [2, 4].into_iter().filter(|m| only.as_deref().is_none_or(|v| v == m.to_string())).collect();
    let mut best = vec![(f64::MAX, f64::MAX); ms.len()];
    let all = Wanted { dx: true, dw: true, db: false };
    for _ in 0..8 {
        for (k, &m) in ms.iter().enumerate() {
            let t = Instant::now();
            let (y, _) = winograd::conv2d_fwd_keep(&g, m, &x, &w, false, &Epilogue::NONE);
            let fwd = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let grads = winograd::conv2d_bwd_fused(&g, m, &x, None, &w, &dy, None, all);
            let bwd = t.elapsed().as_secs_f64();
            std::hint::black_box((y, grads));
            best[k] = (best[k].0.min(fwd), best[k].1.min(bwd));
        }
    }
    for (&m, (fwd, bwd)) in ms.iter().zip(best) {
        println!("F({m}x{m}, 3x3) n{n} c{c} {h}x{h} o{o}: fwd {:.1} ms, bwd {:.1} ms", fwd * 1e3, bwd * 1e3);
    }
}
