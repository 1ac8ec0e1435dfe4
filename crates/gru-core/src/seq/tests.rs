//! Backward against central finite differences of forward, in f64, over every flag.

use super::*;
use crate::activation::Activation;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

struct Case {
    spec: SeqSpec,
    /// The weights, inputs and dropout masks.
    v: Typed<f64>,
    mask: Option<Vec<u8>>,
    r_seq: Vec<f64>,
    r_state: Vec<f64>,
}

fn vals(rng: &mut StdRng, n: usize, s: f64) -> Vec<f64> {
    (0..n)
        .map(|_| s * (rng.random::<f64>() * 2.0 - 1.0))
        .collect()
}

fn case(seed: u64, spec: SeqSpec, masked: bool, imasks: usize, rmasks: bool) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let (b, t, i, u) = (spec.batch, spec.time, spec.input, spec.units);
    let mask = masked.then(|| {
        (0..b * t)
            .map(|k| !(k * 7 + seed as usize).is_multiple_of(3) as u8)
            .collect()
    });
    let drop = |rng: &mut StdRng, n| {
        (0..n)
            .map(|_| {
                if rng.random::<f64>() < 0.3 {
                    0.0
                } else {
                    1.0 / 0.7
                }
            })
            .collect()
    };
    let v = Typed {
        kernel: vals(&mut rng, i * 3 * u, 0.6),
        recurrent: vals(&mut rng, u * 3 * u, 0.6),
        bias: vals(&mut rng, spec.bias_rows() * 3 * u, 0.3),
        x: vals(&mut rng, b * t * i, 1.0),
        h0: vals(&mut rng, b * u, 0.5),
        imasks: (0..imasks).map(|_| drop(&mut rng, b * i)).collect(),
        rmasks: if rmasks {
            (0..3).map(|_| drop(&mut rng, b * u)).collect()
        } else {
            vec![]
        },
    };
    Case {
        v,
        mask,
        r_seq: vals(&mut rng, b * t * u, 1.0),
        r_state: vals(&mut rng, b * u, 1.0),
        spec,
    }
}

impl Case {
    fn loss(&self) -> f64 {
        let (w, inp) = (self.v.weights(), self.v.inputs(self.mask.as_deref()));
        let (out, _) = forward(&self.spec, &w, &inp, false).unwrap();
        out.sequence
            .iter()
            .zip(&self.r_seq)
            .map(|(a, b)| a * b)
            .sum::<f64>()
            + out
                .state
                .iter()
                .zip(&self.r_state)
                .map(|(a, b)| a * b)
                .sum::<f64>()
    }

    fn check(mut self) {
        let grads = {
            let (w, inp) = (self.v.weights(), self.v.inputs(self.mask.as_deref()));
            let (_, saved) = forward(&self.spec, &w, &inp, true).unwrap();
            backward(
                &self.spec,
                &w,
                &inp,
                &saved.unwrap(),
                &self.r_seq,
                &self.r_state,
            )
            .unwrap()
        };
        let eps = 1e-6;
        let spec = format!("{:?}", self.spec);
        macro_rules! fd {
            ($field:ident, $grad:expr) => {
                for i in 0..self.v.$field.len() {
                    let v = self.v.$field[i];
                    self.v.$field[i] = v + eps;
                    let up = self.loss();
                    self.v.$field[i] = v - eps;
                    let down = self.loss();
                    self.v.$field[i] = v;
                    let num = (up - down) / (2.0 * eps);
                    let got = $grad[i];
                    assert!(
                        (num - got).abs() <= 1e-6 * (1.0 + num.abs()),
                        "d{}[{i}]: {got} vs fd {num}\n{spec}",
                        stringify!($field)
                    );
                }
            };
        }
        fd!(x, grads.x);
        fd!(kernel, grads.kernel);
        fd!(recurrent, grads.recurrent);
        fd!(bias, grads.bias);
        fd!(h0, grads.h0);
    }
}

/// A case's weights and inputs in float type `T`.
struct Typed<T> {
    kernel: Vec<T>,
    recurrent: Vec<T>,
    bias: Vec<T>,
    x: Vec<T>,
    h0: Vec<T>,
    imasks: Vec<Vec<T>>,
    rmasks: Vec<Vec<T>>,
}

