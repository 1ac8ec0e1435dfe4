//! How much memory a layer may ask for. A size that came from a config, a file or a caller
//! is checked against these limits before anything is allocated: past them it is a typed
//! [`GruError::TooLarge`], never an abort of the process on a failed allocation.

use crate::error::{Error, Result};
use gru_core::GruError;

/// The limits a layer is built and loaded under. Raise them for very large layers.
///
/// ```
/// use gru_candle::Limits;
/// let roomy = Limits { max_weight_bytes: 64 << 30, ..Limits::default() };
/// assert!(roomy.max_weight_bytes > Limits::default().max_weight_bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most bytes one layer's weights (kernel, recurrent kernel, bias) may take in their
    /// dtype, counting the f64 values an initializer draws first. Default 8 GiB.
    pub max_weight_bytes: u64,
    /// The most bytes a member of a model archive (`config.json`, `model.weights.h5`) may
    /// inflate to. Default 8 GiB.
    pub max_member_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_weight_bytes: 8 << 30,
            max_member_bytes: 8 << 30,
        }
    }
}

impl Limits {
    /// The bytes of a layer's weights with `input_dim` features and `units`, in elements of
    /// `elem_bytes` (and the f64 draws of its initializers): an error past
    /// `max_weight_bytes`, or when the count does not even fit in 128 bits.
    pub fn check_layer(
        &self,
        input_dim: usize,
        units: usize,
        bias_rows: usize,
        elem_bytes: usize,
    ) -> Result<()> {
        let u = units as u128;
        let elements = (input_dim as u128 + u)
            .checked_mul(3 * u)
            .and_then(|w| w.checked_add(bias_rows as u128 * 3 * u));
        let needed = elements.and_then(|e| e.checked_mul(elem_bytes.max(8) as u128));
        match needed {
            Some(b) if b <= self.max_weight_bytes as u128 => Ok(()),
            other => Err(Error::Gru(GruError::TooLarge {
                what: format!("a GRU layer's weights (input_dim {input_dim}, units {units})"),
                limit: format!("{} bytes (Limits::max_weight_bytes)", self.max_weight_bytes),
                needed: match other {
                    Some(b) => format!("{b} bytes"),
                    None => "more than 2^128 bytes".into(),
                },
            })),
        }
    }
}
