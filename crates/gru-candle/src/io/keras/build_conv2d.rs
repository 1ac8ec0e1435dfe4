//! The builders of `Conv2D`, `MaxPooling2D` and `AveragePooling2D` (channels_last).

use super::build::ChainBuilder;
use super::build_layers::{padding, pooling_refused};
use super::build_simple::pair;
use super::unsupported;
use super::{Conv2D, ModelLayer, Pooling2D};
use crate::error::Result;
use serde_json::Value;

/// A pair of positive sizes from a config (`n`, `[a, b]`, or `default` when absent), each
/// at most `i32::MAX` as TensorFlow takes them (so that spans cannot overflow).
fn sizes(cfg: &Value, key: &str, default: usize) -> Option<(usize, usize)> {
    let ok = |n: usize| n > 0 && n <= i32::MAX as usize;
    pair(&cfg[key], default).filter(|&(a, b)| ok(a) && ok(b))
}

fn channels_last(cfg: &Value) -> bool {
    cfg["data_format"].as_str().unwrap_or("channels_last") == "channels_last"
}

impl ChainBuilder<'_> {
    /// `Conv2D` over an input of `d` channels.
    pub(super) fn conv2d(
        &mut self,
        cfg: &Value,
        group: &str,
        lname: &str,
        d: usize,
    ) -> Result<ModelLayer> {
        let src = self.w.source.clone();
        let filters = cfg["filters"]
            .as_u64()
            .filter(|&f| f > 0)
            .map(|f| f as usize);
        let groups = cfg["groups"].as_u64().unwrap_or(1) as usize;
        let settings = (
            filters,
            sizes(cfg, "kernel_size", 0),
            sizes(cfg, "strides", 1),
            sizes(cfg, "dilation_rate", 1),
        );
        let (Some(filters), Some(kernel_size), Some(strides), Some(dilation)) = settings else {
            let what = format!(
                "layer {lname:?}: Conv2D with filters {}, kernel_size {}, strides {}, dilation_rate {} (positive sizes)",
                cfg["filters"], cfg["kernel_size"], cfg["strides"], cfg["dilation_rate"]
            );
            return Err(unsupported(&src, what));
        };
        let grouped = groups > 0 && d.is_multiple_of(groups) && filters.is_multiple_of(groups);
        if !channels_last(cfg) || !grouped {
            let what = format!(
                "layer {lname:?}: Conv2D with data_format {}, {groups} groups of {d} inputs and {filters} filters (channels_last, groups dividing both)",
                cfg["data_format"]
            );
            return Err(unsupported(&src, what));
        }
        let shape = [kernel_size.0, kernel_size.1, d / groups, filters];
        let w = self.conv_weights(cfg, group, &shape)?;
        Ok(ModelLayer::Conv2D(Conv2D {
            rules: w.rules,
            kernel: w.kernel,
            bias: w.bias,
            strides,
            dilation,
            groups,
            padding: padding(cfg, lname, &src, false)?,
            activation: w.activation,
            compute_dtype: self.compute_dtype(cfg)?,
        }))
    }

    /// `MaxPooling2D` / `AveragePooling2D`.
    pub(super) fn pooling2d(&self, cfg: &Value, class: &str, lname: &str) -> Result<ModelLayer> {
        let src = &self.w.source;
        let size = sizes(cfg, "pool_size", 2);
        let strides = match &cfg["strides"] {
            Value::Null => size,
            _ => sizes(cfg, "strides", 0),
        };
        let (Some(size), Some(strides), true) = (size, strides, channels_last(cfg)) else {
            return Err(pooling_refused(src, lname, class, cfg));
        };
        Ok(ModelLayer::Pooling2D(Pooling2D {
            max: class == "MaxPooling2D",
            size,
            strides,
            padding: padding(cfg, lname, src, false)?,
        }))
    }
}
