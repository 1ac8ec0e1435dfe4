// One idea: the arguments every step kernel takes, one struct passed by value, and the
// element loads and stores of each storage type.
//
// The layout is gru_core::step::StepArgs (repr(C)); buffers are device (or, in the host
// build, host) addresses, 0 where absent. Shapes: B batch, T time, u units; a step kernel
// runs one thread per (b, j) of the (B, u) state.
#pragma once

struct GruStepArgs {
    int batch;
    int time;
    int units;
    int step;              // processing position k (gru_mask_accumulate: the gate 0..3)
    int t;                 // the input time index of step k (T-1-k with go_backwards)
    int zero_output_for_mask;
    int act;               // the candidate's activation code (gru_activations.cuh)
    int rec_act;           // the gates' activation code
    float act_alpha;
    float act_beta;
    float rec_alpha;
    float rec_beta;
    double clip;           // > 0: ONNX's cell clip on every gate pre-activation
    int rows;              // gru_mask_rows: rows of src/dst (a multiple of batch)
    unsigned long long xp;       // (B, T, 3u): the input projection, input bias included
    unsigned long long hp;       // (B, 3u): this step's recurrent product h @ U
    unsigned long long rbias;    // (3u): reset_after's recurrent bias
    unsigned long long h;        // (B, u): the state, updated in place
    unsigned long long out_prev; // (B, u): the last output, updated in place
    unsigned long long mask;     // (B, T) u8: 1 = use the step
    unsigned long long seq;      // (B, T, u): the outputs, in processing order
    unsigned long long hmask;    // (B, u): the candidate's recurrent dropout mask
    unsigned long long hq;       // (B, u): reset_before's q @ U_h
    unsigned long long s_hprev;  // step k's saved state before the step (B, u)
    unsigned long long s_z;      // ... z
    unsigned long long s_az;     // ... z's pre-activation
    unsigned long long s_r;      // ... r
    unsigned long long s_ar;     // ... r's pre-activation
    unsigned long long s_hh;     // ... the candidate
    unsigned long long s_ah;     // ... the candidate's pre-activation
    unsigned long long s_extra;  // ... reset_after: hp_h + b_h; reset_before: q
    unsigned long long dseq;     // (B, T, u): d loss / d outputs
    unsigned long long dh;       // (B, u): d loss / d state, updated in place
    unsigned long long dcarry;   // (B, u): d of the output a masked step repeats
    unsigned long long dxp;      // (B, T, 3u): d loss / d input projection
    unsigned long long dhp;      // (B, 3u): step k's d loss / d recurrent product
    unsigned long long dq;       // (B, u): reset_before's da_h @ U_h^T
    unsigned long long src;      // gru_mask_rows / gru_mask_accumulate: (rows, u)
    unsigned long long dst;      // gru_mask_rows: 3 blocks of (rows, u); accumulate: (rows, u)
    unsigned long long rmask;    // (3, B, u): the recurrent dropout masks z, r, h
};

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#define GRU_DEV __device__ __forceinline__
#else
#define GRU_DEV inline
#endif

template <typename C, typename T> GRU_DEV C gru_load(const T* p, long long i) { return (C)p[i]; }
template <typename T, typename C> GRU_DEV void gru_store(T* p, long long i, C v) { p[i] = (T)v; }

#ifdef __CUDACC__
template <> GRU_DEV float gru_load<float, __half>(const __half* p, long long i) { return __half2float(p[i]); }
template <> GRU_DEV void gru_store<__half, float>(__half* p, long long i, float v) { p[i] = __float2half(v); }
template <> GRU_DEV float gru_load<float, __nv_bfloat16>(const __nv_bfloat16* p, long long i) {
    return __bfloat162float(p[i]);
}
template <> GRU_DEV void gru_store<__nv_bfloat16, float>(__nv_bfloat16* p, long long i, float v) {
    p[i] = __float2bfloat16(v);
}
#endif

// The typed pointer of an address (null for 0).
template <typename T> GRU_DEV T* gru_ptr(unsigned long long a) { return (T*)a; }

// ONNX's cell clip.
template <typename C> GRU_DEV C gru_clip(C x, double clip) {
    if (clip > 0.0) {
        C c = (C)clip;
        return x > c ? c : (x < -c ? -c : x);
    }
    return x;
}

// No gradient reaches a pre-activation the clip held at a bound (a is the clipped value).
template <typename C> GRU_DEV C gru_clip_grad(C g, C a, double clip) {
    if (clip > 0.0) {
        C c = (C)clip;
        return (a > -c && a < c) ? g : C(0);
    }
    return g;
}

// One thread per element of the (B, u) state: kernels name_f32, name_f64 and, on the
// device, name_f16 and name_bf16 (f32 arithmetic).
#define GRU_STEP_KERNEL(name, body, suffix, T, C)                                          \
    extern "C" __global__ void name##_##suffix(GruStepArgs a) {                            \
        const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;              \
        if (n >= (long long)a.batch * a.units) return;                                     \
        body<T, C>(a, (int)(n / a.units), (int)(n % a.units));                             \
    }

#define GRU_STEP_KERNELS(name, body)                                                       \
    GRU_STEP_KERNEL(name, body, f32, float, float)                                         \
    GRU_STEP_KERNEL(name, body, f64, double, double)                                       \
    GRU_STEP_KERNELS_HALF(name, body)

#ifdef __CUDACC__
#define GRU_STEP_KERNELS_HALF(name, body)                                                  \
    GRU_STEP_KERNEL(name, body, f16, __half, float)                                        \
    GRU_STEP_KERNEL(name, body, bf16, __nv_bfloat16, float)
#else
#define GRU_STEP_KERNELS_HALF(name, body)
#endif
