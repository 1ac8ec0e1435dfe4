//! What a training loop needs: weights created by Keras' initializers in a VarMap,
//! gradients through every activation (checked against finite differences), regularization
//! losses, constraints after an optimizer step, and a loss that goes down.

use candle_core::{DType, Device, Tensor, Var};
use candle_gru::core::{Activation, Axis, Constraint, Num, Regularizer};
use candle_gru::{CallOptions, Gru, GruConfig};
use candle_nn::{Optimizer, VarBuilder, VarMap};

fn dev() -> Device {
    Device::Cpu
}

#[test]
fn varmap_weights_use_keras_initializers() {
    let vm = VarMap::new();
    let g = Gru::new(
        GruConfig::new(5),
        7,
        VarBuilder::from_varmap(&vm, DType::F32, &dev()).pp("gru"),
    )
    .unwrap();
    let names: Vec<String> = {
        let mut v: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
        v.sort();
        v
    };
    assert_eq!(names, ["gru.bias", "gru.kernel", "gru.recurrent_kernel"]);
    // bias: zeros, (2, 3u).
    assert_eq!(g.bias().unwrap().dims(), &[2, 15]);
    assert_eq!(
        g.bias()
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0
    );
    // recurrent: orthogonal, rows orthonormal.
    let r = g.recurrent_kernel();
    let gram: Vec<Vec<f32>> = r.matmul(&r.t().unwrap()).unwrap().to_vec2().unwrap();
    for (i, row) in gram.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-5);
        }
    }
    // kernel: glorot uniform, |w| <= sqrt(6 / (7 + 15)), and not all zero.
    let k: Vec<f32> = g.kernel().flatten_all().unwrap().to_vec1().unwrap();
    let limit = (6.0f32 / 22.0).sqrt();
    assert!(k.iter().all(|v| v.abs() <= limit) && k.iter().any(|v| *v != 0.0));
    // They are trainable Vars, and a second layer on the same VarMap shares them.
    assert!(g.kernel().is_variable());
    let g2 = Gru::new(
        GruConfig::new(5),
        7,
        VarBuilder::from_varmap(&vm, DType::F32, &dev()).pp("gru"),
    )
    .unwrap();
    assert_eq!(
        g2.kernel().to_vec2::<f32>().unwrap(),
        g.kernel().to_vec2::<f32>().unwrap()
    );
}

/// A seeded normal tensor (candle's randn is not seeded).
fn seeded(shape: &[usize], scale: f64, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    // Sum of uniforms: roughly normal, bounded, reproducible.
    let v: Vec<f64> = (0..n)
        .map(|_| scale * ((0..4).map(|_| rng.random::<f64>()).sum::<f64>() - 2.0))
        .collect();
    Tensor::from_vec(v, shape, &dev()).unwrap()
}

