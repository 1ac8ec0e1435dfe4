//! Which path a call takes: the eight cuDNN conditions of Keras' GRU docstring, plus the facts
//! of the machine, as one pure function.
//!
//! Keras documents eight conditions for its cuDNN kernel:
//! 1. `activation == tanh`, 2. `recurrent_activation == sigmoid`,
//! 3. `recurrent_dropout == 0`, 4. `unroll == False`, 5. `use_bias == True`,
//! 6. `reset_after == True`, 7. masks (if any) strictly right-padded,
//! 8. eager execution in the outermost context.
//!
//! **Condition 3.** The docstring says `recurrent_dropout == 0`. Keras 3's code
//! (`GRU.inner_loop`) goes further for input dropout: in training it multiplies the inputs by
//! one (batch, 1, features) dropout mask and still calls cuDNN, so input dropout never blocks
//! cuDNN. We follow the code for input dropout. For recurrent dropout we block cuDNN only when
//! it is *active in this call* (training with `0 < recurrent_dropout < 1`): at inference a
//! recurrent dropout rate has no effect on the result (Keras' own golden outputs are bit-equal),
//! so running cuDNN there gives Keras' numbers. Keras' code blocks cuDNN whenever
//! `recurrent_dropout != 0`; that is the one place where we choose the faster path.
//!
//! **Condition 7.** Keras falls back to the loop unless the mask is strictly right-padded.
//! This crate goes further: a mask with left padding or holes also runs on cuDNN, by moving
//! each row's valid steps (in processing order) to the front, running cuDNN with per-row
//! lengths, and moving the outputs back under Keras' output rule. That gives exactly the
//! loop's result (`gru_cudnn::host` is the tested reference), so such a mask passes the
//! condition and its reason says so. An all-False row cannot run on cuDNN (every length must
//! be >= 1) and fails it.
//!
//! **Condition 8.** Candle executes eagerly, always: there is no graph mode to be inside of,
//! so the condition holds for every call and is reported as passed.
//!
//! Beyond the eight, cuDNN needs a CUDA device, this build's cuDNN path, a dtype cuDNN's RNN
//! supports, and no all-False mask row (cuDNN rejects zero lengths). Those are reported the
//! same way.

use crate::activation::Activation;
use crate::config::{GruConfig, UseCudnn};
use crate::error::{GruError, Result};

/// A condition of the cuDNN path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Condition {
    /// 1. activation is tanh.
    Activation,
    /// 2. recurrent_activation is sigmoid.
    RecurrentActivation,
    /// 3. no recurrent dropout active in this call (input dropout is applied before cuDNN).
    NoRecurrentDropout,
    /// 4. unroll is false.
    NotUnroll,
    /// 5. use_bias is true.
    UseBias,
    /// 6. reset_after is true.
    ResetAfter,
    /// Condition 7: the mask, if any, has no all-False row. Keras asks for strict right
    /// padding; this crate also runs left-padded masks and masks with holes on cuDNN (valid
    /// steps moved to the front, the loop's result exactly), so only an all-False row fails.
    MaskNoEmptyRow,
    /// 8. eager execution (always true in Candle).
    EagerExecution,
    /// The inputs live on a CUDA device.
    CudaDevice,
    /// This build has a working cuDNN path (`cudnn` feature and gru-cudnn support).
    CudnnBuilt,
    /// The dtype is one cuDNN's RNN supports (f16, bf16, f32, f64).
    DTypeSupported,
    /// No cell clip (ONNX's `clip`): cuDNN's GRU has none.
    NoCellClip,
}

impl Condition {
    /// The condition's short name, used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Condition::Activation => "1. activation == tanh",
            Condition::RecurrentActivation => "2. recurrent_activation == sigmoid",
            Condition::NoRecurrentDropout => "3. no recurrent dropout in training",
            Condition::NotUnroll => "4. unroll == false",
            Condition::UseBias => "5. use_bias == true",
            Condition::ResetAfter => "6. reset_after == true",
            Condition::MaskNoEmptyRow => "7. mask has no all-False row",
            Condition::EagerExecution => "8. eager execution",
            Condition::CudaDevice => "device is CUDA",
            Condition::CudnnBuilt => "cuDNN path built",
            Condition::DTypeSupported => "dtype supported by cuDNN",
            Condition::NoCellClip => "no cell clip",
        }
    }
}

/// One condition's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionCheck {
    /// Which condition.
    pub condition: Condition,
    /// Whether it holds for this call.
    pub passed: bool,
    /// Why, in words.
    pub reason: String,
}

