//! Reading and writing Keras' serialized objects:
//! `{"module", "class_name", "config", "registered_name"}`, plain identifier strings, and
//! numbers that keep their int-or-float form (Keras writes `2` and `2.0` differently).

use crate::error::{GruError, Result};
use serde_json::{Map, Value};

/// A number from a Keras config that remembers whether it was written as an integer, so that
/// `get_config` gives back exactly what Keras would (`"max_value": 2` vs `2.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Written as an integer.
    Int(i64),
    /// Written as a float.
    Float(f64),
}

impl Num {
    /// The value as f64.
    pub fn get(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// The JSON value Keras writes for it.
    pub fn to_value(self) -> Value {
        match self {
            Num::Int(i) => Value::from(i),
            Num::Float(f) => Value::from(f),
        }
    }

    /// Reads a JSON number.
    pub fn from_value(key: &str, v: &Value) -> Result<Num> {
        if let Some(i) = v.as_i64() {
            if v.is_i64() || v.is_u64() {
                return Ok(Num::Int(i));
            }
        }
        v.as_f64()
            .map(Num::Float)
            .ok_or_else(|| crate::error::invalid(key, "a number", v))
    }
}

impl From<f64> for Num {
    fn from(f: f64) -> Num {
        Num::Float(f)
    }
}

impl From<i64> for Num {
    fn from(i: i64) -> Num {
        Num::Int(i)
    }
}

/// One or several axes, as Keras constraints accept them (`0` or `[0]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Axis {
    /// A single axis (negative counts from the end).
    One(i64),
    /// Several axes.
    Many(Vec<i64>),
}

impl Axis {
    /// The JSON value Keras writes.
    pub fn to_value(&self) -> Value {
        match self {
            Axis::One(a) => Value::from(*a),
            Axis::Many(v) => Value::from(v.clone()),
        }
    }

    /// Reads an int or a list of ints.
    pub fn from_value(key: &str, v: &Value) -> Result<Axis> {
        if let Some(a) = v.as_i64() {
            return Ok(Axis::One(a));
        }
        if let Some(list) = v.as_array() {
            let axes: Option<Vec<i64>> = list.iter().map(Value::as_i64).collect();
            if let Some(axes) = axes {
                return Ok(Axis::Many(axes));
            }
        }
        Err(crate::error::invalid(
            key,
            "an integer axis or a list of them",
            v,
        ))
    }

