//! One training call with a mask and an initial state, and what comes out of it.

use crate::common::{flat, max_diff};
use candle_core::{Tensor, Var};
use candle_gru::{CallOptions, ExecPath, Gru};

/// What [`run_call`] returns: the path, the outputs (sequence, state) and the gradients of
/// inputs, initial state and each weight, as f64.
pub struct Outcome {
    /// The path the call took.
    pub path: ExecPath,
    /// The sequence output and the final state.
    pub outputs: Vec<Vec<f64>>,
    /// d loss / d (inputs, initial state, kernel, recurrent kernel, bias).
    pub grads: Vec<Vec<f64>>,
}

impl Outcome {
    /// Asserts every output within `out_tol` and every gradient within `grad_tol` of
    /// `other`'s.
    pub fn assert_close(&self, other: &Outcome, out_tol: f64, grad_tol: f64, label: &str) {
        for (k, (a, s)) in self.outputs.iter().zip(&other.outputs).enumerate() {
            let d = max_diff(a, s);
            assert!(d <= out_tol, "{label}: output {k} differs by {d:e}");
        }
        for (k, (a, s)) in self.grads.iter().zip(&other.grads).enumerate() {
            let d = max_diff(a, s);
            assert!(d <= grad_tol, "{label}: gradient {k} differs by {d:e}");
        }
    }
}

impl Outcome {
    /// A half-type call tracks the f32 `reference`: outputs within 3e-2 (unit-scale data),
    /// gradients within 1e-1 relative to max(1, |g|).
    pub fn assert_tracks_f32(&self, reference: &Outcome, label: &str) {
        for (k, (a, r)) in self.outputs.iter().zip(&reference.outputs).enumerate() {
            let d = max_diff(a, r);
            println!("{label} output {k}: max |diff| vs f32 {d:.2e}");
            assert!(d < 3e-2, "{label} output {k}: {d:e}");
        }
        for (k, (a, r)) in self.grads.iter().zip(&reference.grads).enumerate() {
            let scale = r.iter().fold(1.0f64, |m, v| m.max(v.abs()));
            let d = max_diff(a, r) / scale;
            println!("{label} gradient {k}: max |diff| / max(1, |g|) {d:.2e}");
            assert!(d < 1e-1, "{label} gradient {k}: {d:e}");
        }
    }
}

/// One call with `return_sequences` and `return_state`; the loss weighs every output step
/// differently and adds half the state, so every gradient path is exercised.
pub fn run_call(
    g: &Gru,
    x: &Tensor,
    mask: Option<&Tensor>,
    h0: &Tensor,
    training: bool,
) -> Outcome {
    let xv = Var::from_tensor(x).unwrap();
    let hv = Var::from_tensor(h0).unwrap();
    let opts = CallOptions {
        mask,
        initial_state: Some(hv.as_tensor()),
        training,
    };
    let out = g.call(xv.as_tensor(), opts).unwrap();
    let seq = &out.output;
    let weights = Tensor::arange(0f64, seq.elem_count() as f64, seq.device())
        .unwrap()
        .reshape(seq.dims())
        .unwrap()
        .affine(0.003, -0.2)
        .unwrap()
        .to_dtype(seq.dtype())
        .unwrap();
    let state = out.state.clone().expect("return_state");
    let loss = ((seq * &weights).unwrap().sum_all().unwrap()
        + (&state * 0.5).unwrap().sum_all().unwrap())
    .unwrap();
    let grads = loss.backward().unwrap();
    let mut tracked = vec![xv.as_tensor().clone(), hv.as_tensor().clone()];
    tracked.extend(g.weights().into_iter().cloned());
    Outcome {
        path: out.dispatch.path,
        outputs: vec![flat(seq), flat(&state)],
        grads: tracked
            .iter()
            .map(|t| flat(grads.get(t).expect("a gradient reaches every input")))
            .collect(),
    }
}
