//! Keras' RNN dropout masks: drawn once per call, shared by every timestep, inverted
//! (kept values scaled by 1/(1-rate)), and seeded by the layer's `seed`.

use candle_core::{DType, Device, Result, Tensor};
use rand::rngs::StdRng;
use rand::Rng;

/// Restarts a layer's random stream from `seed`.
pub(crate) fn reseed(rng: &std::sync::Mutex<StdRng>, seed: u64) -> crate::error::Result<()> {
    use rand::SeedableRng;
    let mut rng = rng.lock().map_err(|_| {
        crate::error::Error::Candle(candle_core::Error::Msg("layer rng poisoned".into()))
    })?;
    *rng = StdRng::seed_from_u64(seed);
    Ok(())
}

/// Whether Keras applies a dropout rate in this call (`training` and `0 < rate < 1`).
pub fn active(rate: f64, training: bool) -> bool {
    training && rate > 0.0 && rate < 1.0
}

/// `count` masks of shape (batch, width): each entry 0 with probability `rate`, else
/// `1 / (1 - rate)`.
pub fn masks(
    rng: &mut StdRng,
    count: usize,
    batch: usize,
    width: usize,
    rate: f64,
    dtype: DType,
    device: &Device,
) -> Result<Vec<Tensor>> {
    let keep = 1.0 / (1.0 - rate);
    (0..count)
        .map(|_| {
            let v: Vec<f64> = (0..batch * width)
                .map(|_| {
                    if rng.random::<f64>() < rate {
                        0.0
                    } else {
                        keep
                    }
                })
                .collect();
            Tensor::from_vec(v, (batch, width), device)?.to_dtype(dtype)
        })
        .collect()
}
