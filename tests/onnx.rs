//! ONNX GRU import: every onnxruntime case on both CPU paths and in f32 and f64, both
//! `linear_before_reset` forms against the ONNX formulas written out here, gradients, and
//! the typed error of each bad input.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::candle::io::onnx::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto,
};
use candle_gru::candle::io::onnx::{OnnxGru, OnnxModel};
use candle_gru::candle::{CpuPath, Error, FileProblem, Limits};
use candle_gru::GruError;
use gru_support::golden::onnx::{onnx_case_files, run_onnx_case};
use prost::Message;
use std::path::Path;

#[test]
fn every_onnxruntime_case_on_every_cpu_path_in_f32_and_f64() {
    let files = onnx_case_files(Path::new("tests/data/onnx")).unwrap();
    assert_eq!(files.len(), 10);
    for file in &files {
        for dtype in [DType::F32, DType::F64] {
            for path in [CpuPath::Fused, CpuPath::Loop, CpuPath::KernelsOnHost] {
                let r = run_onnx_case(file, dtype, path).unwrap();
                assert!(r.passed(), "{dtype:?} {path:?}: {}", r.line());
            }
        }
    }
}

/// Deterministic values in [-0.8, 0.8].
fn vals(n: usize, seed: f64) -> Vec<f32> {
    (0..n)
        .map(|k| (((k as f64) * 0.917 + seed).sin() * 0.8) as f32)
        .collect()
}