/// What the mask of a call looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaskFacts {
    /// No mask.
    None,
    /// Each row is a run of `true` followed by `false`s, every row with at least one `true`.
    RightPadded,
    /// A row has a `false` before a `true` (left padding or holes), and no row is all
    /// `false`.
    NotRightPadded {
        /// The first such row.
        row: usize,
    },
    /// A row is all `false` (whatever the other rows look like).
    EmptyRow {
        /// The first such row.
        row: usize,
    },
}

impl MaskFacts {
    /// Classifies a (batch, time) row-major boolean mask.
    ///
    /// ```
    /// use gru_core::MaskFacts;
    /// assert_eq!(MaskFacts::of(&[true, true, false, true, false, false], 2, 3), MaskFacts::RightPadded);
    /// assert_eq!(MaskFacts::of(&[false, true], 1, 2), MaskFacts::NotRightPadded { row: 0 });
    /// ```
    pub fn of(mask: &[bool], batch: usize, time: usize) -> MaskFacts {
        let mut empty = None;
        let mut not_right = None;
        for b in 0..batch {
            let row = &mask[b * time..(b + 1) * time];
            let len = row.iter().take_while(|&&m| m).count();
            if row[len..].iter().any(|&m| m) {
                not_right.get_or_insert(b);
            } else if len == 0 {
                empty.get_or_insert(b);
            }
        }
        Self::from_rows(empty, not_right)
    }

    /// The facts from the first all-False row and the first row with a masked step before a
    /// valid one (an all-False row wins: it is the one that keeps cuDNN out).
    pub fn from_rows(first_empty: Option<usize>, first_not_right_padded: Option<usize>) -> Self {
        match (first_empty, first_not_right_padded) {
            (Some(row), _) => MaskFacts::EmptyRow { row },
            (None, Some(row)) => MaskFacts::NotRightPadded { row },
            (None, None) => MaskFacts::RightPadded,
        }
    }
}

/// The float types a call can compute in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloatType {
    /// IEEE half.
    F16,
    /// bfloat16.
    BF16,
    /// f32.
    F32,
    /// f64.
    F64,
    /// Anything else.
    Other,
}

/// The facts of one call that the decision depends on (besides the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallFacts {
    /// `training=True`.
    pub training: bool,
    /// The mask's shape.
    pub mask: MaskFacts,
    /// The inputs are on a CUDA device.
    pub device_is_cuda: bool,
    /// This build can run the cuDNN path.
    pub cudnn_built: bool,
    /// The compute dtype.
    pub dtype: FloatType,
    /// The fused CPU path can run this call (CPU tensors, a float dtype (f16 and bf16 computed
    /// in f32), not switched off).
    pub fused_available: bool,
    /// The fused step kernels can run this call: on a CUDA device (the `cudnn` build, any of
    /// the four float types), or on the CPU through their host backend when the layer asks
    /// for it (f32/f64); not switched off.
    pub step_kernels_available: bool,
}

/// The execution path a call runs on. (Named `ExecPath` so that it does not clash with
/// `std::path::Path` in user code.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecPath {
    /// cuDNN's RNN kernels.
    Cudnn,
    /// The fused whole-sequence CPU kernels (gru-core's `seq`), with their own backward.
    Fused,
    /// The fused step kernels (gru-core's `step`): per step the recurrent product(s) and one
    /// gate kernel, with their own backward; on a CUDA device (cuBLAS and the CUDA C kernels
    /// of `kernels/`), or on the host (the same kernels compiled as C++, a reference).
    StepKernels,
    /// The op-by-op time loop (Keras' `RNN` over `GRUCell`), the reference.
    Loop,
}

/// The decision for a call: the path and every condition's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The chosen path.
    pub path: ExecPath,
    /// The use_cudnn setting it was decided under.
    pub use_cudnn: UseCudnn,
    /// Every condition, in order, with pass/fail and reason.
    pub checks: Vec<ConditionCheck>,
}

impl Dispatch {
    /// The conditions that failed.
    pub fn failed(&self) -> impl Iterator<Item = &ConditionCheck> {
        self.checks.iter().filter(|c| !c.passed)
    }

    /// One line: the path and why.
    pub fn explain(&self) -> String {
        let failed: Vec<String> = self
            .failed()
            .map(|c| format!("{} ({})", c.condition.name(), c.reason))
            .collect();
        let why_not = match self.use_cudnn {
            UseCudnn::Never => "use_cudnn=Never".to_string(),
            _ => failed.join("; "),
        };
        match self.path {
            ExecPath::Cudnn => "cudnn: every condition holds".to_string(),
            ExecPath::Fused => format!("fused CPU kernels; not cuDNN: {why_not}"),
            ExecPath::StepKernels => format!("fused step kernels; not cuDNN: {why_not}"),
            ExecPath::Loop => format!("op-by-op loop; not cuDNN: {why_not}"),
        }
    }
}