impl Case {
    fn typed<T: Float>(&self, conv: fn(f64) -> T) -> Typed<T> {
        let f = |v: &[f64]| v.iter().map(|&x| conv(x)).collect::<Vec<T>>();
        let c = &self.v;
        Typed {
            kernel: f(&c.kernel),
            recurrent: f(&c.recurrent),
            bias: f(&c.bias),
            x: f(&c.x),
            h0: f(&c.h0),
            imasks: c.imasks.iter().map(|m| f(m)).collect(),
            rmasks: c.rmasks.iter().map(|m| f(m)).collect(),
        }
    }
}

impl<T> Typed<T> {
    fn weights(&self) -> SeqWeights<'_, T> {
        SeqWeights {
            kernel: &self.kernel,
            recurrent: &self.recurrent,
            bias: &self.bias,
        }
    }

    fn inputs<'a>(&'a self, mask: Option<&'a [u8]>) -> SeqInputs<'a, T> {
        SeqInputs {
            x: &self.x,
            h0: &self.h0,
            mask,
            input_masks: &self.imasks,
            recurrent_masks: &self.rmasks,
        }
    }
}

fn spec(
    reset_after: bool,
    act: Activation,
    ract: Activation,
    go_backwards: bool,
    zero: bool,
    use_bias: bool,
) -> SeqSpec {
    SeqSpec {
        batch: 3,
        time: 5,
        input: 4,
        units: 3,
        activation: act,
        recurrent_activation: ract,
        reset_after,
        use_bias,
        go_backwards,
        zero_output_for_mask: zero,
        threads: Threads::ONE,
        clip: None,
        wanted: Default::default(),
    }
}

/// tanh/sigmoid, forwards, masked steps repeat the output, with bias.
fn plain_spec(reset_after: bool) -> SeqSpec {
    spec(
        reset_after,
        Activation::Tanh,
        Activation::Sigmoid,
        false,
        false,
        true,
    )
}

#[test]
fn gradients_match_finite_differences_over_every_flag() {
    use Activation::*;
    let mut seed = 0;
    for reset_after in [true, false] {
        for (act, ract) in [
            (Tanh, Sigmoid),
            (Selu, Softplus),
            (Mish, Silu),
            (Softsign, Tanh),
        ] {
            for (gb, zero, masked) in [
                (false, false, false),
                (true, false, true),
                (false, true, true),
                (true, true, true),
            ] {
                seed += 1;
                case(
                    seed,
                    spec(reset_after, act, ract, gb, zero, seed % 3 != 0),
                    masked,
                    0,
                    false,
                )
                .check();
            }
        }
        // Dropout masks given as inputs: one input mask, three per gate, recurrent ones.
        seed += 1;
        case(
            seed,
            spec(reset_after, Tanh, Sigmoid, false, false, true),
            true,
            1,
            false,
        )
        .check();
        seed += 1;
        case(
            seed,
            spec(reset_after, Tanh, Sigmoid, true, false, true),
            true,
            3,
            true,
        )
        .check();
        seed += 1;
        case(
            seed,
            spec(reset_after, Elu, Sigmoid, false, true, false),
            false,
            0,
            true,
        )
        .check();
        // ONNX's cell clip (held pre-activations pass no gradient) and ONNX activations
        // with parameters.
        let onnx =
            crate::activation::onnx::from_onnx(&["HardSigmoid", "ScaledTanh"], &[0.3], &[0.45])
                .unwrap();
        for clip in [0.4, 100.0] {
            seed += 1;
            let mut s = spec(reset_after, onnx[1], onnx[0], true, false, true);
            s.clip = Some(clip);
            case(seed, s, true, 0, false).check();
        }
    }
}

#[test]
fn input_gradients_match_finite_differences_in_both_product_orders() {
    // More batch rows than steps (dX by steps), fewer (by batch rows), and backwards (by
    // steps); no input mask, one, and three; both reset forms.
    let mut seed = 200;
    for (batch, time, go_backwards) in [(6, 2, false), (2, 6, false), (3, 4, true)] {
        for (imasks, reset_after) in [(0, true), (1, false), (3, true)] {
            let base = spec(
                reset_after,
                Activation::Tanh,
                Activation::Sigmoid,
                go_backwards,
                false,
                true,
            );
            let sp = SeqSpec {
                batch,
                time,
                ..base
            };
            case(seed, sp, true, imasks, false).check();
            seed += 1;
        }
    }
}

