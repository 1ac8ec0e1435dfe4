//! Per-thread caches: one cuDNN handle per device, and per (device, dtype, input, units,
//! math) a plan holding the RNN descriptor, the weight-space layout cuDNN reports, and per
//! (batch, time) the data descriptors and temp-space sizes. A second call with the same shape
//! and lengths makes no descriptor call at all.

use crate::error::CudnnError;
use crate::result::Result;
use crate::safe::{
    DropoutDescriptor, Handle, RnnCall, RnnDataDescriptor, RnnDescriptor, RnnMath, RnnShape,
    TensorDescriptor, ZeroFill,
};
use crate::weights::Offsets;
use candle_core::cuda_backend::cudarc::cudnn::sys;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr, ValidAsZeroBits};
use candle_core::cuda_backend::{CudaDType, CudaDevice, DeviceId};
use candle_core::{DType, WithDType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use sys::cudnnForwardMode_t as FwdMode;

/// A float type the path runs in, with its cuDNN data type and math settings.
pub(crate) trait Elem:
    CudaDType + DeviceRepr + ValidAsZeroBits + WithDType + Copy + 'static
{
    /// cuDNN's data type.
    const DATA: sys::cudnnDataType_t;
    /// The descriptor's math settings (`tf32`: allow TF32 for f32).
    fn math(tf32: bool) -> RnnMath;
}

impl Elem for f32 {
    const DATA: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
    fn math(tf32: bool) -> RnnMath {
        RnnMath {
            data_type: Self::DATA,
            math_prec: Self::DATA,
            math_type: if tf32 {
                sys::cudnnMathType_t::CUDNN_DEFAULT_MATH
            } else {
                sys::cudnnMathType_t::CUDNN_FMA_MATH
            },
        }
    }
}

impl Elem for f64 {
    const DATA: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_DOUBLE;
    fn math(_: bool) -> RnnMath {
        RnnMath {
            data_type: Self::DATA,
            math_prec: Self::DATA,
            math_type: sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        }
    }
}

/// f16 data with f32 math precision and `CUDNN_TENSOR_OP_MATH`, as PyTorch runs f16 RNNs
/// (same sources as for bf16 below).
impl Elem for half::f16 {
    const DATA: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_HALF;
    fn math(_: bool) -> RnnMath {
        RnnMath {
            data_type: Self::DATA,
            math_prec: sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            math_type: sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        }
    }
}

/// bf16 data with f32 math precision and `CUDNN_DEFAULT_MATH`, as PyTorch runs bf16 RNNs:
/// its `promote_rnn_math_type` (aten/src/ATen/native/cudnn/RNN.cpp) gives f32 math precision
/// for half and bf16, and its `RNNDescriptor::set` (aten/src/ATen/cudnn/Descriptors.h) asks
/// for `CUDNN_TENSOR_OP_MATH` only for half data and `CUDNN_DEFAULT_MATH` otherwise (with
/// TF32 allowed, PyTorch's default). The GPU test `gpu_half_types_track_f32` runs it.
impl Elem for half::bf16 {
    const DATA: sys::cudnnDataType_t = sys::cudnnDataType_t::CUDNN_DATA_BFLOAT16;
    fn math(_: bool) -> RnnMath {
        RnnMath {
            data_type: Self::DATA,
            math_prec: sys::cudnnDataType_t::CUDNN_DATA_FLOAT,
            math_type: sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        }
    }
}

/// What cuDNN reported about the weight space of a GRU (for tests and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightLayout {
    /// `cudnnGetRNNWeightSpaceSize`, in bytes.
    pub bytes: usize,
    /// Element offsets of each linear layer's matrix and bias.
    pub offsets: Offsets,
    /// Dimensions of each linear layer's matrix descriptor (IDs 0..6).
    pub matrix_dims: Vec<Vec<i32>>,
    /// Dimensions of each linear layer's bias descriptor.
    pub bias_dims: Vec<Vec<i32>>,
    /// Whether the space is exactly six matrices then six biases, packed, in ID order (the
    /// canonical layout the op builds): then the op passes the weights without a copy.
    pub direct: bool,
}

/// The shape-independent part of a plan.
pub(crate) struct PlanCore {
    pub handle: Rc<Handle>,
    _dropout: DropoutDescriptor,
    pub rnn: RnnDescriptor,
    pub layout: WeightLayout,
    pub data_type: sys::cudnnDataType_t,
    pub elem_bytes: usize,
    pub input: usize,
    pub units: usize,
}

impl PlanCore {
    /// The call of one shape: its descriptors and the buffer sizes, for training or
    /// inference.
    pub fn call<'a>(&'a self, sp: &'a ShapePlan, time: usize, training: bool) -> RnnCall<'a> {
        let (work_bytes, reserve_bytes) = if training { sp.train } else { sp.infer };
        RnnCall {
            handle: &self.handle,
            rnn: &self.rnn,
            x: &sp.x,
            y: &sp.y,
            h: &sp.h,
            shape: RnnShape {
                batch: sp.lengths.len(),
                time,
                input: self.input,
                units: self.units,
                elem_bytes: self.elem_bytes,
                weight_bytes: self.layout.bytes,
                work_bytes,
                reserve_bytes,
            },
        }
    }
}

