// train_launch.h - launch helpers and rounded float operations shared by the training kernels (train_kernels.cu, train_loss.cu); internal,
// included inside each file's anonymous namespace.
//  - K(body, (params), (args)) defines __global__ k_body(size_t total, params), a grid-stride loop running
//    body(i, args) for i < total (device builds only);
//  - RUN(n, body, args...) inside a launcher: body(i, args) for i < n as a launch of k_body on `stream`, or with
//    DPTK_HOST_CHECK a loop on the host over host memory (test_cuda_train_host); returns the launch's status.
#ifndef DISOPT_CUDA_TRAIN_LAUNCH_H
#define DISOPT_CUDA_TRAIN_LAUNCH_H

constexpr int TPB = 256;

#define GRID_LOOP(i, total)                                                                                    \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (total); i += (size_t)gridDim.x * blockDim.x)

// float operations rounded on their own: the intrinsics on the device, plain on the host (uncontracted: the
// host code is compiled with -ffp-contract=off), where the __host__ __device__ bodies are checked too
// (tests/test_cuda_train_host.c)
__host__ __device__ inline float rmul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
__host__ __device__ inline float radd(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
__host__ __device__ inline float rsub(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}
__host__ __device__ inline float rdiv(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}

#ifndef DPTK_HOST_CHECK /* (device only: the host build runs the bodies directly) */
inline unsigned blocks_for(size_t n) {
    size_t b = (n + TPB - 1) / TPB;
    if (b == 0) b = 1;
    return (unsigned)(b > 65535u * 64u ? 65535u * 64u : b);
}
#define K(body, params, args)                                                                                  \
    __global__ void k_##body(size_t total, DPTK_UNPAREN params) { GRID_LOOP(i, total) body(i, DPTK_UNPAREN args); }
#define DPTK_UNPAREN(...) __VA_ARGS__
#define RUN(n, body, ...)                                                                                      \
    do {                                                                                                       \
        if ((n) == 0) return 0;                                                                                \
        k_##body<<<blocks_for(n), TPB, 0, (cudaStream_t)stream>>>((size_t)(n), __VA_ARGS__);                   \
        return (int)cudaGetLastError();                                                                        \
    } while (0)
#else
#define RUN(n, body, ...)                                                                                      \
    do {                                                                                                       \
        (void)stream;                                                                                          \
        for (size_t i_ = 0; i_ < (size_t)(n); i_++) body(i_, __VA_ARGS__);                                    \
        return 0;                                                                                              \
    } while (0)
#endif

#endif
