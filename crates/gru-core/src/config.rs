//! `GruConfig`: every argument of `keras.layers.GRU`, with Keras' defaults, and its Keras
//! JSON (`get_config` / `from_config`).

use crate::activation::Activation;
use crate::constraint::Constraint;
use crate::error::{invalid, GruError, Result};
use crate::initializer::Initializer;
use crate::keras_object::write_object;
use crate::regularizer::Regularizer;
use serde_json::{Map, Value};

/// Whether to use cuDNN (Keras' `use_cudnn`: `"auto"`, `True`, `False`). Not serialized by
/// `get_config`, as in Keras.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UseCudnn {
    /// Use cuDNN when every condition holds, else the loop.
    #[default]
    Auto,
    /// Use cuDNN or fail with an error that names the failed condition.
    Force,
    /// Never use cuDNN.
    Never,
}

/// Keras' legacy `implementation` argument (accepted, not serialized). `1` computes each gate
/// with its own matmul and draws one dropout mask per gate; `2` (and `0`) fuses them. A
/// `recurrent_dropout > 0` switches Keras to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Implementation {
    /// Per-gate matmuls, three dropout masks per kind.
    One,
    /// Fused matmuls, one dropout mask per kind (Keras' default; `0` means this too).
    #[default]
    Two,
}

/// A Keras dtype policy (`"float32"`, `"float64"`, `"mixed_float16"`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DTypePolicy {
    /// The policy name as Keras writes it.
    pub name: String,
}

impl DTypePolicy {
    /// The dtype of the weights: the second half of `mixed_*` policies is the compute dtype,
    /// the variables stay float32.
    pub fn variable_dtype(&self) -> &str {
        if self.is_mixed() {
            "float32"
        } else {
            &self.name
        }
    }

    /// Whether this is a mixed precision policy (`mixed_float16`, `mixed_bfloat16`): float32
    /// variables, computation in the half type.
    ///
    /// ```
    /// let c = gru_core::GruConfig::from_keras_str(r#"{"units": 1, "dtype": "mixed_bfloat16"}"#)?;
    /// assert!(c.dtype.is_mixed());
    /// assert_eq!(c.dtype.compute_dtype(), "bfloat16");
    /// # Ok::<(), gru_core::GruError>(())
    /// ```
    pub fn is_mixed(&self) -> bool {
        self.name.starts_with("mixed_")
    }

    /// The dtype the layer computes in.
    pub fn compute_dtype(&self) -> &str {
        self.name.strip_prefix("mixed_").unwrap_or(&self.name)
    }

    /// Reads a layer config's `dtype` entry: a policy name, a serialized `DTypePolicy`, or
    /// null (float32). Unknown policies are an error naming what came.
    ///
    /// ```
    /// use gru_core::DTypePolicy;
    /// let p = DTypePolicy::from_keras_value(&serde_json::json!({
    ///     "module": "keras", "class_name": "DTypePolicy",
    ///     "config": {"name": "mixed_float16"}, "registered_name": null
    /// }))?;
    /// assert_eq!((p.variable_dtype(), p.compute_dtype()), ("float32", "float16"));
    /// assert!(DTypePolicy::from_keras_value(&serde_json::json!("int8")).is_err());
    /// # Ok::<(), gru_core::GruError>(())
    /// ```
    pub fn from_keras_value(v: &Value) -> Result<DTypePolicy> {
        let name = match v {
            Value::Null => "float32".to_string(),
            Value::String(s) => s.clone(),
            Value::Object(m) => {
                let class = m.get("class_name").and_then(Value::as_str).unwrap_or("");
                if !matches!(class, "DTypePolicy" | "FloatDTypePolicy") {
                    return Err(GruError::UnknownIdentifier {
                        kind: "dtype policy",
                        key: "dtype".into(),
                        got: v.to_string(),
                    });
                }
                m.get("config")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("dtype", "a DTypePolicy with config.name", v))?
                    .to_string()
            }
            other => return Err(invalid("dtype", "a dtype policy name or dict", other)),
        };
        const OK: &[&str] = &[
            "float16",
            "float32",
            "float64",
            "bfloat16",
            "mixed_float16",
            "mixed_bfloat16",
        ];
        if !OK.contains(&name.as_str()) {
            return Err(GruError::UnknownIdentifier {
                kind: "dtype policy",
                key: "dtype".into(),
                got: format!("{name:?}"),
            });
        }
        Ok(DTypePolicy { name })
    }

    fn to_keras_value(&self) -> Value {
        let mut c = Map::new();
        c.insert("name".into(), Value::from(self.name.clone()));
        let mut v = write_object("keras", "DTypePolicy", c);
        // A dtype policy's module is "keras", as Keras writes it.
        v["module"] = Value::from("keras");
        v
    }
}