/// The descriptors of one (batch, time) shape.
pub(crate) struct ShapePlan {
    pub x: RnnDataDescriptor,
    pub y: RnnDataDescriptor,
    pub h: TensorDescriptor,
    lengths: Vec<i32>,
    /// (workspace, reserve) bytes for inference and for training.
    pub infer: (usize, usize),
    pub train: (usize, usize),
    /// Full lengths (time, for every row) on the device, for calls without a mask.
    pub full_lengths: Option<CudaSlice<i32>>,
}

/// A plan: the core and its shapes.
pub(crate) struct Plan {
    pub core: PlanCore,
    shapes: HashMap<(usize, usize), ShapePlan>,
}

/// Shapes kept per plan; past this the cache starts over (a training loop over many
/// sequence lengths must not grow without bound).
const MAX_SHAPES: usize = 64;

impl Plan {
    fn new<T: Elem>(
        dev: &CudaDevice,
        handle: Rc<Handle>,
        input: usize,
        units: usize,
        tf32: bool,
    ) -> candle_core::Result<Plan> {
        let dropout = DropoutDescriptor::none(&handle)?;
        let rnn = RnnDescriptor::gru(T::math(tf32), input, units, &dropout)?;
        let layout = weight_layout::<T>(dev, &handle, &rnn, input, units)?;
        PLANS_BUILT.with(|c| c.set(c.get() + 1));
        Ok(Plan {
            core: PlanCore {
                handle,
                _dropout: dropout,
                rnn,
                layout,
                data_type: T::DATA,
                elem_bytes: std::mem::size_of::<T>(),
                input,
                units,
            },
            shapes: HashMap::new(),
        })
    }

    /// The descriptors for (batch = lengths.len(), time), set for these lengths.
    pub fn shape(
        &mut self,
        dev: &CudaDevice,
        time: usize,
        lengths: &[i32],
    ) -> candle_core::Result<(&PlanCore, &mut ShapePlan)> {
        let batch = lengths.len();
        let key = (batch, time);
        if !self.shapes.contains_key(&key) && self.shapes.len() >= MAX_SHAPES {
            self.shapes.clear();
        }
        let core = &self.core;
        let sp = match self.shapes.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(ShapePlan {
                x: RnnDataDescriptor::new()?,
                y: RnnDataDescriptor::new()?,
                h: TensorDescriptor::packed(core.data_type, &[1, batch, core.units])?,
                lengths: Vec::new(),
                infer: (0, 0),
                train: (0, 0),
                full_lengths: None,
            }),
        };
        if sp.lengths != lengths {
            let mut zero = ZeroFill::default();
            sp.x.set(core.data_type, time, lengths, core.input, &mut zero)?;
            sp.y.set(core.data_type, time, lengths, core.units, &mut zero)?;
            let (handle, rnn) = (&core.handle, &core.rnn);
            sp.infer = rnn.temp_space_sizes(handle, FwdMode::CUDNN_FWD_MODE_INFERENCE, &sp.x)?;
            sp.train = rnn.temp_space_sizes(handle, FwdMode::CUDNN_FWD_MODE_TRAINING, &sp.x)?;
            sp.lengths = lengths.to_vec();
            SHAPES_SET.with(|c| c.set(c.get() + 1));
        }
        if sp.full_lengths.is_none() && lengths.iter().all(|&l| l as usize == time) {
            let full: Vec<i32> = lengths.to_vec();
            sp.full_lengths = Some(dev.clone_htod(&full)?);
        }
        Ok((core, sp))
    }
}