/// Central finite differences of sum(output * R) in f64 against autograd. Inputs are scaled
/// by 0.3 when a gate activation is unbounded (as the golden cases do): otherwise the state
/// grows until a 1e-6 difference is below the loss's rounding.
fn check_gradients(config: GruConfig, mask: Option<Vec<Vec<u8>>>, with_h0: bool) {
    let (b, t, f, u) = (2, 4, 3, config.units);
    let vm = VarMap::new();
    let mut config = config;
    config.bias_initializer = candle_gru::core::Initializer::RandomUniform {
        minval: Num::Float(-0.5),
        maxval: Num::Float(0.5),
        seed: Some(4),
    };
    let g = Gru::new(
        config.clone(),
        f,
        VarBuilder::from_varmap(&vm, DType::F64, &dev()),
    )
    .unwrap();
    let unbounded = matches!(
        config.recurrent_activation,
        Activation::Exponential | Activation::Linear
    );
    let scale = if unbounded { 0.3 } else { 1.0 };
    let x = Var::from_tensor(&seeded(&[b, t, f], scale, 1)).unwrap();
    let h0 = Var::from_tensor(&seeded(&[b, u], 0.5 * scale, 2)).unwrap();
    let mask = mask.map(|m| Tensor::new(m, &dev()).unwrap());
    let r_shape = if config.return_sequences {
        vec![b, t, u]
    } else {
        vec![b, u]
    };
    let r = seeded(&r_shape, 1.0, 3);
    let loss = || -> f64 {
        let opts = CallOptions {
            mask: mask.as_ref(),
            initial_state: with_h0.then_some(h0.as_tensor()),
            training: false,
        };
        let out = g.call(x.as_tensor(), opts).unwrap().output;
        out.mul(&r).unwrap().sum_all().unwrap().to_scalar().unwrap()
    };
    let opts = CallOptions {
        mask: mask.as_ref(),
        initial_state: with_h0.then_some(h0.as_tensor()),
        training: false,
    };
    let out = g.call(x.as_tensor(), opts).unwrap().output;
    let grads = out.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut targets: Vec<(&str, Var)> = vec![
        ("kernel", Var::from_tensor(g.kernel()).unwrap()),
        (
            "recurrent_kernel",
            Var::from_tensor(g.recurrent_kernel()).unwrap(),
        ),
        ("bias", Var::from_tensor(g.bias().unwrap()).unwrap()),
        ("inputs", x.clone()),
    ];
    if with_h0 {
        targets.push(("initial_state", h0.clone()));
    }
    let eps = 1e-6;
    for (name, var) in targets {
        let analytic: Vec<f64> = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("no gradient for {name}"))
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let shape = var.as_tensor().dims().to_vec();
        // Every third entry keeps the test quick.
        for i in (0..base.len()).step_by(3) {
            let mut v = base.clone();
            v[i] = base[i] + eps;
            var.set(&Tensor::from_vec(v.clone(), shape.as_slice(), &dev()).unwrap())
                .unwrap();
            let up = loss();
            v[i] = base[i] - eps;
            var.set(&Tensor::from_vec(v, shape.as_slice(), &dev()).unwrap())
                .unwrap();
            let down = loss();
            var.set(&Tensor::from_vec(base.clone(), shape.as_slice(), &dev()).unwrap())
                .unwrap();
            let numeric = (up - down) / (2.0 * eps);
            assert!(
                (numeric - analytic[i]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "{:?}/{:?} d{name}[{i}]: autograd {} vs finite differences {numeric}",
                config.activation,
                config.recurrent_activation,
                analytic[i]
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences_for_smooth_activations() {
    let acts = [
        (Activation::Selu, Activation::Sigmoid),
        (Activation::Softplus, Activation::Tanh),
        (Activation::Mish, Activation::Sigmoid),
        (Activation::Gelu, Activation::Softsign),
        (Activation::Elu, Activation::LogSigmoid),
        (Activation::Silu, Activation::Sigmoid),
        (Activation::Squareplus, Activation::Sigmoid),
        (Activation::Tanh, Activation::Exponential),
    ];
    for (i, (act, ract)) in acts.into_iter().enumerate() {
        let mut c = GruConfig::new(3);
        c.activation = act;
        c.recurrent_activation = ract;
        c.return_sequences = i % 2 == 0;
        c.reset_after = i % 3 != 0;
        c.go_backwards = i % 4 == 1;
        let mask = (i % 2 == 1).then(|| vec![vec![1u8, 0, 1, 1], vec![0, 1, 1, 0]]);
        check_gradients(c, mask, i % 3 == 1);
    }
}

#[test]
fn regularization_losses_are_keras_formulas_and_differentiable() {
    let mut c = GruConfig::new(3);
    c.kernel_regularizer = Some(Regularizer::L1L2 { l1: 0.01, l2: 0.02 });
    c.recurrent_regularizer = Some(Regularizer::L2 { l2: 0.003 });
    c.bias_regularizer = Some(Regularizer::l1(0.004));
    c.bias_initializer = candle_gru::core::Initializer::Ones;
    c.activity_regularizer = Some(Regularizer::L2 { l2: 0.005 });
    c.return_state = true;
    let vm = VarMap::new();
    let g = Gru::new(c, 4, VarBuilder::from_varmap(&vm, DType::F64, &dev())).unwrap();
    let flat = |t: &Tensor| -> Vec<f64> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let (k, r, b) = (
        flat(g.kernel()),
        flat(g.recurrent_kernel()),
        flat(g.bias().unwrap()),
    );
    let want = 0.01 * k.iter().map(|v| v.abs()).sum::<f64>()
        + 0.02 * k.iter().map(|v| v * v).sum::<f64>()
        + 0.003 * r.iter().map(|v| v * v).sum::<f64>()
        + (0.004f32 as f64) * b.iter().map(|v| v.abs()).sum::<f64>();
    let loss = g.regularization_loss().unwrap();
    assert!((loss.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    // d/d recurrent_kernel of 0.003 * sum(w^2) = 0.006 w.
    let grads = loss.backward().unwrap();
    let gr = flat(grads.get(g.recurrent_kernel()).unwrap());
    assert!(gr
        .iter()
        .zip(&r)
        .all(|(g, w)| (g - 0.006 * w).abs() < 1e-12));

    // Activity: the regularizer of each returned tensor divided by the batch size (Keras 3).
    let x = Tensor::randn(0f64, 1.0, (5, 6, 4), &dev()).unwrap();
    let out = g.call(&x, CallOptions::default()).unwrap();
    let sq = |t: &Tensor| flat(t).iter().map(|v| v * v).sum::<f64>();
    let want = 0.005 * (sq(&out.output) + sq(out.state.as_ref().unwrap())) / 5.0;
    let got: f64 = out.activity_loss.unwrap().to_scalar().unwrap();
    assert!((got - want).abs() < 1e-14, "{got} vs {want}");
}

#[test]
fn constraints_apply_after_an_optimizer_step() {
    let mut c = GruConfig::new(4);
    c.kernel_constraint = Some(Constraint::MaxNorm {
        max_value: Num::Float(0.5),
        axis: Axis::One(0),
    });
    c.recurrent_constraint = Some(Constraint::UnitNorm { axis: Axis::One(1) });
    c.bias_constraint = Some(Constraint::NonNeg);
    c.bias_initializer = candle_gru::core::Initializer::RandomNormal {
        mean: Num::Float(0.0),
        stddev: Num::Float(1.0),
        seed: Some(1),
    };
    c.kernel_initializer = candle_gru::core::Initializer::RandomNormal {
        mean: Num::Float(0.0),
        stddev: Num::Float(2.0),
        seed: Some(2),
    };
    let vm = VarMap::new();
    let g = Gru::new(c, 3, VarBuilder::from_varmap(&vm, DType::F32, &dev())).unwrap();
    let mut opt = candle_nn::SGD::new(vm.all_vars(), 0.1).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 5, 3), &dev()).unwrap();
    let loss = g
        .call(&x, CallOptions::default())
        .unwrap()
        .output
        .sum_all()
        .unwrap();
    opt.backward_step(&loss).unwrap();
    g.apply_constraints().unwrap();
    let k: Vec<Vec<f32>> = g.kernel().to_vec2().unwrap();
    for col in 0..12 {
        let n: f32 = k.iter().map(|row| row[col] * row[col]).sum::<f32>().sqrt();
        assert!(n <= 0.5 + 1e-5, "kernel column {col} norm {n}");
    }
    for row in g.recurrent_kernel().to_vec2::<f32>().unwrap() {
        let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-5, "recurrent row norm {n}");
    }
    assert!(g
        .bias()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|v| *v >= 0.0));
    // Constant (non-Var) weights cannot be constrained: a typed error.
    let mut c = GruConfig::new(2);
    c.bias_constraint = Some(Constraint::NonNeg);
    let g = Gru::from_weights(
        c,
        Tensor::zeros((3, 6), DType::F32, &dev()).unwrap(),
        Tensor::zeros((2, 6), DType::F32, &dev()).unwrap(),
        Some(Tensor::zeros((2, 6), DType::F32, &dev()).unwrap()),
    )
    .unwrap();
    assert!(matches!(
        g.apply_constraints(),
        Err(candle_gru::Error::Gru(
            candle_gru::GruError::InvalidConfig { .. }
        ))
    ));
}

#[test]
fn a_small_sequence_task_learns() {
    // Classify whether the sum of a sequence is positive, from the last output.
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev());
    let mut c = GruConfig::new(8);
    c.seed = Some(0);
    let g = Gru::new(c, 1, vb.pp("gru")).unwrap();
    let head = candle_nn::linear(8, 1, vb.pp("head")).unwrap();
    let x = seeded(&[64, 10, 1], 1.0, 9).to_dtype(DType::F32).unwrap();
    let y = x
        .sum(1)
        .unwrap()
        .gt(0.0)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    let mut opt = candle_nn::AdamW::new_lr(vm.all_vars(), 0.02).unwrap();
    let step_loss = |opt: &mut candle_nn::AdamW| -> f32 {
        use candle_core::Module;
        let h = g
            .call(
                &x,
                CallOptions {
                    training: true,
                    ..Default::default()
                },
            )
            .unwrap()
            .output;
        let logits = head.forward(&h).unwrap();
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &y).unwrap();
        opt.backward_step(&loss).unwrap();
        loss.to_scalar().unwrap()
    };
    let first = step_loss(&mut opt);
    let mut last = first;
    for _ in 0..60 {
        last = step_loss(&mut opt);
    }
    assert!(last < 0.5 * first, "loss {first} -> {last}");
}