    /// The axes resolved against a rank, sorted and deduplicated.
    pub fn resolve(&self, key: &str, rank: usize) -> Result<Vec<usize>> {
        let list = match self {
            Axis::One(a) => vec![*a],
            Axis::Many(v) => v.clone(),
        };
        let mut out = Vec::with_capacity(list.len());
        for a in list {
            let r = rank as i64;
            let idx = if a < 0 { a + r } else { a };
            if idx < 0 || idx >= r {
                return Err(crate::error::invalid(
                    key,
                    &format!("an axis in [-{rank}, {rank})"),
                    a,
                ));
            }
            out.push(idx as usize);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

/// A Keras object read from a config: its class name and its `config` dict.
pub(crate) struct KerasObject {
    pub class_name: String,
    pub config: Map<String, Value>,
}

/// Reads a plain identifier string or a serialized dict (with or without `module` and
/// `registered_name`). `aliases` maps snake-case identifiers to class names.
pub(crate) fn read_object(
    kind: &'static str,
    key: &str,
    value: &Value,
    aliases: &[(&str, &str)],
) -> Result<KerasObject> {
    let unknown = || GruError::UnknownIdentifier {
        kind,
        key: key.to_string(),
        got: value.to_string(),
    };
    match value {
        Value::String(s) => {
            let class = aliases
                .iter()
                .find(|(alias, class)| alias == s || class == s)
                .map(|(_, class)| class.to_string())
                .ok_or_else(unknown)?;
            Ok(KerasObject {
                class_name: class,
                config: Map::new(),
            })
        }
        Value::Object(map) => {
            let class = map
                .get("class_name")
                .and_then(Value::as_str)
                .ok_or_else(unknown)?;
            let class = aliases
                .iter()
                .find(|(alias, c)| *alias == class || *c == class)
                .map(|(_, c)| c.to_string())
                .ok_or_else(unknown)?;
            let config = match map.get("config") {
                None | Some(Value::Null) => Map::new(),
                Some(Value::Object(c)) => c.clone(),
                Some(other) => {
                    return Err(crate::error::invalid(
                        key,
                        "a `config` dict",
                        other.to_string(),
                    ))
                }
            };
            for k in map.keys() {
                if !matches!(
                    k.as_str(),
                    "module" | "class_name" | "config" | "registered_name" | "shared_object_id"
                ) {
                    return Err(crate::error::invalid(
                        key,
                        "keys module, class_name, config, registered_name",
                        format!("key {k:?}"),
                    ));
                }
            }
            Ok(KerasObject {
                class_name: class,
                config,
            })
        }
        _ => Err(unknown()),
    }
}

/// Writes `{"module", "class_name", "config", "registered_name": null}`.
pub(crate) fn write_object(module: &str, class_name: &str, config: Map<String, Value>) -> Value {
    let mut m = Map::new();
    m.insert("module".into(), Value::from(module));
    m.insert("class_name".into(), Value::from(class_name));
    m.insert("config".into(), Value::Object(config));
    m.insert("registered_name".into(), Value::Null);
    Value::Object(m)
}

/// Reads the entries of an object's `config`, rejecting keys the class does not take.
pub(crate) struct ConfigReader<'a> {
    key: String,
    class: &'a str,
    config: &'a Map<String, Value>,
}

impl<'a> ConfigReader<'a> {
    pub fn new(key: &str, obj: &'a KerasObject, allowed: &[&str]) -> Result<Self> {
        for k in obj.config.keys() {
            if !allowed.contains(&k.as_str()) {
                return Err(crate::error::invalid(
                    key,
                    &format!("{} arguments {:?}", obj.class_name, allowed),
                    format!("unexpected argument {k:?}"),
                ));
            }
        }
        Ok(ConfigReader {
            key: key.to_string(),
            class: &obj.class_name,
            config: &obj.config,
        })
    }

    fn ctx(&self, arg: &str) -> String {
        format!("{}.{}.{}", self.key, self.class, arg)
    }

    /// A number argument with a default.
    pub fn num(&self, arg: &str, default: Num) -> Result<Num> {
        match self.config.get(arg) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => Num::from_value(&self.ctx(arg), v),
        }
    }

    /// An optional seed (a non-negative integer or null).
    pub fn seed(&self) -> Result<Option<u64>> {
        match self.config.get("seed") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                crate::error::invalid(&self.ctx("seed"), "a non-negative integer or null", v)
            }),
        }
    }

    /// A string argument with a default, restricted to `choices`.
    pub fn choice(&self, arg: &str, default: &str, choices: &[&str]) -> Result<String> {
        match self.config.get(arg) {
            None | Some(Value::Null) => Ok(default.to_string()),
            Some(Value::String(s)) if choices.contains(&s.as_str()) => Ok(s.clone()),
            Some(v) => Err(crate::error::invalid(
                &self.ctx(arg),
                &format!("one of {choices:?}"),
                v,
            )),
        }
    }

    /// An axis argument with a default.
    pub fn axis(&self, arg: &str, default: Axis) -> Result<Axis> {
        match self.config.get(arg) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => Axis::from_value(&self.ctx(arg), v),
        }
    }

    /// An optional list of axes (null allowed).
    pub fn axes(&self, arg: &str) -> Result<Option<Vec<i64>>> {
        match self.config.get(arg) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match Axis::from_value(&self.ctx(arg), v)? {
                Axis::One(a) => Ok(Some(vec![a])),
                Axis::Many(v) => Ok(Some(v)),
            },
        }
    }
}

/// Builds a JSON map from pairs.
pub(crate) fn map_of(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