fn check(condition: Condition, passed: bool, reason: String) -> ConditionCheck {
    ConditionCheck {
        condition,
        passed,
        reason,
    }
}

/// Condition 3: recurrent dropout blocks cuDNN only when it acts in this call.
fn recurrent_dropout_check(rd: f64, training: bool) -> ConditionCheck {
    let active = training && rd > 0.0 && rd < 1.0;
    let reason = if active {
        format!("recurrent_dropout={rd} is active in training")
    } else if rd > 0.0 {
        format!("recurrent_dropout={rd} has no effect with training={training}")
    } else {
        "recurrent_dropout is 0".to_string()
    };
    check(Condition::NoRecurrentDropout, !active, reason)
}

/// Condition 7: every mask row has a valid step (any other mask runs through compaction).
fn mask_check(mask: MaskFacts) -> ConditionCheck {
    let (passed, reason) = match mask {
        MaskFacts::None => (true, "no mask".to_string()),
        MaskFacts::RightPadded => (true, "mask is right-padded".to_string()),
        MaskFacts::NotRightPadded { row } => (
            true,
            format!(
                "mask row {row} has a masked step before a valid one: each row's valid steps \
                 are moved to the front for cuDNN and back after (beyond Keras; the loop's \
                 result exactly)"
            ),
        ),
        MaskFacts::EmptyRow { row } => (
            false,
            format!("mask row {row} is all False (cuDNN needs every length >= 1)"),
        ),
    };
    check(Condition::MaskNoEmptyRow, passed, reason)
}

/// Every condition's verdict for a config and a call (pure: no device is touched).
pub fn check_conditions(config: &GruConfig, facts: &CallFacts) -> Vec<ConditionCheck> {
    let act = config.activation;
    let ract = config.recurrent_activation;
    vec![
        check(
            Condition::Activation,
            act == Activation::Tanh,
            format!("activation is {}", act.name()),
        ),
        check(
            Condition::RecurrentActivation,
            ract == Activation::Sigmoid,
            format!("recurrent_activation is {}", ract.name()),
        ),
        recurrent_dropout_check(config.recurrent_dropout, facts.training),
        check(
            Condition::NotUnroll,
            !config.unroll,
            format!("unroll is {}", config.unroll),
        ),
        check(
            Condition::UseBias,
            config.use_bias,
            format!("use_bias is {}", config.use_bias),
        ),
        check(
            Condition::ResetAfter,
            config.reset_after,
            format!("reset_after is {}", config.reset_after),
        ),
        mask_check(facts.mask),
        check(
            Condition::EagerExecution,
            true,
            "Candle always executes eagerly".to_string(),
        ),
        check(
            Condition::CudaDevice,
            facts.device_is_cuda,
            if facts.device_is_cuda {
                "inputs are on a CUDA device".to_string()
            } else {
                "inputs are not on a CUDA device".to_string()
            },
        ),
        check(
            Condition::CudnnBuilt,
            facts.cudnn_built,
            if facts.cudnn_built {
                "this build has the cuDNN path".to_string()
            } else {
                "this build has no cuDNN GRU path (gru-cudnn with the `cudnn` feature)".to_string()
            },
        ),
        check(
            Condition::DTypeSupported,
            facts.dtype != FloatType::Other,
            format!("dtype is {:?}", facts.dtype),
        ),
        check(
            Condition::NoCellClip,
            config.cell_clip.is_none(),
            match config.cell_clip {
                Some(c) => format!("cell clip {c} (ONNX clip; cuDNN's GRU has none)"),
                None => "no cell clip".to_string(),
            },
        ),
    ]
}