#[test]
fn f32_forward_is_close_to_f64() {
    let c = case(99, plain_spec(true), true, 0, false);
    let (t32, t64) = (c.typed(|v| v as f32), c.typed(|v| v));
    let (w, inp) = (t32.weights(), t32.inputs(c.mask.as_deref()));
    let (o32, _) = forward(&c.spec, &w, &inp, false).unwrap();
    let (w, inp) = (t64.weights(), t64.inputs(c.mask.as_deref()));
    let (o64, _) = forward(&c.spec, &w, &inp, false).unwrap();
    for (a, b) in o32.sequence.iter().zip(&o64.sequence) {
        assert!((*a as f64 - b).abs() < 2e-6);
    }
}

/// f32 forward and backward with each step's input projection made per step (the large-
/// buffer path) equal the up-front projection's, for no, one and three input-dropout masks,
/// both reset forms, masks and go_backwards.
#[test]
fn per_step_and_up_front_input_projections_agree() {
    use super::forward::PER_STEP;
    let f = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    let mut runs = 0;
    for (n, (reset_after, imasks, go_back)) in [
        (true, 0, false),
        (false, 1, true),
        (true, 3, true),
        (false, 3, false),
    ]
    .into_iter()
    .enumerate()
    {
        let mut sp = spec(
            reset_after,
            Activation::Tanh,
            Activation::Sigmoid,
            go_back,
            false,
            true,
        );
        sp.batch = 5;
        sp.units = 32;
        sp.input = 6;
        // Enough steps to pack the kernel (the per-step projection reads it packed).
        sp.time = 9;
        let c = case(40 + n as u64, sp, true, imasks, n == 3);
        let typed = c.typed(|v| v as f32);
        let (w, inp) = (typed.weights(), typed.inputs(c.mask.as_deref()));
        let run = |per_step: bool| {
            PER_STEP.with(|p| p.set(Some(per_step)));
            let (out, saved) = forward(&c.spec, &w, &inp, true).unwrap();
            let g = backward(
                &c.spec,
                &w,
                &inp,
                &saved.unwrap(),
                &f(&c.r_seq),
                &f(&c.r_state),
            )
            .unwrap();
            PER_STEP.with(|p| p.set(None));
            (out, g)
        };
        let before = super::forward::PER_STEP_RUNS.with(|c| c.get());
        let ((o1, g1), (o2, g2)) = (run(false), run(true));
        let per_step_ran = super::forward::PER_STEP_RUNS.with(|c| c.get()) > before;
        let packs = super::kernel::Packed::from_rows(&[0f32; 4], 2, 2, 1).is_some();
        assert_eq!(per_step_ran, packs, "case {n}: the per-step projection ran");
        let close = |a: &[f32], b: &[f32], what: &str| {
            assert_eq!(a.len(), b.len());
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert!(
                    (x - y).abs() <= 2e-5 * (1.0 + y.abs()),
                    "case {n} {what}[{i}]: {x} vs {y}"
                );
            }
        };
        close(&o2.sequence, &o1.sequence, "sequence");
        close(&o2.state, &o1.state, "state");
        close(&g2.x, &g1.x, "dx");
        close(&g2.kernel, &g1.kernel, "dkernel");
        close(&g2.recurrent, &g1.recurrent, "drecurrent");
        close(&g2.bias, &g1.bias, "dbias");
        close(&g2.h0, &g1.h0, "dh0");
        runs += 1;
    }
    assert_eq!(runs, 4);
}

#[test]
fn bad_lengths_are_typed_errors() {
    let c = case(1, plain_spec(true), false, 0, false);
    let w = SeqWeights {
        kernel: &c.v.kernel[1..],
        recurrent: &c.v.recurrent,
        bias: &c.v.bias,
    };
    let inp = SeqInputs {
        x: &c.v.x,
        h0: &c.v.h0,
        mask: None,
        input_masks: &[],
        recurrent_masks: &[],
    };
    assert!(matches!(
        forward(&c.spec, &w, &inp, false),
        Err(GruError::Shape { .. })
    ));
}