impl Default for DTypePolicy {
    fn default() -> Self {
        DTypePolicy {
            name: "float32".into(),
        }
    }
}

/// Every argument of `keras.layers.GRU` (Keras 3), with Keras' defaults.
///
/// ```
/// use gru_core::GruConfig;
/// let cfg = GruConfig::new(4);
/// assert!(cfg.reset_after && cfg.use_bias);
/// let json = cfg.to_keras_json();
/// assert_eq!(json["units"], 4);
/// assert_eq!(GruConfig::from_keras_json(&json).unwrap(), cfg);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GruConfig {
    /// Dimensionality of the output space (> 0).
    pub units: usize,
    /// Candidate activation (default tanh).
    pub activation: Activation,
    /// Gate activation (default sigmoid).
    pub recurrent_activation: Activation,
    /// Whether the layer has a bias (default true).
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
    /// Regularizer of the layer's outputs.
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
    /// Seed of the dropout generator.
    pub seed: Option<u64>,
    /// Return the whole sequence instead of the last output.
    pub return_sequences: bool,
    /// Also return the final state.
    pub return_state: bool,
    /// Process the sequence backwards (outputs in processing order).
    pub go_backwards: bool,
    /// Keep the final state as the next call's initial state.
    pub stateful: bool,
    /// Unroll the loop (same results).
    pub unroll: bool,
    /// Reset gate after the recurrent matmul (cuDNN-compatible, default true).
    pub reset_after: bool,
    /// cuDNN use (not serialized).
    pub use_cudnn: UseCudnn,
    /// Masked steps output zeros instead of the previous output.
    pub zero_output_for_mask: bool,
    /// Legacy implementation mode (not serialized).
    pub implementation: Implementation,
    /// Layer name.
    pub name: String,
    /// Whether the weights are trainable.
    pub trainable: bool,
    /// Dtype policy.
    pub dtype: DTypePolicy,
    /// ONNX's `clip`: every gate pre-activation is clamped to `[-clip, clip]` before its
    /// activation. Not a Keras argument: written as `cell_clip` only when set (Keras'
    /// `from_config` rejects that key, so nothing is lost silently).
    pub cell_clip: Option<f64>,
}

/// The largest `units`: sizes go to cuDNN and the kernels as 32-bit ints, and every
/// `3 * units` and `units * 3 * units` stays within `usize`.
pub const MAX_UNITS: usize = i32::MAX as usize;

const KEYS: &[&str] = &[
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
    "activity_regularizer",
    "kernel_constraint",
    "recurrent_constraint",
    "bias_constraint",
    "dropout",
    "recurrent_dropout",
    "seed",
    "return_sequences",
    "return_state",
    "go_backwards",
    "stateful",
    "unroll",
    "reset_after",
    "use_cudnn",
    "zero_output_for_mask",
    "cell_clip",
    "implementation",
    "name",
    "trainable",
    "dtype",
    // Accepted by Keras' base Layer and ignored there too (with a warning).
    "autocast",
    "input_dim",
    "input_shape",
];

impl GruConfig {
    /// `GRU(units)` with every other argument at Keras' default.
    pub fn new(units: usize) -> GruConfig {
        GruConfig {
            units,
            activation: Activation::Tanh,
            recurrent_activation: Activation::Sigmoid,
            use_bias: true,
            kernel_initializer: Initializer::glorot_uniform(),
            recurrent_initializer: Initializer::orthogonal(),
            bias_initializer: Initializer::Zeros,
            kernel_regularizer: None,
            recurrent_regularizer: None,
            bias_regularizer: None,
            activity_regularizer: None,
            kernel_constraint: None,
            recurrent_constraint: None,
            bias_constraint: None,
            dropout: 0.0,
            recurrent_dropout: 0.0,
            seed: None,
            return_sequences: false,
            return_state: false,
            go_backwards: false,
            stateful: false,
            unroll: false,
            reset_after: true,
            use_cudnn: UseCudnn::Auto,
            zero_output_for_mask: false,
            cell_clip: None,
            implementation: Implementation::Two,
            name: "gru".into(),
            trainable: true,
            dtype: DTypePolicy::default(),
        }
    }

