// One idea: the elementwise helpers of the fused GRU path's recurrent dropout (Keras'
// implementation 1: one mask per gate on the state).
//
// gru_mask_rows: dst[g] = src * m_g for the gates g < 3, over `rows` rows of u (row r uses
//   the mask of batch row r % B, so the states of every step are masked in one launch).
// gru_mask_accumulate: dst += src * m_gate (the state's gradient through gate `step`'s
//   masked product).
#include "gru_step_args.h"

template <typename T, typename C> GRU_DEV void gru_mask_rows(const GruStepArgs& a, long long n) {
    const int u = a.units;
    const long long rows = a.rows;
    const long long row = n / u, j = n % u;
    const long long mi = (row % a.batch) * u + j;
    const T* src = gru_ptr<const T>(a.src);
    const T* m = gru_ptr<const T>(a.rmask);
    T* dst = gru_ptr<T>(a.dst);
    const C v = gru_load<C>(src, n);
    for (int g = 0; g < 3; ++g) {
        gru_store(dst, g * rows * u + n, v * gru_load<C>(m, (long long)g * a.batch * u + mi));
    }
}

template <typename T, typename C> GRU_DEV void gru_mask_accumulate(const GruStepArgs& a, long long n) {
    const T* m = gru_ptr<const T>(a.rmask) + (long long)a.step * a.batch * a.units;
    T* dst = gru_ptr<T>(a.dst);
    gru_store(dst, n, gru_load<C>(dst, n) + gru_load<C>(gru_ptr<const T>(a.src), n) * gru_load<C>(m, n));
}

// One thread per element of `rows` rows of u.
#define GRU_ROWS_KERNEL(name, suffix, T, C)                                                \
    extern "C" __global__ void name##_##suffix(GruStepArgs a) {                            \
        const long long n = (long long)blockIdx.x * blockDim.x + threadIdx.x;              \
        if (n >= (long long)a.rows * a.units) return;                                      \
        name<T, C>(a, n);                                                                  \
    }

#ifdef __CUDACC__
#define GRU_ROWS_KERNELS(name)                                                             \
    GRU_ROWS_KERNEL(name, f32, float, float) GRU_ROWS_KERNEL(name, f64, double, double)    \
    GRU_ROWS_KERNEL(name, f16, __half, float) GRU_ROWS_KERNEL(name, bf16, __nv_bfloat16, float)
#else
#define GRU_ROWS_KERNELS(name)                                                             \
    GRU_ROWS_KERNEL(name, f32, float, float) GRU_ROWS_KERNEL(name, f64, double, double)
#endif

GRU_ROWS_KERNELS(gru_mask_rows)
GRU_ROWS_KERNELS(gru_mask_accumulate)
