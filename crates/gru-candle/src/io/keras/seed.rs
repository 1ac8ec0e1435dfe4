//! [`KerasModel::reseed`]: one seed for every random layer of a model, so that a training
//! run repeats exactly.

use super::{KerasModel, ModelLayer};
use crate::error::Result;

/// SplitMix64: well-spread seeds from one seed and a counter.
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl KerasModel {
    /// Restarts the random stream of every layer that draws (Dropout, SpatialDropout1D,
    /// the GRUs' dropout and recurrent dropout, GaussianNoise, GaussianDropout,
    /// AlphaDropout, the attention layers' dropout; in nested models, Bidirectional,
    /// TimeDistributed and stacked cells too) from `seed` and the layer's place in the
    /// model, seeded in its config or not: the training run that follows repeats exactly.
    /// The draws are not TensorFlow's.
    pub fn reseed(&self, seed: u64) -> Result<()> {
        let mut k = 0;
        for (_, layer) in &self.layers {
            reseed_layer(layer, seed, &mut k)?;
        }
        Ok(())
    }
}

fn reseed_layer(layer: &ModelLayer, seed: u64, k: &mut u64) -> Result<()> {
    let mut next = || {
        *k += 1;
        mix(seed, *k)
    };
    match layer {
        ModelLayer::Gru(g) => g.reseed(next()),
        ModelLayer::Bidirectional(b) => {
            b.forward_layer().reseed(next())?;
            b.backward_layer().reseed(next())
        }
        ModelLayer::StackedGru(s) => s.grus().iter().try_for_each(|g| g.reseed(next())),
        ModelLayer::Dropout(d) => d.reseed(next()),
        ModelLayer::Noise(n) => n.reseed(next()),
        ModelLayer::Attention(a) => a.dropout.reseed(next()),
        ModelLayer::MultiHeadAttention(a) => a.dropout.reseed(next()),
        ModelLayer::TimeDistributed(inner) => reseed_layer(inner, seed, k),
        ModelLayer::Model(m) => {
            let nested = next();
            m.reseed(nested)
        }
        _ => Ok(()),
    }
}