    /// Checks what Keras' constructor checks: `units > 0`, finite dropout rates (then clamped
    /// into [0, 1], as Keras does).
    pub fn validate(&mut self) -> Result<()> {
        if self.units == 0 || self.units > MAX_UNITS {
            return Err(invalid(
                "units",
                "a positive integer up to 2147483647",
                self.units,
            ));
        }
        for (key, reg) in [
            ("kernel_regularizer", &self.kernel_regularizer),
            ("recurrent_regularizer", &self.recurrent_regularizer),
            ("bias_regularizer", &self.bias_regularizer),
            ("activity_regularizer", &self.activity_regularizer),
        ] {
            if let Some(r) = reg {
                r.validate(key)?;
            }
        }
        for (key, c) in [
            ("kernel_constraint", &self.kernel_constraint),
            ("recurrent_constraint", &self.recurrent_constraint),
            ("bias_constraint", &self.bias_constraint),
        ] {
            if let Some(c) = c {
                c.validate(key)?;
            }
        }
        if let Some(c) = self.cell_clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(invalid("cell_clip", "a positive finite float or none", c));
        }
        for (key, v) in [
            ("dropout", &mut self.dropout),
            ("recurrent_dropout", &mut self.recurrent_dropout),
        ] {
            if !v.is_finite() {
                return Err(invalid(key, "a float in [0, 1]", *v));
            }
            *v = v.clamp(0.0, 1.0);
        }
        Ok(())
    }

    /// The implementation Keras runs: 1 whenever `recurrent_dropout != 0`.
    pub fn effective_implementation(&self) -> Implementation {
        if self.recurrent_dropout != 0.0 {
            Implementation::One
        } else {
            self.implementation
        }
    }

    /// Shape of the bias: `(2, 3u)` with reset_after, `(3u,)` without, none without bias.
    pub fn bias_shape(&self) -> Option<Vec<usize>> {
        if !self.use_bias {
            None
        } else if self.reset_after {
            Some(vec![2, 3 * self.units])
        } else {
            Some(vec![3 * self.units])
        }
    }

    /// Exactly what Keras' `GRU.get_config()` returns for this layer.
    pub fn to_keras_json(&self) -> Value {
        let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        put("name", Value::from(self.name.clone()));
        put("trainable", Value::from(self.trainable));
        put("dtype", self.dtype.to_keras_value());
        put("return_sequences", Value::from(self.return_sequences));
        put("return_state", Value::from(self.return_state));
        put("go_backwards", Value::from(self.go_backwards));
        put("stateful", Value::from(self.stateful));
        put("unroll", Value::from(self.unroll));
        put(
            "zero_output_for_mask",
            Value::from(self.zero_output_for_mask),
        );
        put("units", Value::from(self.units));
        put("activation", self.activation.to_keras_value());
        put(
            "recurrent_activation",
            self.recurrent_activation.to_keras_value(),
        );
        put("use_bias", Value::from(self.use_bias));
        put(
            "kernel_initializer",
            self.kernel_initializer.to_keras_value(),
        );
        put(
            "recurrent_initializer",
            self.recurrent_initializer.to_keras_value(),
        );
        put("bias_initializer", self.bias_initializer.to_keras_value());
        put(
            "kernel_regularizer",
            opt(self.kernel_regularizer.map(|r| r.to_keras_value())),
        );
        put(
            "recurrent_regularizer",
            opt(self.recurrent_regularizer.map(|r| r.to_keras_value())),
        );
        put(
            "bias_regularizer",
            opt(self.bias_regularizer.map(|r| r.to_keras_value())),
        );
        put(
            "activity_regularizer",
            opt(self.activity_regularizer.map(|r| r.to_keras_value())),
        );
        put(
            "kernel_constraint",
            opt(self
                .kernel_constraint
                .as_ref()
                .map(Constraint::to_keras_value)),
        );
        put(
            "recurrent_constraint",
            opt(self
                .recurrent_constraint
                .as_ref()
                .map(Constraint::to_keras_value)),
        );
        put(
            "bias_constraint",
            opt(self
                .bias_constraint
                .as_ref()
                .map(Constraint::to_keras_value)),
        );
        put("dropout", Value::from(self.dropout));
        put("recurrent_dropout", Value::from(self.recurrent_dropout));
        put("reset_after", Value::from(self.reset_after));
        put("seed", self.seed.map(Value::from).unwrap_or(Value::Null));
        if let Some(c) = self.cell_clip {
            put("cell_clip", Value::from(c));
        }
        Value::Object(m)
    }

    /// Builds the config the way Keras' `GRU.from_config` does: every constructor argument
    /// (plain identifier strings, dicts with or without `module`, dtype strings), the legacy
    /// `implementation` and `use_cudnn` keys; an unknown key, a missing `units` or a value
    /// Keras rejects is an error that names the key.
    pub fn from_keras_json(json: &Value) -> Result<GruConfig> {
        let map = json
            .as_object()
            .ok_or_else(|| invalid("config", "a JSON object", json))?;
        if let Some(k) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(GruError::UnknownConfigKey { key: k.clone() });
        }
        let units_v = map.get("units").ok_or_else(|| GruError::MissingConfigKey {
            key: "units".into(),
        })?;
        let units = units_v
            .as_u64()
            .filter(|&u| u > 0)
            .ok_or_else(|| invalid("units", "a positive integer", units_v))?;
        let mut c = GruConfig::new(units as usize);
        let r = JsonConfig { map };
        r.read_objects(&mut c)?;
        r.read_flags(&mut c)?;
        c.dropout = r.float("dropout", 0.0)?;
        c.recurrent_dropout = r.float("recurrent_dropout", 0.0)?;
        c.seed = match r.get("seed") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| invalid("seed", "a non-negative integer or null", v))?,
            ),
        };
        c.use_cudnn = r.use_cudnn()?;
        c.cell_clip = match r.get("cell_clip") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .ok_or_else(|| invalid("cell_clip", "a positive float or null", v))?,
            ),
        };
        c.implementation = r.implementation()?;
        if let Some(v) = r.get("name") {
            c.name = match v {
                Value::String(s) => s.clone(),
                Value::Null => "gru".into(),
                other => return Err(invalid("name", "a string", other)),
            };
        }
        if let Some(v) = r.get("dtype") {
            c.dtype = DTypePolicy::from_keras_value(v)?;
        }
        c.validate()?;
        Ok(c)
    }

    /// Parses a Keras config from JSON text.
    pub fn from_keras_str(text: &str) -> Result<GruConfig> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| invalid("config", "valid JSON", e))?;
        GruConfig::from_keras_json(&v)
    }
}