/// A model with one GRU node "g" over initializers W, R, B.
fn model_bytes(attrs: Vec<AttributeProto>, inits: Vec<TensorProto>, inputs: &[&str]) -> Vec<u8> {
    let node = NodeProto {
        name: Some("g".into()),
        op_type: Some("GRU".into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec!["Y".into(), "Y_h".into()],
        attribute: attrs,
        ..Default::default()
    };
    let graph = GraphProto {
        node: vec![node],
        initializer: inits,
        name: Some("t".into()),
        ..Default::default()
    };
    ModelProto {
        ir_version: Some(10),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

fn load(bytes: &[u8]) -> Result<OnnxModel, Error> {
    OnnxModel::from_bytes(
        bytes,
        "test.onnx",
        DType::F64,
        &Device::Cpu,
        &Limits::default(),
    )
}

/// ONNX's GRU equations for one direction, forward in time, written out in f64.
#[allow(clippy::too_many_arguments)]
fn onnx_reference(
    x: &[f32],
    w: &[f32],
    r: &[f32],
    b: &[f32],
    (t, bsz, i, h): (usize, usize, usize, usize),
    lbr: bool,
) -> Vec<f64> {
    let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
    let dot = |m: &[f32], row: usize, v: &[f64], n: usize| -> f64 {
        (0..n).map(|k| m[row * n + k] as f64 * v[k]).sum()
    };
    let mut hs = vec![vec![0.0f64; h]; bsz];
    let mut y = Vec::new();
    for step in 0..t {
        for (bi, hp) in hs.iter_mut().enumerate() {
            let xt: Vec<f64> = (0..i)
                .map(|k| x[(step * bsz + bi) * i + k] as f64)
                .collect();
            let g = |gate: usize, j: usize| dot(w, gate * h + j, &xt, i) + b[gate * h + j] as f64;
            let rg = |gate: usize, j: usize, v: &[f64]| {
                dot(r, gate * h + j, v, h) + b[3 * h + gate * h + j] as f64
            };
            let z: Vec<f64> = (0..h).map(|j| sig(g(0, j) + rg(0, j, hp))).collect();
            let rr: Vec<f64> = (0..h).map(|j| sig(g(1, j) + rg(1, j, hp))).collect();
            let rh: Vec<f64> = hp.iter().zip(&rr).map(|(a, c)| a * c).collect();
            let cand: Vec<f64> = (0..h)
                .map(|j| match lbr {
                    true => (g(2, j) + rr[j] * rg(2, j, hp)).tanh(),
                    false => (g(2, j) + rg(2, j, &rh)).tanh(),
                })
                .collect();
            for j in 0..h {
                hp[j] = (1.0 - z[j]) * cand[j] + z[j] * hp[j];
            }
            y.extend(hp.iter().copied());
        }
    }
    y
}

#[test]
fn both_linear_before_reset_forms_are_the_onnx_formulas() {
    let (t, bsz, i, h) = (4, 2, 3, 5);
    let (x, w, r, b) = (
        vals(t * bsz * i, 0.1),
        vals(3 * h * i, 1.2),
        vals(3 * h * h, 2.3),
        vals(6 * h, 3.4),
    );
    for lbr in [false, true] {
        let inits = vec![
            TensorProto::float32("W", &[1, 3 * h, i], &w),
            TensorProto::float32("R", &[1, 3 * h, h], &r),
            TensorProto::float32("B", &[1, 6 * h], &b),
        ];
        let bytes = model_bytes(
            vec![
                AttributeProto::int("hidden_size", h as i64),
                AttributeProto::int("linear_before_reset", lbr as i64),
            ],
            inits,
            &["X", "W", "R", "B"],
        );
        let model = load(&bytes).unwrap();
        let xt = Tensor::from_vec(x.clone(), (t, bsz, i), &Device::Cpu)
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap();
        let (y, y_h) = model.grus[0].forward(&xt, None, None).unwrap();
        assert_eq!(y.dims(), &[t, 1, bsz, h]);
        let want = onnx_reference(&x, &w, &r, &b, (t, bsz, i, h), lbr);
        let d = common::max_diff(&common::flat(&y), &want);
        assert!(d < 1e-12, "linear_before_reset={lbr}: {d:e}");
        let last = &want[(t - 1) * bsz * h..];
        assert!(common::max_diff(&common::flat(&y_h), last) < 1e-12);
    }
}

/// The gradients of sum(Y * weights) + sum(Y_h) with respect to X and each layer's weights.
fn grads(g: &OnnxGru, x: &Tensor, lens: Option<&Tensor>) -> Vec<Vec<f64>> {
    let xv = Var::from_tensor(x).unwrap();
    let (y, y_h) = g.forward(xv.as_tensor(), lens, None).unwrap();
    let wts = Tensor::arange(0f64, y.elem_count() as f64, &Device::Cpu)
        .unwrap()
        .reshape(y.dims())
        .unwrap();
    let loss = ((&y * (wts * 0.01).unwrap()).unwrap().sum_all().unwrap() + y_h.sum_all().unwrap())
        .unwrap();
    let gs = loss.backward().unwrap();
    let (fw, bw) = g.layers();
    let mut tracked = vec![xv.as_tensor().clone()];
    tracked.extend(fw.weights().into_iter().cloned());
    tracked.extend(bw.into_iter().flat_map(|b| b.weights()).cloned());
    tracked
        .iter()
        .map(|t| common::flat(gs.get(t).expect("a gradient reaches every weight")))
        .collect()
}

#[test]
fn gradients_agree_between_the_fused_path_and_the_loop() {
    // Clip, ONNX activations with parameters, both directions and sequence lengths.
    for case in [
        "clip_lbr0",
        "activations_hardsigmoid_relu",
        "bidirectional_lbr1_seq_lens_h0",
    ] {
        let path = format!("tests/data/onnx/{case}.onnx");
        let fused = OnnxModel::load(Path::new(&path), DType::F64, &Device::Cpu)
            .unwrap()
            .grus
            .remove(0);
        let slow = OnnxModel::load(Path::new(&path), DType::F64, &Device::Cpu)
            .unwrap()
            .grus
            .remove(0)
            .with_cpu_path(CpuPath::Loop);
        let (t, b) = (5, 3);
        let x = Tensor::from_vec(
            vals(t * b * fused.input_size, 0.7),
            (t, b, fused.input_size),
            &Device::Cpu,
        )
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .affine(3.0, 0.0)
        .unwrap();
        let lens = Tensor::new(&[5i64, 2, 0], &Device::Cpu).unwrap();
        let (a, s) = (
            grads(&fused, &x, Some(&lens)),
            grads(&slow, &x, Some(&lens)),
        );
        for (k, (ga, gs)) in a.iter().zip(&s).enumerate() {
            let d = common::max_diff(ga, gs);
            assert!(d < 1e-10, "{case}: gradient {k} differs by {d:e}");
            assert!(
                ga.iter().any(|v| *v != 0.0),
                "{case}: gradient {k} is all zero"
            );
        }
    }
}

fn file_problem<T: std::fmt::Debug>(r: Result<T, Error>) -> FileProblem {
    match r {
        Err(Error::File { problem, .. }) => problem,
        other => panic!("expected a file error, got {other:?}"),
    }
}

#[test]
fn bad_files_and_bad_inputs_are_typed_errors_naming_the_node() {
    let good = std::fs::read("tests/data/onnx/forward_lbr1_h0.onnx").unwrap();
    assert!(matches!(
        file_problem(load(&good[..good.len() / 2])),
        FileProblem::Unreadable(_)
    ));
    assert!(matches!(
        file_problem(load(b"not a model at all")),
        FileProblem::Unreadable(_) | FileProblem::Missing(_)
    ));
    let (i, h) = (3, 4);
    let w = || TensorProto::float32("W", &[1, 3 * h, i], &vals(3 * h * i, 0.0));
    let r = || TensorProto::float32("R", &[1, 3 * h, h], &vals(3 * h * h, 1.0));
    // R missing from the initializers.
    let p = file_problem(load(&model_bytes(vec![], vec![w()], &["X", "W", "R"])));
    assert!(
        matches!(&p, FileProblem::Missing(m) if m.contains("\"g\"") && m.contains("R")),
        "{p:?}"
    );
    // hidden_size disagreeing with W.
    let p = file_problem(load(&model_bytes(
        vec![AttributeProto::int("hidden_size", 5)],
        vec![w(), r()],
        &["X", "W", "R"],
    )));
    assert!(
        matches!(&p, FileProblem::Shape { name, .. } if name.contains("\"g\"") && name.contains('W')),
        "{p:?}"
    );
    // R of the wrong shape.
    let r_bad = TensorProto::float32("R", &[1, 3 * h, h + 1], &vals(3 * h * (h + 1), 1.0));
    let p = file_problem(load(&model_bytes(
        vec![],
        vec![w(), r_bad],
        &["X", "W", "R"],
    )));
    assert!(
        matches!(&p, FileProblem::Shape { name, .. } if name.contains('R')),
        "{p:?}"
    );
    // An activation ONNX does not define.
    let p = file_problem(load(&model_bytes(
        vec![AttributeProto::strings(
            "activations",
            &["Sigmoid", "Swish"],
        )],
        vec![w(), r()],
        &["X", "W", "R"],
    )));
    assert!(
        matches!(&p, FileProblem::Unsupported(m) if m.contains("Swish")),
        "{p:?}"
    );
    // A direction that does not exist.
    let p = file_problem(load(&model_bytes(
        vec![AttributeProto::string("direction", "sideways")],
        vec![w(), r()],
        &["X", "W", "R"],
    )));
    assert!(
        matches!(&p, FileProblem::Unsupported(m) if m.contains("sideways")),
        "{p:?}"
    );
    // Weights kept outside the file.
    let mut ext = w();
    ext.data_location = Some(1);
    let p = file_problem(load(&model_bytes(vec![], vec![ext, r()], &["X", "W", "R"])));
    assert!(
        matches!(&p, FileProblem::Unsupported(m) if m.contains("external")),
        "{p:?}"
    );
    // W's dims claiming far more than the limit: refused before anything is read.
    let huge = TensorProto {
        dims: vec![1, 3 << 20, 1 << 20],
        ..w()
    };
    let e = load(&model_bytes(vec![], vec![huge, r()], &["X", "W", "R"])).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Gru(GruError::TooLarge { .. }) | Error::File { .. }
        ),
        "{e:?}"
    );

    // Call-time input.
    let model = load(&model_bytes(vec![], vec![w(), r()], &["X", "W", "R"])).unwrap();
    let g = &model.grus[0];
    let x = Tensor::zeros((6, 2, i), DType::F64, &Device::Cpu).unwrap();
    for lens in [vec![7i64, 2], vec![-1, 2]] {
        let l = Tensor::new(lens.as_slice(), &Device::Cpu).unwrap();
        let e = g.forward(&x, Some(&l), None).unwrap_err().to_string();
        assert!(
            e.contains("sequence_lens") && e.contains("\"g\"") && e.contains("0..=6"),
            "{e}"
        );
    }
    let wrong = Tensor::zeros((6, 2, i + 1), DType::F64, &Device::Cpu).unwrap();
    assert!(g
        .forward(&wrong, None, None)
        .unwrap_err()
        .to_string()
        .contains("X"));
    let h0 = Tensor::zeros((2, 2, h), DType::F64, &Device::Cpu).unwrap();
    assert!(g
        .forward(&x, None, Some(&h0))
        .unwrap_err()
        .to_string()
        .contains("initial_h"));
}

/// A layer with deterministic weights in f64.
fn keras_layer(cfg: &candle_gru::GruConfig, input: usize) -> candle_gru::Gru {
    common::layer(cfg, input, DType::F64, &Device::Cpu)
}

/// The layer's sequence in time order (flipped back for go_backwards).
fn time_order(g: &candle_gru::Gru, x: &Tensor) -> Tensor {
    let y = g
        .call(x, candle_gru::CallOptions::default())
        .unwrap()
        .output;
    match g.config().go_backwards {
        false => y,
        true => {
            let t = y.dim(1).unwrap();
            let idx =
                Tensor::from_vec((0..t as u32).rev().collect::<Vec<_>>(), t, &Device::Cpu).unwrap();
            y.index_select(&idx, 1).unwrap()
        }
    }
}

#[test]
fn exported_layers_come_back_with_the_same_outputs() {
    use candle_gru::candle::io::onnx::{export_bidirectional, export_gru};
    use candle_gru::core::Activation;
    let (b, t, i, u) = (2, 5, 3, 4);
    let x = Tensor::from_vec(vals(b * t * i, 0.4), (b, t, i), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap();
    let xt = x.transpose(0, 1).unwrap().contiguous().unwrap();
    let mut configs = Vec::new();
    for (reset_after, go_backwards, acts) in [
        (true, false, (Activation::Sigmoid, Activation::Tanh)),
        (false, true, (Activation::HardSigmoid, Activation::Relu)),
        (true, true, (Activation::Sigmoid, Activation::Softsign)),
    ] {
        let mut c = candle_gru::GruConfig::new(u);
        c.return_sequences = true;
        c.reset_after = reset_after;
        c.go_backwards = go_backwards;
        (c.recurrent_activation, c.activation) = acts;
        configs.push(c);
    }
    configs[2].cell_clip = Some(0.3);
    for c in &configs {
        let g = keras_layer(c, i);
        let back = load(&export_gru(&g).unwrap()).unwrap();
        let (y, _) = back.grus[0].forward(&xt, None, None).unwrap();
        let want = time_order(&g, &x);
        let got = y.squeeze(1).unwrap().transpose(0, 1).unwrap();
        let d = common::max_diff(&common::flat(&got), &common::flat(&want));
        // Float32 weights on the way (and HardSigmoid's 1/6 as a float32).
        assert!(d < 1e-6, "{c:?}: {d:e}");
    }
    // Both directions of a Bidirectional in one node.
    let mut fwc = configs[0].clone();
    fwc.go_backwards = false;
    let mut bwc = fwc.clone();
    bwc.go_backwards = true;
    let bi = candle_gru::candle::Bidirectional::from_layers(
        keras_layer(&fwc, i),
        keras_layer(&bwc, i),
        candle_gru::candle::MergeMode::Concat,
    )
    .unwrap();
    let back = load(&export_bidirectional(&bi).unwrap()).unwrap();
    let (y, _) = back.grus[0].forward(&xt, None, None).unwrap();
    let keras = bi.call(&x, None, None, false).unwrap().outputs.remove(0);
    let got = y
        .permute((2, 0, 1, 3))
        .unwrap()
        .reshape((b, t, 2 * u))
        .unwrap();
    assert!(common::max_diff(&common::flat(&got), &common::flat(&keras)) < 1e-6);
    // An activation ONNX cannot express is refused, naming it.
    let mut selu = configs[0].clone();
    selu.activation = Activation::Selu;
    let e = export_gru(&keras_layer(&selu, i)).unwrap_err().to_string();
    assert!(e.contains("selu"), "{e}");
}
