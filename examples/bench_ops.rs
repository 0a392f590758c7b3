//! Forward + backward timings of the seed3x3 conv layers (batch 64) and the
//! max-pool layers, reference (stock candle) vs fast ops.
//!
//! `cargo run --release --example bench_ops [-- [--same] [--no-ref] [--iters N] [--batch N]]`
//!   --same    the stride-1 "same" pooling variant (all convs at 48x48)
//!   --no-ref  skip the (slow) stock-candle reference

use std::time::Instant;

use _core::ops::{conv2d, conv2d_reference, max_pool2d, max_pool2d_reference};
use candle_core::{Device, Result, Tensor, Var};

struct Timing {
    fwd: f64,
    bwd: f64,
}

fn time_conv(
    f: &dyn Fn(&Tensor, &Tensor) -> Result<Tensor>,
    x: &Tensor,
    w: &Var,
    x_grad: bool,
    iters: usize,
) -> Result<Timing> {
    let xv = Var::from_tensor(x)?;
    let xin = if x_grad { xv.as_tensor().clone() } else { x.clone() };
    let (mut fwd, mut bwd) = (f64::MAX, f64::MAX);
    // one warm-up, then best of `iters`
    for _ in 0..iters + 1 {
        let t0 = Instant::now();
        let y = f(&xin, w.as_tensor())?;
        let t1 = Instant::now();
        let g = y.backward()?;
        let t2 = Instant::now();
        assert!(g.get(w.as_tensor()).is_some());
        fwd = fwd.min((t1 - t0).as_secs_f64());
        bwd = bwd.min((t2 - t1).as_secs_f64());
    }
    Ok(Timing { fwd, bwd })
}

