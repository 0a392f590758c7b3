//! Loop helpers for the hand-written transforms of [`super::alpha`]: each
//! transform step maps a handful of contiguous streams to a handful of
//! others, element by element.

use super::super::gemm::Elem;

/// `outs[.][j] = f(ins[.][j])` for `j < n` (or `+=` for the `+=` forms).
/// A function, not a loop written in place: its slice parameters tell LLVM
/// that the streams do not overlap (a loop over a dozen slices cut from
/// buffers, or passed in arrays, needs more run-time overlap checks than
/// LLVM will emit, and stays scalar), and cutting them to `n` here drops
/// the bounds checks, so the loop vectorises.
macro_rules! stream_fn {
    ($name:ident, $ni:literal [$($i:ident),+] $op:tt $no:literal [$($o:ident),+]) => {
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        pub(super) fn $name<T: Elem>(n: usize, $($i: &[T],)+ $($o: &mut [T],)+ f: impl Fn([T; $ni]) -> [T; $no]) {
            $(let $i = &$i[..n];)+
            $(let $o = &mut $o[..n];)+
            for j in 0..n {
                let r = f([$($i[j]),+]);
                let mut _k = 0;
                $($o[j] $op r[_k]; _k += 1;)+
            }
        }
    };
}
stream_fn!(stream66, 6 [i0, i1, i2, i3, i4, i5] = 6 [o0, o1, o2, o3, o4, o5]);
stream_fn!(stream66_add, 6 [i0, i1, i2, i3, i4, i5] += 6 [o0, o1, o2, o3, o4, o5]);
stream_fn!(stream64, 6 [i0, i1, i2, i3, i4, i5] = 4 [o0, o1, o2, o3]);
stream_fn!(stream46, 4 [i0, i1, i2, i3] = 6 [o0, o1, o2, o3, o4, o5]);
stream_fn!(stream63, 6 [i0, i1, i2, i3, i4, i5] = 3 [o0, o1, o2]);
stream_fn!(stream36, 3 [i0, i1, i2] = 6 [o0, o1, o2, o3, o4, o5]);
stream_fn!(stream77, 7 [i0, i1, i2, i3, i4, i5, i6] = 7 [o0, o1, o2, o3, o4, o5, o6]);
stream_fn!(stream77_add, 7 [i0, i1, i2, i3, i4, i5, i6] += 7 [o0, o1, o2, o3, o4, o5, o6]);
stream_fn!(stream74, 7 [i0, i1, i2, i3, i4, i5, i6] = 4 [o0, o1, o2, o3]);
stream_fn!(stream47, 4 [i0, i1, i2, i3] = 7 [o0, o1, o2, o3, o4, o5, o6]);

/// `streams!(n, [ins] => [outs], f)`: the [`stream_fn`] for that many streams.
macro_rules! streams {
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident, $i6:ident]
        += [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident, $o6:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream77_add($n, $i0, $i1, $i2, $i3, $i4, $i5, $i6, $o0, $o1, $o2, $o3, $o4, $o5, $o6, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident, $i6:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident, $o6:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream77($n, $i0, $i1, $i2, $i3, $i4, $i5, $i6, $o0, $o1, $o2, $o3, $o4, $o5, $o6, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident, $i6:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream74($n, $i0, $i1, $i2, $i3, $i4, $i5, $i6, $o0, $o1, $o2, $o3, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident, $o6:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream47($n, $i0, $i1, $i2, $i3, $o0, $o1, $o2, $o3, $o4, $o5, $o6, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident]
        += [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream66_add($n, $i0, $i1, $i2, $i3, $i4, $i5, $o0, $o1, $o2, $o3, $o4, $o5, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream66($n, $i0, $i1, $i2, $i3, $i4, $i5, $o0, $o1, $o2, $o3, $o4, $o5, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream64($n, $i0, $i1, $i2, $i3, $i4, $i5, $o0, $o1, $o2, $o3, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident, $i4:ident, $i5:ident]
        => [$o0:ident, $o1:ident, $o2:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream63($n, $i0, $i1, $i2, $i3, $i4, $i5, $o0, $o1, $o2, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident, $i3:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream46($n, $i0, $i1, $i2, $i3, $o0, $o1, $o2, $o3, $o4, $o5, $f)
    };
    ($n:expr, [$i0:ident, $i1:ident, $i2:ident]
        => [$o0:ident, $o1:ident, $o2:ident, $o3:ident, $o4:ident, $o5:ident], $f:expr) => {
        $crate::ops::winograd::streams::stream36($n, $i0, $i1, $i2, $o0, $o1, $o2, $o3, $o4, $o5, $f)
    };
}

/// `let_planes!(buf, base, stride, len => p0, p1, ..)`: `p_k =
/// &buf[base + k * stride..][..len]`; `let_planes!(mut ..)` the same
/// mutably (disjoint, `len <= stride`). Spelt out instead of
/// `array::from_fn`, which LLVM did not always inline in these loops.
macro_rules! let_planes {
    (mut $buf:expr, $base:expr, $stride:expr, $len:expr => $($p:ident),+) => {
        let (stride, len) = ($stride, $len);
        debug_assert!(len <= stride);
        let mut rest = &mut $buf[$base..];
        $(
            let cut = stride.min(rest.len());
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(cut);
            let $p = &mut head[..len];
            rest = tail;
        )+
        let _ = rest;
    };
    ($buf:expr, $base:expr, $stride:expr, $len:expr => $($p:ident),+) => {
        let (stride, len, mut at) = ($stride, $len, $base);
        $(
            let $p = &$buf[at..][..len];
            at += stride;
        )+
        let _ = at;
    };
}
