//! `GruCellConfig`: every argument of `keras.layers.GRUCell` (one step of the GRU), with
//! Keras' defaults, and its Keras JSON (`get_config` / `from_config`).
//!
//! A `GRU` layer is Keras' `RNN` over a `GRUCell`: the cell holds the weights and the gate
//! math, the layer the time loop (sequences, masks, state, `go_backwards`). The cell's
//! arguments are the layer's minus the loop's, so the JSON is read and written through
//! [`GruConfig`] and only the cell's keys are kept.

use crate::activation::Activation;
use crate::config::{DTypePolicy, GruConfig, Implementation};
use crate::constraint::Constraint;
use crate::error::{invalid, GruError, Result};
use crate::initializer::Initializer;
use crate::regularizer::Regularizer;
use serde_json::{Map, Value};

/// Every argument of `keras.layers.GRUCell` (Keras 3), with Keras' defaults.
///
/// ```
/// use gru_core::{GruCellConfig, GruConfig};
/// let cell = GruCellConfig::from_keras_str(r#"{"units": 4, "reset_after": false}"#)?;
/// assert_eq!(cell.name, "gru_cell");
/// assert_eq!(cell.to_keras_json()["units"], 4);
/// // A GRU layer's cell (Keras' `gru.cell`), and the layer that runs a cell.
/// assert_eq!(GruConfig::new(4).cell_config().units, 4);
/// assert!(!cell.to_gru_config().reset_after);
/// # Ok::<(), gru_core::GruError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GruCellConfig {
    /// Dimensionality of the state and output (> 0).
    pub units: usize,
    /// Candidate activation (default tanh).
    pub activation: Activation,
    /// Gate activation (default sigmoid).
    pub recurrent_activation: Activation,
    /// Whether the cell has a bias (default true).
    pub use_bias: bool,
    /// Kernel initializer (default glorot_uniform).
    pub kernel_initializer: Initializer,
    /// Recurrent kernel initializer (default orthogonal).
    pub recurrent_initializer: Initializer,
    /// Bias initializer (default zeros).
    pub bias_initializer: Initializer,
    /// Kernel regularizer.
    pub kernel_regularizer: Option<Regularizer>,
    /// Recurrent kernel regularizer.
    pub recurrent_regularizer: Option<Regularizer>,
    /// Bias regularizer.
    pub bias_regularizer: Option<Regularizer>,
    /// Regularizer of each step's output (Keras' base `Layer` argument; written only when
    /// set). Keras adds its loss for each of the two tensors a step returns, the output and
    /// the new state, each divided by the batch size.
    pub activity_regularizer: Option<Regularizer>,
    /// Kernel constraint.
    pub kernel_constraint: Option<Constraint>,
    /// Recurrent kernel constraint.
    pub recurrent_constraint: Option<Constraint>,
    /// Bias constraint.
    pub bias_constraint: Option<Constraint>,
    /// Input dropout rate, clamped to [0, 1].
    pub dropout: f64,
    /// Recurrent dropout rate, clamped to [0, 1].
    pub recurrent_dropout: f64,
    /// Reset gate after the recurrent matmul (default true).
    pub reset_after: bool,
    /// Seed of the dropout generator.
    pub seed: Option<u64>,
    /// Legacy implementation mode (accepted, not serialized, as in Keras).
    pub implementation: Implementation,
    /// Cell name (Keras' default `gru_cell`).
    pub name: String,
    /// Whether the weights are trainable.
    pub trainable: bool,
    /// Dtype policy.
    pub dtype: DTypePolicy,
}

/// The keys `GRUCell.get_config()` writes, in its order.
const SERIALIZED: &[&str] = &[
    "name",
    "trainable",
    "dtype",
    "units",
    "activation",
    "recurrent_activation",
    "use_bias",
    "kernel_initializer",
    "recurrent_initializer",
    "bias_initializer",
    "kernel_regularizer",
    "recurrent_regularizer",
    "bias_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "reset_after",
    "seed",
];

/// The keys `GRUCell.from_config` takes beyond those it writes.
const ACCEPTED: &[&str] = &[
    "activity_regularizer",
    "implementation",
    "autocast",
    "input_dim",
    "input_shape",
];