fn time_pool(f: &dyn Fn(&Tensor) -> Result<Tensor>, x: &Tensor, iters: usize) -> Result<Timing> {
    let xv = Var::from_tensor(x)?;
    let (mut fwd, mut bwd) = (f64::MAX, f64::MAX);
    for _ in 0..iters + 1 {
        let t0 = Instant::now();
        let y = f(xv.as_tensor())?;
        let t1 = Instant::now();
        let g = y.backward();
        let t2 = Instant::now();
        if g.is_err() {
            return Ok(Timing { fwd: (t1 - t0).as_secs_f64(), bwd: f64::NAN });
        }
        fwd = fwd.min((t1 - t0).as_secs_f64());
        bwd = bwd.min((t2 - t1).as_secs_f64());
    }
    Ok(Timing { fwd, bwd })
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let same = args.iter().any(|a| a == "--same");
    let with_ref = !args.iter().any(|a| a == "--no-ref");
    let get = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let iters = get("--iters", 5);
    let n = get("--batch", 64);
    let dev = Device::Cpu;
    println!(
        "batch {n}, rayon threads {}, pooling {}",
        rayon::current_num_threads(),
        if same { "2x2 stride 1 same" } else { "2x2 stride 2" }
    );
    let sides: [usize; 6] = if same { [48; 6] } else { [48, 48, 24, 24, 12, 12] };
    let chans = [(1, 48), (48, 48), (48, 64), (64, 64), (64, 124), (124, 124)];
    println!(
        "{:<24} {:>9} {:>9} {:>9} {:>8} {:>8} | {:>9} {:>9} {:>9} {:>8} {:>8} | {:>7}",
        "conv layer", "ref fwd", "ref bwd", "ref tot", "img/s", "GFLOP/s", "fast fwd", "fast bwd", "fast tot",
        "img/s", "GFLOP/s", "speedup"
    );
    if args.iter().any(|a| a == "--raw") {
        let k = get("--kernel", 3);
        raw_kernels(n, k, &sides, &chans, iters);
        return Ok(());
    }
    let (mut ref_total, mut fast_total) = (0.0, 0.0);
    for (i, (&side, &(c, o))) in sides.iter().zip(&chans).enumerate() {
        let x = Tensor::randn(0f32, 1.0, (n, c, side, side), &dev)?;
        let w = Var::from_tensor(&(Tensor::randn(0f32, 1.0, (o, c, 3, 3), &dev)? * 0.1)?)?;
        let x_grad = i > 0;
        let flops = 2.0 * (n * o * side * side * c * 9) as f64 * if x_grad { 3.0 } else { 2.0 };
        let pad = [1, 1, 1, 1];
        let fast = time_conv(&|x, w| conv2d(x, w, pad, 1), &x, &w, x_grad, iters)?;
        let ft = fast.fwd + fast.bwd;
        fast_total += ft;
        let name = format!("conv{} {c}->{o} @{side}", i + 1);
        let fast_cols = format!(
            "{:>8.1}ms {:>7.1}ms {:>7.1}ms {:>8.0} {:>8.1}",
            fast.fwd * 1e3,
            fast.bwd * 1e3,
            ft * 1e3,
            n as f64 / ft,
            flops / ft / 1e9
        );
        if with_ref {
            let r = time_conv(&|x, w| conv2d_reference(x, w, pad, 1), &x, &w, x_grad, 1)?;
            let rt = r.fwd + r.bwd;
            ref_total += rt;
            println!(
                "{name:<24} {:>8.1}ms {:>7.1}ms {:>7.1}ms {:>8.0} {:>8.1} | {fast_cols} | {:>6.1}x",
                r.fwd * 1e3,
                r.bwd * 1e3,
                rt * 1e3,
                n as f64 / rt,
                flops / rt / 1e9,
                rt / ft
            );
        } else {
            println!("{name:<24} {:>9} {:>9} {:>9} {:>8} {:>8} | {fast_cols} |", "-", "-", "-", "-", "-");
        }
    }
    if with_ref {
        println!(
            "{:<24} ref {:.1} ms ({:.0} img/s), fast {:.1} ms ({:.0} img/s), speedup {:.1}x",
            "all convs",
            ref_total * 1e3,
            n as f64 / ref_total,
            fast_total * 1e3,
            n as f64 / fast_total,
            ref_total / fast_total
        );
    } else {
        println!("{:<24} fast {:.1} ms ({:.0} img/s)", "all convs", fast_total * 1e3, n as f64 / fast_total);
    }

    println!("\n{:<28} {:>9} {:>9} | {:>9} {:>9}", "max-pool", "ref fwd", "ref bwd", "fast fwd", "fast bwd");
    let pools: Vec<(usize, usize, usize, [usize; 4])> = if same {
        vec![(48, 48, 1, [0, 1, 0, 1]), (64, 48, 1, [0, 1, 0, 1]), (124, 48, 1, [0, 1, 0, 1])]
    } else {
        vec![(48, 48, 2, [0; 4]), (64, 24, 2, [0; 4]), (124, 12, 2, [0; 4])]
    };
    for (c, side, s, pad) in pools {
        let x = Tensor::randn(0f32, 1.0, (n, c, side, side), &dev)?;
        let fast = time_pool(&|x| max_pool2d(x, 2, s, pad), &x, iters)?;
        let name = format!("pool {c}x{side}x{side} s{s}");
        let r = if with_ref { Some(time_pool(&|x| max_pool2d_reference(x, 2, s, pad), &x, 1)?) } else { None };
        let fmt = |v: f64| if v.is_nan() { "n/a".to_string() } else { format!("{:.2}ms", v * 1e3) };
        println!(
            "{name:<28} {:>9} {:>9} | {:>9} {:>9}",
            r.as_ref().map_or("-".into(), |r| fmt(r.fwd)),
            r.as_ref().map_or("-".into(), |r| fmt(r.bwd)),
            fmt(fast.fwd),
            fmt(fast.bwd)
        );
    }
    Ok(())
}

