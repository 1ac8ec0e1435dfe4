//! Initializers to and from Keras' JSON: what `initializers.get` accepts and what
//! `initializers.serialize` writes.

use super::{Distribution, FanMode, Initializer, ScalingPreset, ALIASES};
use crate::error::{invalid, GruError, Result};
use crate::keras_object::{map_of, read_object, write_object, ConfigReader, KerasObject, Num};
use serde_json::{Map, Value};

/// The class names of the `VarianceScaling` presets.
const PRESETS: [(&str, ScalingPreset); 6] = [
    ("GlorotUniform", ScalingPreset::GlorotUniform),
    ("GlorotNormal", ScalingPreset::GlorotNormal),
    ("HeUniform", ScalingPreset::HeUniform),
    ("HeNormal", ScalingPreset::HeNormal),
    ("LecunUniform", ScalingPreset::LecunUniform),
    ("LecunNormal", ScalingPreset::LecunNormal),
];

const MODES: [(&str, FanMode); 3] = [
    ("fan_in", FanMode::FanIn),
    ("fan_out", FanMode::FanOut),
    ("fan_avg", FanMode::FanAvg),
];

const DISTRIBUTIONS: [(&str, Distribution); 3] = [
    ("truncated_normal", Distribution::TruncatedNormal),
    ("untruncated_normal", Distribution::UntruncatedNormal),
    ("uniform", Distribution::Uniform),
];