/// Keras' name of a cell that was not given one (and of every `GRU` layer's cell).
pub const DEFAULT_CELL_NAME: &str = "gru_cell";

impl GruCellConfig {
    /// `GRUCell(units)` with every other argument at Keras' default.
    pub fn new(units: usize) -> GruCellConfig {
        GruConfig::new(units).cell_config()
    }

    /// Checks what Keras' constructor checks: `units > 0`, finite dropout rates (then
    /// clamped into [0, 1]), valid regularizers and constraints.
    pub fn validate(&mut self) -> Result<()> {
        let mut gru = self.to_gru_config();
        gru.activity_regularizer = self.activity_regularizer;
        gru.validate()?;
        self.dropout = gru.dropout;
        self.recurrent_dropout = gru.recurrent_dropout;
        Ok(())
    }

    /// Shape of the bias: `(2, 3u)` with reset_after, `(3u,)` without, none without bias.
    pub fn bias_shape(&self) -> Option<Vec<usize>> {
        self.to_gru_config().bias_shape()
    }

    /// The implementation Keras runs: 1 whenever `recurrent_dropout != 0`.
    pub fn effective_implementation(&self) -> Implementation {
        self.to_gru_config().effective_implementation()
    }

    /// The `GRU` layer that runs this cell over a sequence (Keras' `RNN(cell)`, which is
    /// what `GRU` is): the cell's arguments with the loop's at their defaults (the last
    /// output only, no state returned, forwards), named as the cell. A cell's
    /// `activity_regularizer` is not the layer's (Keras applies it per step, and fails to
    /// run an `RNN` over such a cell in a model), so it is not carried over.
    pub fn to_gru_config(&self) -> GruConfig {
        let mut g = GruConfig::new(self.units);
        g.activation = self.activation;
        g.recurrent_activation = self.recurrent_activation;
        g.use_bias = self.use_bias;
        g.kernel_initializer = self.kernel_initializer.clone();
        g.recurrent_initializer = self.recurrent_initializer.clone();
        g.bias_initializer = self.bias_initializer.clone();
        g.kernel_regularizer = self.kernel_regularizer;
        g.recurrent_regularizer = self.recurrent_regularizer;
        g.bias_regularizer = self.bias_regularizer;
        g.kernel_constraint = self.kernel_constraint.clone();
        g.recurrent_constraint = self.recurrent_constraint.clone();
        g.bias_constraint = self.bias_constraint.clone();
        g.dropout = self.dropout;
        g.recurrent_dropout = self.recurrent_dropout;
        g.reset_after = self.reset_after;
        g.seed = self.seed;
        g.implementation = self.implementation;
        g.name = self.name.clone();
        g.trainable = self.trainable;
        g.dtype = self.dtype.clone();
        g
    }

    /// Exactly what Keras' `GRUCell.get_config()` returns for this cell.
    pub fn to_keras_json(&self) -> Value {
        let full = self.to_gru_config().to_keras_json();
        let mut m = Map::new();
        for &k in SERIALIZED {
            m.insert(k.to_string(), full[k].clone());
        }
        if let Some(r) = self.activity_regularizer {
            m.insert("activity_regularizer".into(), r.to_keras_value());
        }
        Value::Object(m)
    }

    /// Builds the config the way Keras' `GRUCell.from_config` does: every constructor
    /// argument (plain identifier strings, dicts with or without `module`, dtype strings)
    /// and the legacy `implementation`; a key the cell does not take (the layer's
    /// `return_sequences`, `go_backwards`, `use_cudnn` ... included),
    /// a missing `units` or a value Keras rejects is an error that names the key.
    pub fn from_keras_json(json: &Value) -> Result<GruCellConfig> {
        let map = json
            .as_object()
            .ok_or_else(|| invalid("config", "a JSON object", json))?;
        let known = |k: &str| SERIALIZED.contains(&k) || ACCEPTED.contains(&k);
        if let Some(k) = map.keys().find(|k| !known(k)) {
            return Err(GruError::UnknownConfigKey { key: k.clone() });
        }
        let gru = GruConfig::from_keras_json(json)?;
        let mut cell = gru.cell_config();
        cell.activity_regularizer = gru.activity_regularizer;
        if let Some(Value::String(name)) = map.get("name") {
            cell.name = name.clone();
        }
        Ok(cell)
    }

