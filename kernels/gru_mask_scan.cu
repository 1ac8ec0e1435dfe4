// One idea: read a Keras mask once and derive everything the cuDNN path needs from it.
//
// One thread per batch row b of a (batch, time) u8 mask (1 = use the step):
//   lengths[b]   number of valid steps (cuDNN's seqLengthArray; also devSeqLengths)
//   flags[b]     bit 0: the row is right-padded (no valid step after a masked one, in input
//                order); bit 1: the row is all False (cuDNN cannot run a zero length)
//   gather[b*T+j] for j < lengths[b]: the global input row (b*T + t) of the row's j-th valid
//                step in processing order (t = k, or T-1-k with go_backwards): the left-pad
//                shift / compaction. gather_keep = 1 there, 0 (and row b*T) after.
//   expand[b*T+k] for each processing position k: the compacted output row (b*T + j) whose
//                value Keras outputs at k (the last valid step at or before k), and
//                expand_keep = 0 where Keras outputs zeros (before the first valid step, or
//                at masked steps with zero_output_for_mask).
// The host reference of the same rules is gru_cudnn::host (valid_steps, compact, expand).
extern "C" __global__ void gru_mask_scan(
    const unsigned char* __restrict__ mask,
    int batch,
    int time,
    int go_backwards,
    int zero_output_for_mask,
    int* __restrict__ lengths,
    int* __restrict__ flags,
    unsigned int* __restrict__ gather,
    unsigned char* __restrict__ gather_keep,
    unsigned int* __restrict__ expand,
    unsigned char* __restrict__ expand_keep)
{
    const int b = blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= batch) {
        return;
    }
    const size_t row = (size_t)b * (size_t)time;
    const unsigned char* m = mask + row;

    int right_padded = 1;
    int seen_masked = 0;
    for (int t = 0; t < time; ++t) {
        if (m[t] == 0) {
            seen_masked = 1;
        } else if (seen_masked) {
            right_padded = 0;
        }
    }

    int j = 0;  // valid steps seen so far, in processing order
    for (int k = 0; k < time; ++k) {
        const int t = go_backwards ? time - 1 - k : k;
        const int valid = m[t] != 0;
        if (valid) {
            gather[row + j] = (unsigned int)(row + t);
            gather_keep[row + j] = 1;
            ++j;
        }
        const int keep = valid || (!zero_output_for_mask && j > 0);
        expand[row + k] = (unsigned int)(row + (keep ? j - 1 : 0));
        expand_keep[row + k] = (unsigned char)keep;
    }
    for (int r = j; r < time; ++r) {
        gather[row + r] = (unsigned int)row;
        gather_keep[row + r] = 0;
    }
    lengths[b] = j;
    flags[b] = right_padded | (j == 0 ? 2 : 0);
}