/// Decides the path under the config's `use_cudnn`: `Auto` takes cuDNN when every check
/// passes; `Force` fails naming each failed check; otherwise (and always with `Never`) the
/// fused CPU kernels when they can run the call, else the fused step kernels when they can,
/// else the loop.
pub fn decide(config: &GruConfig, facts: &CallFacts) -> Result<Dispatch> {
    let checks = check_conditions(config, facts);
    let all_pass = checks.iter().all(|c| c.passed);
    let fallback = if facts.fused_available {
        ExecPath::Fused
    } else if facts.step_kernels_available {
        ExecPath::StepKernels
    } else {
        ExecPath::Loop
    };
    let path = match config.use_cudnn {
        UseCudnn::Never => fallback,
        UseCudnn::Auto if all_pass => ExecPath::Cudnn,
        UseCudnn::Auto => fallback,
        UseCudnn::Force if all_pass => ExecPath::Cudnn,
        UseCudnn::Force => {
            return Err(GruError::CudnnUnavailable {
                failed: checks
                    .iter()
                    .filter(|c| !c.passed)
                    .map(|c| format!("{}: {}", c.condition.name(), c.reason))
                    .collect(),
            })
        }
    };
    Ok(Dispatch {
        path,
        use_cudnn: config.use_cudnn,
        checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu_facts() -> CallFacts {
        CallFacts {
            training: false,
            mask: MaskFacts::None,
            device_is_cuda: true,
            cudnn_built: true,
            dtype: FloatType::F32,
            fused_available: false,
            step_kernels_available: false,
        }
    }

    fn only_failure(config: &GruConfig, facts: &CallFacts) -> Condition {
        let checks = check_conditions(config, facts);
        let failed: Vec<_> = checks.iter().filter(|c| !c.passed).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        failed[0].condition
    }

    #[test]
    fn all_pass_takes_cudnn_under_auto_and_force() {
        let mut c = GruConfig::new(3);
        assert_eq!(decide(&c, &gpu_facts()).unwrap().path, ExecPath::Cudnn);
        c.use_cudnn = UseCudnn::Force;
        assert_eq!(decide(&c, &gpu_facts()).unwrap().path, ExecPath::Cudnn);
        c.use_cudnn = UseCudnn::Never;
        assert_eq!(decide(&c, &gpu_facts()).unwrap().path, ExecPath::Loop);
    }

    #[test]
    fn condition_1_activation() {
        let mut c = GruConfig::new(3);
        c.activation = Activation::Relu;
        assert_eq!(only_failure(&c, &gpu_facts()), Condition::Activation);
    }

    #[test]
    fn condition_2_recurrent_activation() {
        let mut c = GruConfig::new(3);
        c.recurrent_activation = Activation::HardSigmoid;
        assert_eq!(
            only_failure(&c, &gpu_facts()),
            Condition::RecurrentActivation
        );
    }

    #[test]
    fn condition_3_recurrent_dropout_only_in_training() {
        let mut c = GruConfig::new(3);
        c.recurrent_dropout = 0.3;
        c.dropout = 0.5;
        let mut f = gpu_facts();
        assert!(check_conditions(&c, &f).iter().all(|c| c.passed));
        f.training = true;
        assert_eq!(only_failure(&c, &f), Condition::NoRecurrentDropout);
        // Input dropout alone never blocks cuDNN.
        c.recurrent_dropout = 0.0;
        assert!(check_conditions(&c, &f).iter().all(|c| c.passed));
        // A rate of 1 is not applied by Keras (0 < rate < 1 only).
        c.recurrent_dropout = 1.0;
        assert!(check_conditions(&c, &f).iter().all(|c| c.passed));
    }

    #[test]
    fn condition_4_unroll() {
        let mut c = GruConfig::new(3);
        c.unroll = true;
        assert_eq!(only_failure(&c, &gpu_facts()), Condition::NotUnroll);
    }

    #[test]
    fn condition_5_use_bias() {
        let mut c = GruConfig::new(3);
        c.use_bias = false;
        assert_eq!(only_failure(&c, &gpu_facts()), Condition::UseBias);
    }

    #[test]
    fn condition_6_reset_after() {
        let mut c = GruConfig::new(3);
        c.reset_after = false;
        assert_eq!(only_failure(&c, &gpu_facts()), Condition::ResetAfter);
    }

    #[test]
    fn condition_7_mask() {
        let c = GruConfig::new(3);
        let mut f = gpu_facts();
        f.mask = MaskFacts::RightPadded;
        assert!(check_conditions(&c, &f).iter().all(|c| c.passed));
        // Beyond Keras: left padding and holes run on cuDNN through compaction.
        f.mask = MaskFacts::NotRightPadded { row: 1 };
        assert!(check_conditions(&c, &f).iter().all(|c| c.passed));
        f.mask = MaskFacts::EmptyRow { row: 0 };
        assert_eq!(only_failure(&c, &f), Condition::MaskNoEmptyRow);
    }

    #[test]
    fn an_empty_row_wins_over_left_padding_in_any_order() {
        let left_then_empty = [false, true, false, false];
        assert_eq!(
            MaskFacts::of(&left_then_empty, 2, 2),
            MaskFacts::EmptyRow { row: 1 }
        );
        let empty_then_left = [false, false, false, true];
        assert_eq!(
            MaskFacts::of(&empty_then_left, 2, 2),
            MaskFacts::EmptyRow { row: 0 }
        );
        let holes = [true, false, true, true, true, true];
        assert_eq!(
            MaskFacts::of(&holes, 2, 3),
            MaskFacts::NotRightPadded { row: 0 }
        );
    }

    #[test]
    fn condition_8_eager_always_holds() {
        let c = GruConfig::new(3);
        let checks = check_conditions(&c, &gpu_facts());
        let eager = checks
            .iter()
            .find(|c| c.condition == Condition::EagerExecution)
            .unwrap();
        assert!(eager.passed);
        assert_eq!(checks.len(), 12);
    }

    #[test]
    fn a_cell_clip_keeps_cudnn_out() {
        let mut c = GruConfig::new(3);
        c.cell_clip = Some(0.5);
        assert_eq!(only_failure(&c, &gpu_facts()), Condition::NoCellClip);
    }

    #[test]
    fn environment_conditions() {
        let c = GruConfig::new(3);
        let mut f = gpu_facts();
        f.device_is_cuda = false;
        assert_eq!(only_failure(&c, &f), Condition::CudaDevice);
        let mut f = gpu_facts();
        f.cudnn_built = false;
        assert_eq!(only_failure(&c, &f), Condition::CudnnBuilt);
        let mut f = gpu_facts();
        f.dtype = FloatType::Other;
        assert_eq!(only_failure(&c, &f), Condition::DTypeSupported);
    }

    #[test]
    fn force_names_every_failed_condition() {
        let mut c = GruConfig::new(3);
        c.use_cudnn = UseCudnn::Force;
        c.activation = Activation::Relu;
        let mut f = gpu_facts();
        f.device_is_cuda = false;
        let err = decide(&c, &f).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("activation == tanh") && msg.contains("device is CUDA"),
            "{msg}"
        );
        // Auto falls back and says why.
        c.use_cudnn = UseCudnn::Auto;
        let d = decide(&c, &f).unwrap();
        assert_eq!(d.path, ExecPath::Loop);
        assert!(d.explain().contains("relu"));
    }

    #[test]
    fn cpu_calls_take_the_fused_path_when_available() {
        let c = GruConfig::new(3);
        let mut f = gpu_facts();
        f.device_is_cuda = false;
        f.fused_available = true;
        let d = decide(&c, &f).unwrap();
        assert_eq!(d.path, ExecPath::Fused);
        assert!(d.explain().starts_with("fused"));
        f.fused_available = false;
        assert_eq!(decide(&c, &f).unwrap().path, ExecPath::Loop);
        // cuDNN wins when it can run.
        let mut g = gpu_facts();
        g.fused_available = true;
        assert_eq!(decide(&c, &g).unwrap().path, ExecPath::Cudnn);
    }

    #[test]
    fn gpu_calls_cudnn_cannot_run_take_the_step_kernels() {
        let mut c = GruConfig::new(3);
        c.reset_after = false;
        let mut f = gpu_facts();
        f.step_kernels_available = true;
        let d = decide(&c, &f).unwrap();
        assert_eq!(d.path, ExecPath::StepKernels);
        assert!(
            d.explain().starts_with("fused step kernels"),
            "{}",
            d.explain()
        );
        assert!(d.explain().contains("reset_after"), "{}", d.explain());
        // Under Never too; cuDNN still wins under Auto when it can run.
        c.reset_after = true;
        c.use_cudnn = UseCudnn::Never;
        assert_eq!(decide(&c, &f).unwrap().path, ExecPath::StepKernels);
        c.use_cudnn = UseCudnn::Auto;
        assert_eq!(decide(&c, &f).unwrap().path, ExecPath::Cudnn);
        // Switched off (or not built): the loop.
        f.step_kernels_available = false;
        c.use_cudnn = UseCudnn::Never;
        assert_eq!(decide(&c, &f).unwrap().path, ExecPath::Loop);
    }

    #[test]
    fn mask_facts_classification() {
        assert_eq!(
            MaskFacts::of(&[true, false, false, false], 2, 2),
            MaskFacts::EmptyRow { row: 1 }
        );
        assert_eq!(MaskFacts::of(&[true, true], 1, 2), MaskFacts::RightPadded);
        assert_eq!(
            MaskFacts::of(&[true, false, false, false, true, true], 2, 3),
            MaskFacts::NotRightPadded { row: 1 }
        );
    }
}