#[test]
fn explain_dispatch_says_the_path_without_running() {
    let vm = VarMap::new();
    let mut c = GruConfig::new(2);
    c.activation = Activation::Relu;
    c.unroll = true;
    let g = Gru::new(c, 3, VarBuilder::from_varmap(&vm, DType::F32, &dev()))
        .unwrap()
        .with_cpu_path(candle_gru::candle::CpuPath::Loop);
    let x = Tensor::zeros((1, 4, 3), DType::F32, &dev()).unwrap();
    let d = g.explain_dispatch(&x, CallOptions::default()).unwrap();
    assert_eq!(d.path, candle_gru::ExecPath::Loop);
    let failed: Vec<_> = d.failed().map(|c| c.condition).collect();
    use candle_gru::core::Condition;
    assert_eq!(
        failed,
        vec![
            Condition::Activation,
            Condition::NotUnroll,
            Condition::CudaDevice,
            Condition::CudnnBuilt
        ]
    );
    assert!(
        g.last_dispatch().is_none(),
        "explain does not run the layer"
    );
    g.call(&x, CallOptions::default()).unwrap();
    assert_eq!(g.last_dispatch().unwrap(), d);
}

#[test]
fn trainable_false_stops_gradients_at_the_weights() {
    let vm = VarMap::new();
    let mut c = GruConfig::new(3);
    c.trainable = false;
    let g = Gru::new(c, 2, VarBuilder::from_varmap(&vm, DType::F32, &dev())).unwrap();
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 4, 2), &dev()).unwrap()).unwrap();
    let out = g
        .call(x.as_tensor(), CallOptions::default())
        .unwrap()
        .output;
    let grads = out.sum_all().unwrap().backward().unwrap();
    assert!(grads.get(g.kernel()).is_none() && grads.get(g.recurrent_kernel()).is_none());
    assert!(
        grads.get(x.as_tensor()).is_some(),
        "inputs still get gradients"
    );
}

#[test]
fn half_precision_runs_close_to_f32() {
    let vm = VarMap::new();
    let mut c = GruConfig::new(8);
    c.return_sequences = true;
    let g32 = Gru::new(
        c.clone(),
        4,
        VarBuilder::from_varmap(&vm, DType::F32, &dev()),
    )
    .unwrap();
    let x = Tensor::randn(0f32, 1.0, (3, 6, 4), &dev()).unwrap();
    let want: Vec<f32> = g32
        .call(&x, CallOptions::default())
        .unwrap()
        .output
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for dt in [DType::F16, DType::BF16] {
        let b = g32.bias().map(|b| b.to_dtype(dt).unwrap());
        let g = Gru::from_weights(
            c.clone(),
            g32.kernel().to_dtype(dt).unwrap(),
            g32.recurrent_kernel().to_dtype(dt).unwrap(),
            b,
        )
        .unwrap();
        let got: Vec<f32> = g
            .call(&x.to_dtype(dt).unwrap(), CallOptions::default())
            .unwrap()
            .output
            .to_dtype(DType::F32)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        // bf16 keeps 8 bits of mantissa, f16 11: stated tolerance 3e-2.
        assert!(err < 3e-2, "{dt:?}: max abs err {err}");
    }
}
