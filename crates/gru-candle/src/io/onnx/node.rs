//! One ONNX `GRU` node read into Keras-layout layers: its attributes, its `W`, `R`, `B`
//! initializers, and one [`Gru`] per direction.

use super::proto::{attribute_proto::AttributeType, AttributeProto, NodeProto, TensorProto};
use super::tensor::{floats, Values};
use super::{Direction, Layout, OnnxGru};
use crate::error::{file_error, FileProblem, Result};
use crate::layer::Gru;
use candle_core::{DType, Device, Tensor};
use gru_core::activation::onnx::from_onnx;
use gru_core::{Activation, GruConfig};
use std::collections::HashMap;

/// What a node's reading needs from the model: the file's name for errors, the constant
/// tensors by name, and where the layers go.
pub(super) struct Context<'a> {
    pub source: &'a str,
    pub constants: HashMap<&'a str, &'a TensorProto>,
    pub dtype: DType,
    pub device: &'a Device,
    pub max_bytes: u64,
}

/// The typed error for something wrong with node `node`.
fn problem(
    ctx: &Context,
    node: &str,
    p: impl FnOnce(String) -> FileProblem,
    what: String,
) -> crate::Error {
    file_error(ctx.source, p(format!("GRU node {node:?}: {what}")))
}

/// A node's attributes by name.
struct Attributes<'a>(HashMap<&'a str, &'a AttributeProto>);

impl<'a> Attributes<'a> {
    fn of(node: &'a NodeProto) -> Self {
        Attributes(
            node.attribute
                .iter()
                .map(|a| (a.name.as_deref().unwrap_or(""), a))
                .collect(),
        )
    }

    fn int(&self, name: &str) -> Option<i64> {
        self.0.get(name).and_then(|a| a.i)
    }

    fn float(&self, name: &str) -> Option<f32> {
        self.0.get(name).and_then(|a| a.f)
    }