/// Reads the values of a Keras GRU config dict, each with Keras' default when absent.
struct JsonConfig<'a> {
    map: &'a serde_json::Map<String, Value>,
}

impl JsonConfig<'_> {
    fn get(&self, k: &str) -> Option<&Value> {
        self.map.get(k)
    }

    fn boolean(&self, k: &str, default: bool) -> Result<bool> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.as_bool().ok_or_else(|| invalid(k, "a boolean", v)),
        }
    }

    fn float(&self, k: &str, default: f64) -> Result<f64> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v.as_f64().ok_or_else(|| invalid(k, "a float", v)),
        }
    }

    /// Activations, initializers, regularizers and constraints.
    fn read_objects(&self, c: &mut GruConfig) -> Result<()> {
        if let Some(v) = self.get("activation") {
            c.activation = Activation::from_keras_value("activation", v)?;
        }
        if let Some(v) = self.get("recurrent_activation") {
            c.recurrent_activation = Activation::from_keras_value("recurrent_activation", v)?;
        }
        for (k, slot) in [
            ("kernel_initializer", &mut c.kernel_initializer),
            ("recurrent_initializer", &mut c.recurrent_initializer),
            ("bias_initializer", &mut c.bias_initializer),
        ] {
            if let Some(v) = self.get(k) {
                *slot = Initializer::from_keras_value(k, v)?;
            }
        }
        for (k, slot) in [
            ("kernel_regularizer", &mut c.kernel_regularizer),
            ("recurrent_regularizer", &mut c.recurrent_regularizer),
            ("bias_regularizer", &mut c.bias_regularizer),
            ("activity_regularizer", &mut c.activity_regularizer),
        ] {
            if let Some(v) = self.get(k) {
                *slot = Regularizer::from_keras_value(k, v)?;
            }
        }
        for (k, slot) in [
            ("kernel_constraint", &mut c.kernel_constraint),
            ("recurrent_constraint", &mut c.recurrent_constraint),
            ("bias_constraint", &mut c.bias_constraint),
        ] {
            if let Some(v) = self.get(k) {
                *slot = Constraint::from_keras_value(k, v)?;
            }
        }
        Ok(())
    }

    /// The boolean arguments.
    fn read_flags(&self, c: &mut GruConfig) -> Result<()> {
        c.use_bias = self.boolean("use_bias", true)?;
        c.return_sequences = self.boolean("return_sequences", false)?;
        c.return_state = self.boolean("return_state", false)?;
        c.go_backwards = self.boolean("go_backwards", false)?;
        c.stateful = self.boolean("stateful", false)?;
        c.unroll = self.boolean("unroll", false)?;
        c.reset_after = self.boolean("reset_after", true)?;
        c.zero_output_for_mask = self.boolean("zero_output_for_mask", false)?;
        c.trainable = self.boolean("trainable", true)?;
        // Accepted and checked, without effect here (Candle has no autocast scope).
        self.boolean("autocast", true)?;
        Ok(())
    }

    fn use_cudnn(&self) -> Result<UseCudnn> {
        match self.get("use_cudnn") {
            None => Ok(UseCudnn::Auto),
            Some(Value::String(s)) if s == "auto" => Ok(UseCudnn::Auto),
            Some(Value::Bool(true)) => Ok(UseCudnn::Force),
            Some(Value::Bool(false)) => Ok(UseCudnn::Never),
            Some(v) => Err(invalid("use_cudnn", "one of \"auto\", true, false", v)),
        }
    }

    fn implementation(&self) -> Result<Implementation> {
        match self.get("implementation") {
            None | Some(Value::Null) => Ok(Implementation::Two),
            Some(v) => match v.as_i64() {
                Some(1) => Ok(Implementation::One),
                Some(0) | Some(2) => Ok(Implementation::Two),
                _ => Err(invalid("implementation", "0, 1 or 2", v)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn units_zero_and_unknown_key_are_errors() {
        let e = GruConfig::from_keras_json(&json!({"units": 0})).unwrap_err();
        assert!(matches!(e, GruError::InvalidConfig { ref key, .. } if key == "units"));
        let e = GruConfig::from_keras_json(&json!({"units": 2, "time_major": true})).unwrap_err();
        assert_eq!(
            e,
            GruError::UnknownConfigKey {
                key: "time_major".into()
            }
        );
        let e = GruConfig::from_keras_json(&json!({"activation": "tanh"})).unwrap_err();
        assert!(matches!(e, GruError::MissingConfigKey { .. }));
        assert!(GruConfig::new(0).validate().is_err());
    }

    #[test]
    fn dropout_is_clamped_and_implementation_switches() {
        let c = GruConfig::from_keras_json(
            &json!({"units": 2, "dropout": 1.5, "recurrent_dropout": 0.2}),
        )
        .unwrap();
        assert_eq!(c.dropout, 1.0);
        assert_eq!(c.effective_implementation(), Implementation::One);
        let c = GruConfig::from_keras_json(&json!({"units": 2, "implementation": 0})).unwrap();
        assert_eq!(c.effective_implementation(), Implementation::Two);
    }

    #[test]
    fn use_cudnn_forms() {
        let f = |v: Value| GruConfig::from_keras_json(&json!({"units": 1, "use_cudnn": v}));
        assert_eq!(f(json!(true)).unwrap().use_cudnn, UseCudnn::Force);
        assert_eq!(f(json!(false)).unwrap().use_cudnn, UseCudnn::Never);
        assert_eq!(f(json!("auto")).unwrap().use_cudnn, UseCudnn::Auto);
        assert!(f(json!("yes")).is_err());
        assert!(!GruConfig::new(1)
            .to_keras_json()
            .as_object()
            .unwrap()
            .contains_key("use_cudnn"));
    }

    #[test]
    fn dtype_policies() {
        let c = GruConfig::from_keras_json(&json!({"units": 1, "dtype": "mixed_float16"})).unwrap();
        assert_eq!(c.dtype.variable_dtype(), "float32");
        assert_eq!(c.dtype.compute_dtype(), "float16");
        assert!(GruConfig::from_keras_json(&json!({"units": 1, "dtype": "int7"})).is_err());
    }
}