/// The unit split tests' cases (seeds from `seed`) and their thread counts: one or several
/// batch rows, masks, recurrent and input dropout, go_backwards, zero_output_for_mask,
/// clip, no bias, reset_before (not split) and 64 units (one slice); `wanted(n)` for case n.
fn unit_split_cases(seed: u64, wanted: impl Fn(usize) -> WantedGrads) -> Vec<(Case, usize)> {
    [
        (1, 130, false, 0, false, true),
        (2, 130, true, 1, true, true),
        (3, 200, true, 3, false, true),
        (1, 200, true, 0, true, true),
        (1, 130, true, 0, false, false),
        (2, 64, false, 0, false, true),
    ]
    .into_iter()
    .enumerate()
    .map(|(n, (batch, units, masked, imasks, rmasks, reset_after))| {
        let (tanh, sigmoid) = (Activation::Tanh, Activation::Sigmoid);
        let mut sp = spec(reset_after, tanh, sigmoid, n % 2 == 1, n == 3, n != 2);
        (sp.batch, sp.units, sp.time, sp.input) = (batch, units, 6, 5);
        sp.clip = (n == 3).then_some(0.5);
        sp.wanted = wanted(n);
        let threads = if units == 200 { 4 } else { 2 };
        (case(seed + n as u64, sp, masked, imasks, rmasks), threads)
    })
    .collect()
}

/// The forward with the units split over threads computes what the one-thread forward
/// computes, outputs and saved activations, for f32 and f64, with and without masks,
/// recurrent and input dropout masks, go_backwards, clip and no bias; reset_before (not
/// split) and too few units (one slice) take the one-thread path.
#[test]
fn unit_split_forward_equals_one_thread() {
    use super::units::{forward_units, splits, unit_ranges};
    assert_eq!(unit_ranges(130, 2), vec![0..64, 64..130]);
    assert_eq!(unit_ranges(200, 4), vec![0..64, 64..128, 128..200]);
    assert_eq!(unit_ranges(100, 2), vec![0..100]);
    assert_eq!(unit_ranges(256, 1), vec![0..256]);
    fn run<T: Float>(c: &Case, conv: fn(f64) -> T, threads: usize) -> (Vec<T>, Vec<T>, Saved<T>) {
        let typed = c.typed(conv);
        let (w, inp) = (typed.weights(), typed.inputs(c.mask.as_deref()));
        let s = &c.spec;
        let mut seq = vec![T::ZERO; s.batch * s.time * s.units];
        let mut state = vec![T::ZERO; s.batch * s.units];
        let mut wss = Vec::new();
        let saved = forward_units(s, &w, &inp, true, &mut wss, (&mut seq, &mut state), threads)
            .unwrap()
            .unwrap();
        (seq, state, saved)
    }
    fn same<T: Float + std::fmt::Debug>(c: &Case, conv: fn(f64) -> T, threads: usize) {
        let (s1, h1, v1) = run(c, conv, 1);
        let (s2, h2, v2) = run(c, conv, threads);
        let what = format!("{:?} threads {threads}", c.spec);
        assert!(s1 == s2, "sequence differs: {what}");
        assert!(h1 == h2, "state differs: {what}");
        for (n, (a, b)) in [
            (&v1.h_prev, &v2.h_prev),
            (&v1.z, &v2.z),
            (&v1.a_z, &v2.a_z),
            (&v1.r, &v2.r),
            (&v1.a_r, &v2.a_r),
            (&v1.hh, &v2.hh),
            (&v1.a_h, &v2.a_h),
            (&v1.extra, &v2.extra),
        ]
        .into_iter()
        .enumerate()
        {
            assert!(a == b, "saved field {n} differs: {what}");
        }
    }
    let mut split_runs = 0;
    for (c, threads) in unit_split_cases(60, |_| WantedGrads::default()) {
        split_runs += splits(&c.spec, threads) as usize;
        same::<f32>(&c, |v| v as f32, threads);
        same::<f64>(&c, |v| v, threads);
    }
    assert_eq!(split_runs, 4);
}