    fn string(&self, name: &str) -> Option<String> {
        let a = self.0.get(name)?;
        a.s.as_ref()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.0.get(name).map_or(Vec::new(), |a| {
            a.strings
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
    }

    fn floats(&self, name: &str) -> Vec<f32> {
        self.0.get(name).map_or(Vec::new(), |a| a.floats.clone())
    }

    /// Attributes this reader does not know (a typed error names the first).
    fn unknown(&self) -> Option<&str> {
        const KNOWN: [&str; 8] = [
            "activation_alpha",
            "activation_beta",
            "activations",
            "clip",
            "direction",
            "hidden_size",
            "layout",
            "linear_before_reset",
        ];
        self.0.keys().copied().find(|k| !KNOWN.contains(k))
    }

    fn is_graph(&self) -> bool {
        self.0
            .values()
            .any(|a| a.r#type == Some(AttributeType::Graph as i32))
    }
}

/// The settings a GRU node's attributes give.
struct Settings {
    direction: Direction,
    layout: Layout,
    linear_before_reset: bool,
    clip: Option<f32>,
    hidden_size: Option<usize>,
    /// (gate, candidate) per direction.
    activations: Vec<(Activation, Activation)>,
}

fn settings(ctx: &Context, name: &str, attrs: &Attributes) -> Result<Settings> {
    let bad = |what: String| problem(ctx, name, FileProblem::Unsupported, what);
    if let Some(k) = attrs.unknown() {
        return Err(bad(format!("unknown attribute {k:?}")));
    }
    if attrs.is_graph() {
        return Err(bad("a graph attribute".into()));
    }
    let direction = match attrs.string("direction").as_deref().unwrap_or("forward") {
        "forward" => Direction::Forward,
        "reverse" => Direction::Reverse,
        "bidirectional" => Direction::Bidirectional,
        other => {
            return Err(bad(format!(
                "direction {other:?} (forward, reverse or bidirectional)"
            )))
        }
    };
    let layout = match attrs.int("layout").unwrap_or(0) {
        0 => Layout::SeqMajor,
        1 => Layout::BatchMajor,
        other => return Err(bad(format!("layout {other} (0 or 1)"))),
    };
    let linear_before_reset = match attrs.int("linear_before_reset").unwrap_or(0) {
        0 => false,
        1 => true,
        other => return Err(bad(format!("linear_before_reset {other} (0 or 1)"))),
    };
    let clip = attrs.float("clip");
    if let Some(c) = clip.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(bad(format!("clip {c} (a positive number)")));
    }
    let hidden_size = match attrs.int("hidden_size") {
        Some(h) if h > 0 && h <= gru_core::config::MAX_UNITS as i64 => Some(h as usize),
        Some(h) => return Err(bad(format!("hidden_size {h}"))),
        None => None,
    };
    let activations = activations(ctx, name, attrs, direction.count())?;
    Ok(Settings {
        direction,
        layout,
        linear_before_reset,
        clip,
        hidden_size,
        activations,
    })
}

/// `activations` (2 per direction; 2 given for a bidirectional node apply to both), with
/// their alphas and betas.
fn activations(
    ctx: &Context,
    name: &str,
    attrs: &Attributes,
    dirs: usize,
) -> Result<Vec<(Activation, Activation)>> {
    let bad = |what: String| problem(ctx, name, FileProblem::Unsupported, what);
    let mut names = attrs.strings("activations");
    if names.is_empty() {
        names = vec!["Sigmoid".into(), "Tanh".into()];
    }
    if names.len() == 2 && dirs == 2 {
        names.extend(names.clone());
    }
    if names.len() != 2 * dirs {
        return Err(bad(format!(
            "{} activations for {dirs} direction(s) (2 per direction)",
            names.len()
        )));
    }
    let (alphas, betas) = (
        attrs.floats("activation_alpha"),
        attrs.floats("activation_beta"),
    );
    if let Some(v) = alphas.iter().chain(&betas).find(|v| !v.is_finite()) {
        return Err(bad(format!("activation parameter {v}")));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let acts = from_onnx(&refs, &alphas, &betas).map_err(|n| bad(format!("activation {n:?}")))?;
    Ok(acts.chunks(2).map(|p| (p[0], p[1])).collect())
}

/// The node's input `k` when given (ONNX leaves optional inputs out or names them "").
fn input(node: &NodeProto, k: usize) -> Option<&str> {
    node.input
        .get(k)
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

/// A weight input's values, checked to have `dims`.
fn weight(
    ctx: &Context,
    node: &NodeProto,
    name: &str,
    k: usize,
    which: &str,
    dims: &[usize],
) -> Result<Option<Values<f64>>> {
    let Some(input_name) = input(node, k) else {
        return Ok(None);
    };
    let t = ctx.constants.get(input_name).ok_or_else(|| {
        let what = format!("{which} {input_name:?} is not an initializer or Constant");
        problem(ctx, name, FileProblem::Missing, what)
    })?;
    let v = floats(
        ctx.source,
        &format!("GRU node {name:?}: {which}"),
        t,
        ctx.max_bytes,
    )?;
    if v.dims != dims {
        let p = FileProblem::Shape {
            name: format!("GRU node {name:?}: {which}"),
            expected: dims.to_vec(),
            got: v.dims,
        };
        return Err(file_error(ctx.source, p));
    }
    Ok(Some(v))
}

/// The (D, 3H, I) dims of `W`, read before the values are (for the sizes).
fn w_dims(ctx: &Context, node: &NodeProto, name: &str) -> Result<Vec<usize>> {
    let w = input(node, 1)
        .and_then(|n| ctx.constants.get(n))
        .ok_or_else(|| {
            problem(
                ctx,
                name,
                FileProblem::Missing,
                "input W (an initializer or Constant)".into(),
            )
        })?;
    let dims: Vec<usize> = w
        .dims
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(usize::MAX))
        .collect();
    match dims.as_slice() {
        [d, h3, i] if *d >= 1 && *h3 >= 3 && h3 % 3 == 0 && *i >= 1 => Ok(dims),
        _ => {
            let p = FileProblem::Shape {
                name: format!("GRU node {name:?}: W"),
                expected: vec![1, 3, 1],
                got: dims,
            };
            Err(file_error(ctx.source, p))
        }
    }
}

/// Reads one GRU node.
pub(super) fn read(ctx: &Context, node: &NodeProto, name: String) -> Result<OnnxGru> {
    let attrs = Attributes::of(node);
    let s = settings(ctx, &name, &attrs)?;
    let d = s.direction.count();
    let wd = w_dims(ctx, node, &name)?;
    let (h, i) = (wd[1] / 3, wd[2]);
    if wd[0] != d || s.hidden_size.is_some_and(|hs| hs != h) {
        let expected = vec![d, 3 * s.hidden_size.unwrap_or(h), i];
        let p = FileProblem::Shape {
            name: format!("GRU node {name:?}: W"),
            expected,
            got: wd,
        };
        return Err(file_error(ctx.source, p));
    }
    crate::limits::Limits {
        max_weight_bytes: ctx.max_bytes,
        ..Default::default()
    }
    .check_layer(i, h, 2, 8)?;
    let w = weight(ctx, node, &name, 1, "W", &[d, 3 * h, i])?;
    let r = weight(ctx, node, &name, 2, "R", &[d, 3 * h, h])?;
    let b = weight(ctx, node, &name, 3, "B", &[d, 6 * h])?;
    let (Some(w), Some(r)) = (w, r) else {
        return Err(problem(ctx, &name, FileProblem::Missing, "input R".into()));
    };
    let mut layers = Vec::with_capacity(d);
    for k in 0..d {
        let reverse = s.direction == Direction::Reverse || k == 1;
        layers.push(direction_layer(
            ctx,
            &s,
            &name,
            k,
            reverse,
            (&w, &r, b.as_ref()),
            (i, h),
        )?);
    }
    let backward = (d == 2).then(|| layers.pop()).flatten();
    let forward = layers
        .pop()
        .ok_or_else(|| problem(ctx, &name, FileProblem::Missing, "a direction".into()))?;
    Ok(OnnxGru {
        name,
        direction: s.direction,
        layout: s.layout,
        linear_before_reset: s.linear_before_reset,
        clip: s.clip,
        hidden_size: h,
        input_size: i,
        forward,
        backward,
    })
}

/// Direction `k` as a Keras GRU: kernel `W[k]^T`, recurrent kernel `R[k]^T`; the bias is
/// `[Wb; Rb]` with linear_before_reset (Keras' reset_after) or `Wb + Rb` without (Keras'
/// reset-before form adds its one bias outside the recurrent product, where ONNX adds both).
#[allow(clippy::type_complexity)]
fn direction_layer(
    ctx: &Context,
    s: &Settings,
    name: &str,
    k: usize,
    reverse: bool,
    (w, r, b): (&Values<f64>, &Values<f64>, Option<&Values<f64>>),
    (i, h): (usize, usize),
) -> Result<Gru> {
    let mut cfg = GruConfig::new(h);
    cfg.name = format!("{name}_{}", if reverse { "reverse" } else { "forward" });
    cfg.return_sequences = true;
    cfg.return_state = true;
    cfg.zero_output_for_mask = true;
    cfg.go_backwards = reverse;
    cfg.reset_after = s.linear_before_reset;
    cfg.use_bias = b.is_some();
    (cfg.recurrent_activation, cfg.activation) = s.activations[k];
    cfg.cell_clip = s.clip.map(f64::from);
    let block = |v: &Values<f64>, len: usize| v.data[k * len..(k + 1) * len].to_vec();
    let t = |v: Vec<f64>, shape: &[usize]| -> Result<Tensor> {
        crate::io::tensor_from(ctx.source, name, v, shape, DType::F64, &Device::Cpu)
    };
    // Trainable Vars, so that an imported node can be fine-tuned.
    let to = |x: Tensor| -> Result<Tensor> {
        let t = x.to_dtype(ctx.dtype)?.to_device(ctx.device)?;
        Ok(candle_core::Var::from_tensor(&t)?.as_tensor().clone())
    };
    let kernel = to(t(block(w, 3 * h * i), &[3 * h, i])?.t()?.contiguous()?)?;
    let recurrent = to(t(block(r, 3 * h * h), &[3 * h, h])?.t()?.contiguous()?)?;
    let bias = match b {
        None => None,
        Some(b) => {
            let both = block(b, 6 * h);
            let (wb, rb) = both.split_at(3 * h);
            Some(to(match s.linear_before_reset {
                true => t(both.clone(), &[2, 3 * h])?,
                false => t(wb.iter().zip(rb).map(|(x, y)| x + y).collect(), &[3 * h])?,
            })?)
        }
    };
    Gru::from_weights(cfg, kernel, recurrent, bias)
}
