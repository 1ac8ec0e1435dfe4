// One idea: the gate math of one backward (BPTT) step of the fused GRU path, for every
// (batch row, unit) at once, newest step first: Keras' output and state rules at masked
// steps, the gate derivatives, and this step's gradients of the input projection (dxp, row
// b*T + t) and of the recurrent product (dhp, step k's (B, 3u) block). One thread per
// element of the (B, u) state.
//
// reset_after: one kernel; the host then adds dhp @ U^T to dh.
// reset_before: gru_bwd_before_a (the rules, dz before its derivative, da_h); the host runs
// dq = da_h @ U_h^T; gru_bwd_before_b (dr, the state's share through q, the gate
// derivatives). The sequence around them is gru_core::step (backward.rs).
#include "gru_activations.cuh"
#include "gru_step_args.h"

// The masked-step rules, backwards: returns dn = d(h_new) of element i; updates dh (a valid
// step passes dn * z to the previous state) and dcarry (a masked step passes its output's
// gradient on to the step whose output it repeated, unless zero_output_for_mask).
template <typename T, typename C> GRU_DEV C gru_bwd_rules(const GruStepArgs& a, int b, int j, C z) {
    const long long i = (long long)b * a.units + j;
    const unsigned char* mask = gru_ptr<const unsigned char>(a.mask);
    const bool valid = mask == 0 || mask[(long long)b * a.time + a.t] != 0;
    T* dh = gru_ptr<T>(a.dh);
    T* dc = gru_ptr<T>(a.dcarry);
    const C dout = gru_load<C>(gru_ptr<const T>(a.dseq), ((long long)b * a.time + a.step) * a.units + j)
                   + gru_load<C>(dc, i);
    if (valid) {
        const C dn = gru_load<C>(dh, i) + dout;
        gru_store(dc, i, C(0));
        gru_store(dh, i, dn * z);
        return dn;
    }
    gru_store(dc, i, a.zero_output_for_mask ? C(0) : dout);
    return C(0);
}

template <typename T, typename C> GRU_DEV void gru_bwd_after(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const C z = gru_load<C>(gru_ptr<const T>(a.s_z), i), r = gru_load<C>(gru_ptr<const T>(a.s_r), i);
    const C hh = gru_load<C>(gru_ptr<const T>(a.s_hh), i);
    const C az = gru_load<C>(gru_ptr<const T>(a.s_az), i), ar = gru_load<C>(gru_ptr<const T>(a.s_ar), i);
    const C ah = gru_load<C>(gru_ptr<const T>(a.s_ah), i);
    const C hprev = gru_load<C>(gru_ptr<const T>(a.s_hprev), i);
    const C pre = gru_load<C>(gru_ptr<const T>(a.s_extra), i);
    const C ra = (C)a.rec_alpha, rbeta = (C)a.rec_beta;
    const C dn = gru_bwd_rules<T, C>(a, b, j, z);
    C dz = dn * (hprev - hh);
    C dah = dn * (C(1) - z) * gru_derivative(a.act, ah, hh, (C)a.act_alpha, (C)a.act_beta);
    dah = gru_clip_grad(dah, ah, a.clip);
    C dr = dah * pre;
    dz = gru_clip_grad(dz * gru_derivative(a.rec_act, az, z, ra, rbeta), az, a.clip);
    dr = gru_clip_grad(dr * gru_derivative(a.rec_act, ar, r, ra, rbeta), ar, a.clip);
    T* dx = gru_ptr<T>(a.dxp) + ((long long)b * a.time + a.t) * 3 * u;
    T* dp = gru_ptr<T>(a.dhp) + (long long)b * 3 * u;
    gru_store(dx, j, dz);
    gru_store(dx, u + j, dr);
    gru_store(dx, 2 * u + j, dah);
    gru_store(dp, j, dz);
    gru_store(dp, u + j, dr);
    gru_store(dp, 2 * u + j, dah * r);
}

template <typename T, typename C> GRU_DEV void gru_bwd_before_a(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const C z = gru_load<C>(gru_ptr<const T>(a.s_z), i), hh = gru_load<C>(gru_ptr<const T>(a.s_hh), i);
    const C ah = gru_load<C>(gru_ptr<const T>(a.s_ah), i);
    const C hprev = gru_load<C>(gru_ptr<const T>(a.s_hprev), i);
    const C dn = gru_bwd_rules<T, C>(a, b, j, z);
    C dah = dn * (C(1) - z) * gru_derivative(a.act, ah, hh, (C)a.act_alpha, (C)a.act_beta);
    dah = gru_clip_grad(dah, ah, a.clip);
    T* dx = gru_ptr<T>(a.dxp) + ((long long)b * a.time + a.t) * 3 * u;
    T* dp = gru_ptr<T>(a.dhp) + (long long)b * 3 * u;
    gru_store(dx, j, dn * (hprev - hh));  // dz before z's derivative, finished in part b
    gru_store(dx, 2 * u + j, dah);
    gru_store(dp, 2 * u + j, dah);
}

template <typename T, typename C> GRU_DEV void gru_bwd_before_b(const GruStepArgs& a, int b, int j) {
    const int u = a.units;
    const long long i = (long long)b * u + j;
    const C z = gru_load<C>(gru_ptr<const T>(a.s_z), i), r = gru_load<C>(gru_ptr<const T>(a.s_r), i);
    const C az = gru_load<C>(gru_ptr<const T>(a.s_az), i), ar = gru_load<C>(gru_ptr<const T>(a.s_ar), i);
    const C hprev = gru_load<C>(gru_ptr<const T>(a.s_hprev), i);
    const T* hm = gru_ptr<const T>(a.hmask);
    const C m = hm ? gru_load<C>(hm, i) : C(1);
    const C dq = gru_load<C>(gru_ptr<const T>(a.dq), i);
    T* dh = gru_ptr<T>(a.dh);
    gru_store(dh, i, gru_load<C>(dh, i) + dq * r * m);
    const C ra = (C)a.rec_alpha, rbeta = (C)a.rec_beta;
    T* dx = gru_ptr<T>(a.dxp) + ((long long)b * a.time + a.t) * 3 * u;
    T* dp = gru_ptr<T>(a.dhp) + (long long)b * 3 * u;
    const C dz = gru_clip_grad(gru_load<C>(dx, j) * gru_derivative(a.rec_act, az, z, ra, rbeta), az, a.clip);
    const C dr = gru_clip_grad(dq * (hprev * m) * gru_derivative(a.rec_act, ar, r, ra, rbeta), ar, a.clip);
    gru_store(dx, j, dz);
    gru_store(dx, u + j, dr);
    gru_store(dp, j, dz);
    gru_store(dp, u + j, dr);
}

GRU_STEP_KERNELS(gru_bwd_after, gru_bwd_after)
GRU_STEP_KERNELS(gru_bwd_before_a, gru_bwd_before_a)
GRU_STEP_KERNELS(gru_bwd_before_b, gru_bwd_before_b)