    /// Parses a Keras cell config from JSON text.
    pub fn from_keras_str(text: &str) -> Result<GruCellConfig> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid("config", "valid JSON", e))?;
        GruCellConfig::from_keras_json(&v)
    }
}

impl GruConfig {
    /// The layer's cell, as Keras' `gru.cell` has it: the layer's cell arguments, named
    /// `gru_cell` (Keras names every GRU layer's cell so). The layer's
    /// `activity_regularizer` stays the layer's.
    pub fn cell_config(&self) -> GruCellConfig {
        GruCellConfig {
            units: self.units,
            activation: self.activation,
            recurrent_activation: self.recurrent_activation,
            use_bias: self.use_bias,
            kernel_initializer: self.kernel_initializer.clone(),
            recurrent_initializer: self.recurrent_initializer.clone(),
            bias_initializer: self.bias_initializer.clone(),
            kernel_regularizer: self.kernel_regularizer,
            recurrent_regularizer: self.recurrent_regularizer,
            bias_regularizer: self.bias_regularizer,
            activity_regularizer: None,
            kernel_constraint: self.kernel_constraint.clone(),
            recurrent_constraint: self.recurrent_constraint.clone(),
            bias_constraint: self.bias_constraint.clone(),
            dropout: self.dropout,
            recurrent_dropout: self.recurrent_dropout,
            reset_after: self.reset_after,
            seed: self.seed,
            implementation: self.implementation,
            name: DEFAULT_CELL_NAME.to_string(),
            trainable: self.trainable,
            dtype: self.dtype.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn layer_keys_are_refused_by_name() {
        for key in [
            "return_sequences",
            "go_backwards",
            "stateful",
            "use_cudnn",
            "zero_output_for_mask",
            "cell_clip",
        ] {
            let e = GruCellConfig::from_keras_json(&json!({"units": 2, key: false})).unwrap_err();
            assert_eq!(e, GruError::UnknownConfigKey { key: key.into() });
        }
        let e = GruCellConfig::from_keras_json(&json!({"reset_after": true})).unwrap_err();
        assert!(matches!(e, GruError::MissingConfigKey { .. }));
    }

    #[test]
    fn round_trip_names_and_layer_conversion() {
        let text = r#"{"units": 3, "name": "dec", "dropout": 2.0, "recurrent_dropout": 0.1,
            "implementation": 1, "seed": 7, "kernel_regularizer": "l2", "dtype": "float64"}"#;
        let c = GruCellConfig::from_keras_str(text).unwrap();
        assert_eq!((c.name.as_str(), c.dropout, c.seed), ("dec", 1.0, Some(7)));
        assert_eq!(c.effective_implementation(), Implementation::One);
        let json = c.to_keras_json();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut want = SERIALIZED.to_vec();
        want.sort();
        let mut got = keys.clone();
        got.sort();
        assert_eq!(got, want);
        // `implementation` is not written (as in Keras); everything else comes back.
        let read = GruCellConfig::from_keras_json(&json).unwrap();
        assert_eq!(read.implementation, Implementation::Two);
        assert_eq!(read.effective_implementation(), Implementation::One);
        let c_written = GruCellConfig {
            implementation: Implementation::Two,
            ..c.clone()
        };
        assert_eq!(read, c_written);
        let g = c.to_gru_config();
        assert_eq!((g.name.as_str(), g.units, g.seed), ("dec", 3, Some(7)));
        assert!(!g.return_sequences && !g.return_state && g.activity_regularizer.is_none());
        let mut back = g.cell_config();
        assert_eq!(back.name, DEFAULT_CELL_NAME);
        back.name = "dec".into();
        assert_eq!(back, c);
        // The base Layer's activity_regularizer: read, written only when set.
        let c =
            GruCellConfig::from_keras_str(r#"{"units": 2, "activity_regularizer": "l2"}"#).unwrap();
        assert!(c.activity_regularizer.is_some());
        assert!(c.to_keras_json()["activity_regularizer"].is_object());
        assert!(c.to_gru_config().activity_regularizer.is_none());
        let mut bad = GruCellConfig::new(2);
        bad.dropout = f64::NAN;
        assert!(bad.validate().is_err());
        assert_eq!(GruCellConfig::new(2).bias_shape(), Some(vec![2, 6]));
    }
}