/// The backward with the units split over threads computes what the one-thread backward
/// computes (to rounding), every gradient, for f32 and f64, over the forward split test's
/// cases (masks, recurrent and input dropout, go_backwards, clip, no bias; reset_before and
/// one-slice calls take the one-thread path), and with gradients left out.
#[test]
fn unit_split_backward_equals_one_thread() {
    use super::backward_units::backward_units;
    fn grads<T: Float>(c: &Case, conv: fn(f64) -> T, threads: usize) -> SeqGrads<T> {
        let typed = c.typed(conv);
        let (w, inp) = (typed.weights(), typed.inputs(c.mask.as_deref()));
        let (out, saved) = forward(&c.spec, &w, &inp, true).unwrap();
        let saved = saved.unwrap();
        let d_seq: Vec<T> = c.r_seq.iter().map(|&v| conv(v)).collect();
        let d_state: Vec<T> = c.r_state.iter().map(|&v| conv(v)).collect();
        assert_eq!(out.sequence.len(), d_seq.len());
        let mut wss = Vec::new();
        // Twice: the second call reuses the first's buffers.
        for _ in 0..2 {
            backward_units(
                &c.spec, &w, &inp, &saved, &d_seq, &d_state, &mut wss, threads,
            )
            .unwrap();
        }
        backward_units(
            &c.spec, &w, &inp, &saved, &d_seq, &d_state, &mut wss, threads,
        )
        .unwrap()
    }
    fn close<T: Float>(c: &Case, conv: fn(f64) -> T, threads: usize, tol: f64) {
        let (one, many) = (grads(c, conv, 1), grads(c, conv, threads));
        let what = format!("{:?} threads {threads}", c.spec);
        for (n, (a, b)) in [
            (&one.x, &many.x),
            (&one.kernel, &many.kernel),
            (&one.recurrent, &many.recurrent),
            (&one.bias, &many.bias),
            (&one.h0, &many.h0),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(a.len(), b.len(), "gradient {n} length: {what}");
            let worst = a.iter().zip(b.iter()).fold(0.0f64, |m, (&x, &y)| {
                let (x, y) = (x.to_f64(), y.to_f64());
                m.max((x - y).abs() / (1.0 + x.abs()))
            });
            assert!(worst < tol, "gradient {n} differs by {worst}: {what}");
        }
    }
    let wanted = |n: usize| WantedGrads {
        input: n != 1,
        weights: n != 5,
    };
    for (c, threads) in unit_split_cases(70, wanted) {
        close::<f32>(&c, |v| v as f32, threads, 1e-5);
        close::<f64>(&c, |v| v, threads, 1e-13);
    }
}

/// The forward keeps the pre-activations only when the backward reads them (a clip, or an
/// activation differentiated at its input); a backward that needs them and gets none
/// returns a typed error instead of reading nothing.
#[test]
fn pre_activations_are_kept_only_when_the_backward_reads_them() {
    let plain = plain_spec(true);
    let mut clipped = plain.clone();
    clipped.clip = Some(0.5);
    let relu = spec(
        true,
        Activation::Relu,
        Activation::Sigmoid,
        false,
        false,
        true,
    );
    assert!(!plain.keeps_pre_activations());
    assert!(clipped.keeps_pre_activations() && relu.keeps_pre_activations());
    let n = plain.time * plain.batch * plain.units;
    for (sp, kept) in [(&plain, 0), (&clipped, n), (&relu, n)] {
        let c = case(90, sp.clone(), true, 0, false);
        let t = c.typed(|v| v);
        let (w, inp) = (t.weights(), t.inputs(c.mask.as_deref()));
        let (_, saved) = forward(sp, &w, &inp, true).unwrap();
        let saved = saved.unwrap();
        assert_eq!(
            (saved.a_z.len(), saved.a_r.len(), saved.a_h.len()),
            (kept, kept, kept)
        );
        assert_eq!(saved.z.len(), n);
    }
    // The plain forward's activations handed to a backward that clips.
    let c = case(91, plain.clone(), false, 0, false);
    let t = c.typed(|v| v);
    let (w, inp) = (t.weights(), t.inputs(None));
    let (_, saved) = forward(&plain, &w, &inp, true).unwrap();
    let err = backward(&clipped, &w, &inp, &saved.unwrap(), &c.r_seq, &c.r_state);
    assert!(matches!(err, Err(crate::error::GruError::Shape { .. })));
}