/// Times the three conv kernels directly on slices (no candle graph).
/// `--kernel K` sets the kernel size (the "same" padding of Keras: the extra
/// row/column goes bottom/right for even K); Winograd F(m, K) is timed for
/// every m that fits.
fn raw_kernels(n: usize, k: usize, sides: &[usize; 6], chans: &[(usize, usize); 6], iters: usize) {
    use _core::ops::{conv, winograd};
    let pad = [(k - 1) / 2, k / 2, (k - 1) / 2, k / 2];
    let only: Option<usize> = std::env::var("FER_BENCH_M").ok().and_then(|v| v.parse().ok());
    for m in [0usize, 2, 3, 4].into_iter().filter(|m| only.is_none_or(|o| o == *m)) {
    let wino = m > 0;
    println!(
        "{:<24} {:>9} {:>9} {:>9} | GFLOP/s (direct-conv equivalent) fwd / dx / dw",
        if wino { format!("raw winograd F({m},{k})") } else { "raw im2col".to_string() },
        "fwd",
        "dx",
        "dw"
    );
    let mut total = 0.0;
    for (i, (&side, &(c, o))) in sides.iter().zip(chans).enumerate() {
        let conv2d_fwd = |g: &conv::Geom, x: &[f32], w: &[f32]| {
            if wino { winograd::conv2d_fwd(g, m, x, w) } else { conv::conv2d_fwd(g, x, w) }
        };
        let conv2d_bwd_input = |g: &conv::Geom, x: &[f32], w: &[f32]| {
            if wino { winograd::conv2d_bwd_input(g, m, x, w) } else { conv::conv2d_bwd_input(g, x, w) }
        };
        let conv2d_bwd_weight = |g: &conv::Geom, x: &[f32], w: &[f32]| {
            if wino { winograd::conv2d_bwd_weight(g, m, x, w) } else { conv::conv2d_bwd_weight(g, x, w) }
        };
        let g = conv::Geom::new(&[n, c, side, side], &[o, c, k, k], pad, 1).unwrap();
        let x: Vec<f32> = (0..n * c * side * side).map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5).collect();
        let w: Vec<f32> = (0..o * c * k * k).map(|i| ((i * 104729) % 1000) as f32 * 1e-3 - 0.5).collect();
        // Best process CPU time / threads: robust to other processes
        // sharing the cores (wall time is not).
        let best = |f: &dyn Fn() -> Vec<f32>| {
            let mut b = f64::MAX;
            for _ in 0..iters + 1 {
                let t = cpu_time();
                std::hint::black_box(f());
                b = b.min((cpu_time() - t) / rayon::current_num_threads() as f64);
            }
            b
        };
        let y = conv2d_fwd(&g, &x, &w);
        let tf = best(&|| conv2d_fwd(&g, &x, &w));
        let tx = if i > 0 { best(&|| conv2d_bwd_input(&g, &y, &w)) } else { 0.0 };
        let tw = best(&|| conv2d_bwd_weight(&g, &x, &y));
        total += tf + tx + tw;
        let gf = g.flops() / 1e9;
        println!(
            "{:<24} {:>7.1}ms {:>7.1}ms {:>7.1}ms | {:.0} / {:.0} / {:.0}",
            format!("conv{} {c}->{o} @{side}", i + 1),
            tf * 1e3,
            tx * 1e3,
            tw * 1e3,
            gf / tf,
            if tx > 0.0 { gf / tx } else { 0.0 },
            gf / tw
        );
    }
    println!("total {:.1} ms ({:.0} img/s) [CPU time / threads]", total * 1e3, n as f64 / total);
    }
}

/// Process CPU time in seconds (all threads).
fn cpu_time() -> f64 {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clk: i32, ts: *mut Timespec) -> i32;
    }
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: valid pointer; CLOCK_PROCESS_CPUTIME_ID = 2.
    unsafe { clock_gettime(2, &mut ts) };
    ts.sec as f64 + ts.nsec as f64 * 1e-9
}