/// Asks cuDNN where each linear layer's matrix and bias live in the weight space.
fn weight_layout<T: Elem>(
    dev: &CudaDevice,
    handle: &Handle,
    rnn: &RnnDescriptor,
    input: usize,
    units: usize,
) -> candle_core::Result<WeightLayout> {
    let elem = std::mem::size_of::<T>();
    let bytes = rnn.weight_space_size(handle)?;
    if bytes % elem != 0 {
        return Err(CudnnError::Layout {
            what: "weight space size".into(),
            expected: format!("a multiple of {elem} bytes"),
            got: format!("{bytes} bytes"),
        }
        .into());
    }
    let space = dev.alloc_zeros::<u8>(bytes.max(1))?;
    let (m_desc, b_desc) = (TensorDescriptor::new()?, TensorDescriptor::new()?);
    let mut offsets = Offsets {
        matrix: [0; 6],
        bias: [0; 6],
    };
    let (mut matrix_dims, mut bias_dims) = (Vec::new(), Vec::new());
    for id in 0..6 {
        let (m, b) = rnn.weight_params(handle, &space, id, &m_desc, &b_desc)?;
        let at = |what: &str, off: usize| -> Result<usize> {
            match off % elem {
                0 => Ok(off / elem),
                _ => Err(CudnnError::Layout {
                    what: format!("linear layer {id} {what} offset"),
                    expected: format!("a multiple of {elem} bytes"),
                    got: format!("{off} bytes"),
                }),
            }
        };
        offsets.matrix[id] = at("matrix", m)?;
        offsets.bias[id] = at("bias", b)?;
        let (mt, md) = m_desc.dims()?;
        let (bt, bd) = b_desc.dims()?;
        let cols = if id < 3 { input } else { units };
        let count = |d: &[i32]| d.iter().map(|&v| v.max(0) as usize).product::<usize>();
        if mt != T::DATA || count(&md) != units * cols {
            return Err(CudnnError::Layout {
                what: format!("linear layer {id} matrix"),
                expected: format!("{:?} with {units}x{cols} elements", T::DATA),
                got: format!("{mt:?} {md:?}"),
            }
            .into());
        }
        if bt != T::DATA || count(&bd) != units {
            return Err(CudnnError::Layout {
                what: format!("linear layer {id} bias"),
                expected: format!("{:?} with {units} elements", T::DATA),
                got: format!("{bt:?} {bd:?}"),
            }
            .into());
        }
        matrix_dims.push(md);
        bias_dims.push(bd);
    }
    let (canonical, total) = Offsets::host_model(input, units);
    Ok(WeightLayout {
        bytes,
        offsets,
        matrix_dims,
        bias_dims,
        direct: offsets == canonical && bytes == total * elem,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PlanKey {
    device: DeviceId,
    dtype: DType,
    input: usize,
    units: usize,
    tf32: bool,
}

thread_local! {
    static HANDLES: RefCell<HashMap<DeviceId, Rc<Handle>>> = RefCell::new(HashMap::new());
    static PLANS: RefCell<HashMap<PlanKey, Rc<RefCell<Plan>>>> = RefCell::new(HashMap::new());
    static PLANS_BUILT: Cell<usize> = const { Cell::new(0) };
    static SHAPES_SET: Cell<usize> = const { Cell::new(0) };
}

fn handle_for(dev: &CudaDevice) -> candle_core::Result<Rc<Handle>> {
    HANDLES.with(|h| {
        if let Some(handle) = h.borrow().get(&dev.id()) {
            return Ok(handle.clone());
        }
        let handle = Rc::new(Handle::new(dev.cuda_stream())?);
        h.borrow_mut().insert(dev.id(), handle.clone());
        Ok(handle)
    })
}

/// Runs `f` with this thread's plan for (device, T, input, units, tf32), building it once.
pub(crate) fn with_plan<T: Elem, R>(
    dev: &CudaDevice,
    input: usize,
    units: usize,
    tf32: bool,
    f: impl FnOnce(&mut Plan) -> candle_core::Result<R>,
) -> candle_core::Result<R> {
    let key = PlanKey {
        device: dev.id(),
        dtype: T::DTYPE,
        input,
        units,
        tf32,
    };
    let plan = PLANS.with(|p| p.borrow().get(&key).cloned());
    let plan = match plan {
        Some(p) => p,
        None => {
            let built = Rc::new(RefCell::new(Plan::new::<T>(
                dev,
                handle_for(dev)?,
                input,
                units,
                tf32,
            )?));
            PLANS.with(|p| p.borrow_mut().insert(key, built.clone()));
            built
        }
    };
    let mut plan = plan.try_borrow_mut().map_err(|_| CudnnError::Input {
        what: "cuDNN plan".into(),
        expected: "no nested use on one thread".into(),
        got: "a plan already in use".into(),
    })?;
    f(&mut plan)
}

/// How often this thread built a plan and (re)set a shape's descriptors: a repeated call
/// with the same shape and lengths must leave both unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Plans built (RNN descriptor, weight-space query).
    pub plans_built: usize,
    /// Data descriptors set and temp-space sizes asked for.
    pub shapes_set: usize,
}

/// This thread's cache counters.
pub fn cache_stats() -> CacheStats {
    CacheStats {
        plans_built: PLANS_BUILT.with(|c| c.get()),
        shapes_set: SHAPES_SET.with(|c| c.get()),
    }
}

/// What cuDNN reports about the weight space of a GRU with these sizes, in the dtype of
/// `dtype` (f32, f64, f16 or bf16), on `dev`.
pub fn weight_layout_of(
    dev: &CudaDevice,
    dtype: DType,
    input: usize,
    units: usize,
) -> candle_core::Result<WeightLayout> {
    fn get<T: Elem>(dev: &CudaDevice, i: usize, u: usize) -> candle_core::Result<WeightLayout> {
        with_plan::<T, _>(dev, i, u, false, |p| Ok(p.core.layout.clone()))
    }
    match dtype {
        DType::F32 => get::<f32>(dev, input, units),
        DType::F64 => get::<f64>(dev, input, units),
        DType::F16 => get::<half::f16>(dev, input, units),
        DType::BF16 => get::<half::bf16>(dev, input, units),
        other => Err(CudnnError::Input {
            what: "dtype".into(),
            expected: "f32, f64, f16 or bf16".into(),
            got: format!("{other:?}"),
        }
        .into()),
    }
}