fn name_of<T: PartialEq + Copy>(table: &[(&'static str, T)], v: T) -> &'static str {
    table.iter().find(|(_, t)| *t == v).map_or("", |(n, _)| n)
}

fn names<T>(table: &[(&'static str, T)]) -> Vec<&'static str> {
    table.iter().map(|(n, _)| *n).collect()
}

fn value_of<T: Copy>(table: &[(&str, T)], name: &str) -> Option<T> {
    table.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

impl Initializer {
    /// Reads what Keras' `initializers.get` accepts: a name (`"glorot_normal"`,
    /// `"RandomUniform"`) or a serialized dict, with or without `module`.
    pub fn from_keras_value(key: &str, value: &Value) -> Result<Initializer> {
        if value.is_null() {
            return Err(GruError::UnknownIdentifier {
                kind: "initializer",
                key: key.to_string(),
                got: "null".into(),
            });
        }
        let obj = read_object("initializer", key, value, ALIASES)?;
        match obj.class_name.as_str() {
            "Zeros" => ConfigReader::new(key, &obj, &[]).map(|_| Initializer::Zeros),
            "Ones" => ConfigReader::new(key, &obj, &[]).map(|_| Initializer::Ones),
            "Constant" => read_constant(key, &obj, value),
            "RandomNormal" | "TruncatedNormal" => read_normal(key, &obj),
            "RandomUniform" => {
                let r = ConfigReader::new(key, &obj, &["seed", "minval", "maxval"])?;
                Ok(Initializer::RandomUniform {
                    minval: r.num("minval", Num::Float(-0.05))?,
                    maxval: r.num("maxval", Num::Float(0.05))?,
                    seed: r.seed()?,
                })
            }
            "VarianceScaling" => read_variance_scaling(key, &obj),
            "Orthogonal" => {
                let r = ConfigReader::new(key, &obj, &["seed", "gain"])?;
                Ok(Initializer::Orthogonal {
                    gain: r.num("gain", Num::Float(1.0))?,
                    seed: r.seed()?,
                })
            }
            "Identity" => {
                let r = ConfigReader::new(key, &obj, &["gain"])?;
                Ok(Initializer::Identity {
                    gain: r.num("gain", Num::Float(1.0))?,
                })
            }
            name => match value_of(&PRESETS, name) {
                Some(preset) => read_preset(key, &obj, preset),
                None => Err(GruError::Internal {
                    what: format!("initializer alias table maps to unhandled class {name}"),
                }),
            },
        }
    }

    /// The dict Keras' `initializers.serialize` writes (and an Identity's gain, see below).
    pub fn to_keras_value(&self) -> Value {
        let seed_v = |s: &Option<u64>| s.map(Value::from).unwrap_or(Value::Null);
        let (class, config) = match self {
            Initializer::Zeros => ("Zeros", map_of(vec![])),
            Initializer::Ones => ("Ones", map_of(vec![])),
            Initializer::Constant { value } => {
                ("Constant", map_of(vec![("value", value.to_value())]))
            }
            Initializer::RandomNormal { mean, stddev, seed } => (
                "RandomNormal",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("mean", mean.to_value()),
                    ("stddev", stddev.to_value()),
                ]),
            ),
            Initializer::TruncatedNormal { mean, stddev, seed } => (
                "TruncatedNormal",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("mean", mean.to_value()),
                    ("stddev", stddev.to_value()),
                ]),
            ),
            Initializer::RandomUniform {
                minval,
                maxval,
                seed,
            } => (
                "RandomUniform",
                map_of(vec![
                    ("seed", seed_v(seed)),
                    ("minval", minval.to_value()),
                    ("maxval", maxval.to_value()),
                ]),
            ),
            Initializer::VarianceScaling { preset, .. } => match preset {
                ScalingPreset::Custom => ("VarianceScaling", self.variance_scaling_config()),
                p => (name_of(&PRESETS, *p), self.variance_scaling_config()),
            },
            Initializer::Orthogonal { gain, seed } => (
                "Orthogonal",
                map_of(vec![("seed", seed_v(seed)), ("gain", gain.to_value())]),
            ),
            // Keras 3.15.1's Identity.get_config returns {} and so drops the gain; a gain
            // other than 1 is written (Keras' from_config reads it back), so that a round
            // trip loses nothing.
            Initializer::Identity { gain } if gain.get() == 1.0 => ("Identity", map_of(vec![])),
            Initializer::Identity { gain } => ("Identity", map_of(vec![("gain", gain.to_value())])),
        };
        write_object("keras.initializers", class, config)
    }

    /// The config dict of a `VarianceScaling` (scale, mode and distribution written out
    /// only for the class itself, not for its presets).
    fn variance_scaling_config(&self) -> Map<String, Value> {
        let Initializer::VarianceScaling {
            preset,
            scale,
            mode,
            distribution,
            seed,
            input_axes,
            output_axes,
        } = self
        else {
            return Map::new();
        };
        let axes_v = |a: &Option<Vec<i64>>| a.clone().map(Value::from).unwrap_or(Value::Null);
        let mut m = vec![("seed", seed.map(Value::from).unwrap_or(Value::Null))];
        if *preset == ScalingPreset::Custom {
            m.push(("scale", scale.to_value()));
            m.push(("mode", Value::from(name_of(&MODES, *mode))));
            m.push((
                "distribution",
                Value::from(name_of(&DISTRIBUTIONS, *distribution)),
            ));
        }
        m.push(("input_axes", axes_v(input_axes)));
        m.push(("output_axes", axes_v(output_axes)));
        map_of(m)
    }
}

fn read_constant(key: &str, obj: &KerasObject, value: &Value) -> Result<Initializer> {
    let r = ConfigReader::new(key, obj, &["value"])?;
    if !obj.config.contains_key("value") && value.is_string() {
        // Keras: `initializers.get("constant")` fails (no value to deserialize).
        return Err(invalid(key, "a Constant with a `value`", value));
    }
    Ok(Initializer::Constant {
        value: r.num("value", Num::Float(0.0))?,
    })
}

fn read_normal(key: &str, obj: &KerasObject) -> Result<Initializer> {
    let r = ConfigReader::new(key, obj, &["seed", "mean", "stddev"])?;
    let (mean, stddev, seed) = (
        r.num("mean", Num::Float(0.0))?,
        r.num("stddev", Num::Float(0.05))?,
        r.seed()?,
    );
    Ok(match obj.class_name.as_str() {
        "RandomNormal" => Initializer::RandomNormal { mean, stddev, seed },
        _ => Initializer::TruncatedNormal { mean, stddev, seed },
    })
}

fn read_variance_scaling(key: &str, obj: &KerasObject) -> Result<Initializer> {
    let keys = [
        "seed",
        "scale",
        "mode",
        "distribution",
        "input_axes",
        "output_axes",
    ];
    let r = ConfigReader::new(key, obj, &keys)?;
    let scale = r.num("scale", Num::Float(1.0))?;
    if scale.get() <= 0.0 {
        return Err(invalid(key, "scale > 0", scale.get()));
    }
    let mode = r.choice("mode", "fan_in", &names(&MODES))?;
    let dist = r.choice("distribution", "truncated_normal", &names(&DISTRIBUTIONS))?;
    Ok(Initializer::VarianceScaling {
        preset: ScalingPreset::Custom,
        scale,
        mode: value_of(&MODES, &mode).unwrap_or(FanMode::FanIn),
        distribution: value_of(&DISTRIBUTIONS, &dist).unwrap_or(Distribution::TruncatedNormal),
        seed: r.seed()?,
        input_axes: r.axes("input_axes")?,
        output_axes: r.axes("output_axes")?,
    })
}

fn read_preset(key: &str, obj: &KerasObject, preset: ScalingPreset) -> Result<Initializer> {
    let r = ConfigReader::new(key, obj, &["seed", "input_axes", "output_axes"])?;
    let mut init = Initializer::preset(preset, r.seed()?);
    if let Initializer::VarianceScaling {
        input_axes,
        output_axes,
        ..
    } = &mut init
    {
        *input_axes = r.axes("input_axes")?;
        *output_axes = r.axes("output_axes")?;
    }
    Ok(init)
}