#[test]
fn left_out_gradients_are_empty_and_the_others_unchanged() {
    // Plain, input dropout (the per-gate input side), recurrent dropout and reset_before.
    for (seed, reset_after, imasks, rmasks) in [
        (92, true, 0, false),
        (93, true, 3, true),
        (94, false, 1, false),
    ] {
        let sp = plain_spec(reset_after);
        let c = case(seed, sp.clone(), true, imasks, rmasks);
        let t = c.typed(|v| v);
        let (w, inp) = (t.weights(), t.inputs(c.mask.as_deref()));
        let (_, saved) = forward(&sp, &w, &inp, true).unwrap();
        let saved = saved.unwrap();
        let grads = |input, weights| {
            let s = SeqSpec {
                wanted: WantedGrads { input, weights },
                ..sp.clone()
            };
            backward(&s, &w, &inp, &saved, &c.r_seq, &c.r_state).unwrap()
        };
        let all = grads(true, true);
        assert!(!all.x.is_empty() && !all.kernel.is_empty() && !all.bias.is_empty());
        let no_x = grads(false, true);
        assert!(no_x.x.is_empty(), "seed {seed}");
        assert_eq!(
            (&no_x.kernel, &no_x.recurrent, &no_x.bias, &no_x.h0),
            (&all.kernel, &all.recurrent, &all.bias, &all.h0)
        );
        let no_w = grads(true, false);
        assert!(no_w.kernel.is_empty() && no_w.recurrent.is_empty() && no_w.bias.is_empty());
        assert_eq!((&no_w.x, &no_w.h0), (&all.x, &all.h0), "seed {seed}");
    }
}

/// A one-row case of 128 units (two slices of 64) and `time` steps.
fn one_row_case(seed: u64, time: usize) -> Case {
    let mut sp = plain_spec(true);
    (sp.batch, sp.units, sp.time, sp.input) = (1, 128, time, 5);
    case(seed, sp, false, 0, false)
}

/// The inference forward of a case's f64 values on `threads` threads: (sequence, state).
fn units_forward(c: &Case, threads: usize) -> (Vec<f64>, Vec<f64>) {
    let t = c.typed(|v| v);
    let (w, inp, s) = (t.weights(), t.inputs(None), &c.spec);
    let mut seq = vec![0.0; s.batch * s.time * s.units];
    let mut state = vec![0.0; s.batch * s.units];
    let out = (&mut seq[..], &mut state[..]);
    super::units::forward_units(s, &w, &inp, false, &mut Vec::new(), out, threads).unwrap();
    (seq, state)
}

/// Split calls made at once from several threads all finish and agree with one thread's
/// result; a team that runs fewer threads at once than asked gets that many slices.
#[test]
fn concurrent_unit_split_calls_agree() {
    let c = one_row_case(95, 20);
    let run = |threads| units_forward(&c, threads);
    let want = run(1);
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..4).map(|_| scope.spawn(|| run(2))).collect();
        for call in calls {
            assert!(call.join().unwrap() == want);
        }
    });
    /// Scoped threads, at most two at once.
    struct Two;
    impl Team for Two {
        fn size(&self) -> usize {
            2
        }
        fn run(&self, parts: usize, part: &(dyn Fn(usize) + Sync)) {
            assert!(parts <= 2, "{parts} slices asked of a team of two");
            ScopedThreads.run(parts, part)
        }
        fn name(&self) -> &'static str {
            "two"
        }
    }
    let mut sp = plain_spec(true);
    (sp.batch, sp.units, sp.time, sp.input) = (1, 256, 9, 5);
    sp.threads = Threads::new(1, &Two);
    let wide = case(97, sp, false, 0, false);
    assert_eq!(super::units::unit_ranges(256, 4).len(), 4);
    assert!(units_forward(&wide, 4) == units_forward(&wide, 1));
}

/// A slice that panics (on the calling thread or on another) stops the others at the
/// barrier instead of leaving them waiting: the call ends with the panic, and the next
/// split call computes the right result.
#[test]
fn a_panicking_slice_ends_the_call_and_releases_the_others() {
    use super::units::PANIC_IN_SLICE;
    // A step count no other test uses: the injected panic fires only for this call.
    let c = one_row_case(96, 37);
    let run = |threads| units_forward(&c, threads);
    let want = run(1);
    for start in [0, 64] {
        *PANIC_IN_SLICE.lock().unwrap() = Some((37, start));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(2)));
        *PANIC_IN_SLICE.lock().unwrap() = None;
        let e = caught.expect_err("the injected panic reaches the caller");
        let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains(&format!("unit {start}")), "{msg}");
        assert!(run(2) == want);
    }
}
