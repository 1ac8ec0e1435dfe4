//! The layout of the cuDNN op's flat output: `y` (batch, time, units), zeros up to the next
//! [`ALIGN`] bytes, then `hy` (batch, units). `hy` is written by cuDNN and, in stateful calls,
//! handed back to it as the next call's `hx`, so it starts aligned like a buffer of its own.

/// The alignment, in bytes, of every buffer cuDNN gets: that of `cudaMalloc`, which is what
/// PyTorch, TensorFlow and JAX hand to cuDNN (each of their buffers is its own allocation).
pub const ALIGN: usize = 256;

/// Where `hy` starts in the op's flat output, and the output's length, in elements of
/// `elem_bytes` bytes (2, 4 or 8).
///
/// ```
/// use gru_cudnn::output::output_parts;
/// // 2*3*5 f32 = 120 bytes of y: hy starts at byte 256 = element 64.
/// assert_eq!(output_parts(2, 3, 5, 4), (64, 64 + 10));
/// ```
pub fn output_parts(batch: usize, time: usize, units: usize, elem_bytes: usize) -> (usize, usize) {
    let y_bytes = batch * time * units * elem_bytes;
    let hy = y_bytes.div_ceil(ALIGN) * ALIGN / elem_bytes;
    (hy, hy + batch * units)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hy_starts_aligned_right_after_y() {
        for elem in [2, 4, 8] {
            for (b, t, u) in [(1, 1, 1), (2, 3, 5), (3, 7, 9), (64, 100, 256), (5, 1, 13)] {
                let (hy, len) = output_parts(b, t, u, elem);
                assert_eq!(hy * elem % ALIGN, 0, "{elem} {b} {t} {u}");
                assert!(hy >= b * t * u && (hy - b * t * u) * elem < ALIGN);
                assert_eq!(len, hy + b * u);
            }
        }
    }
}
