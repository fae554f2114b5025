/*
 * pool.c - a small fork-join thread pool, one per CPU backend (no global state).
 * dp_pool_run splits a job's tasks into one contiguous range per thread (the calling thread works
 * too); a thread that finishes its range takes the remaining tasks of the others (see dp_cursor).
 * Threads spin briefly before they sleep (see DP_POOL_SPIN); which thread runs which task never
 * changes a result (cpu.h: tasks write disjoint outputs).
 */
#include "../internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
/* Kernels run with subnormals flushed (FTZ) and read as zero (DAZ): on the 16-core Xeon a single
 * subnormal-heavy layer made the whole network 1.8x slower (bench/RESULTS.md). It changes values
 * below 1.2e-38 only. The workers set it once; the calling thread gets it back as it was. */
#define DP_FTZ_DAZ 0x8040u
static unsigned dp_fp_enter(void) {
    unsigned old = _mm_getcsr();
    _mm_setcsr(old | DP_FTZ_DAZ);
    return old;
}
static void dp_fp_leave(unsigned old) { _mm_setcsr(old); }
#else
static unsigned dp_fp_enter(void) { return 0; }
static void dp_fp_leave(unsigned old) { (void)old; }
#endif

/* Waiting: a worker that finished a job spins (pause instruction) for up to DP_POOL_SPIN checks
 * before it sleeps on cv_work, and so does the caller waiting for the workers: a network runs a few
 * hundred jobs one after the other, and a sleeping thread's wake-up (futex + on a VM an interrupt
 * to a halted vCPU) cost every job two wake-ups, of every thread. ~16k checks are 0.3-1 ms. */
#define DP_POOL_SPIN 16384
#if defined(__SSE__) || defined(__x86_64__)
#define dp_cpu_relax() _mm_pause()
#else
#define dp_cpu_relax() ((void)0)
#endif

/* Task ranges: thread i owns tasks [next, end) of its own cursor, on its own cache line. Owning a
 * contiguous range keeps consecutive jobs on the same data: a 1x1 conv's block of output channels
 * and the depthwise conv that reads those channels next run on the same core. One shared counter
 * dealt tasks round-robin, so at 2 threads half of every depthwise input came from the other core's
 * cache: the 32x32 layers ran no faster at 2 threads than at 1 on the 2-vCPU EPYC (bench/RESULTS.md
 * §5, session 7). A thread done with its range steals from the others' cursors, so a preempted
 * thread does not hold up the job. Which thread runs a task never changes a result. */
typedef struct {
    _Alignas(64) atomic_int next;
    int end;
} dp_cursor;

struct dp_pool {
    int n;                  /* workers including the caller */
    dp_cursor *cur;         /* n task ranges */
    pthread_t *threads;     /* n - 1 */
    int nstarted;
    pthread_mutex_t mu;     /* guards the sleeps: generation changes and the last check-out under it */
    pthread_cond_t cv_work, cv_done;
    atomic_ulong generation; /* +1 per job, after the job's fields are written (release) */
    atomic_int quit;
    /* the job: written by the caller only while no worker is inside one */
    dp_task_fn fn;
    void *ctx;
    int ntasks;
    atomic_int active;      /* workers that have not finished the current job */
};

typedef struct {
    dp_pool *p;
    int id;
} dp_worker_arg;

static void dp_pool_work(dp_pool *p, int thread) {
    for (int k = 0; k < p->n; k++) { /* its own range first, then the others' in turn */
        dp_cursor *c = &p->cur[(thread + k) % p->n];
        for (;;) {
            int t = atomic_fetch_add_explicit(&c->next, 1, memory_order_relaxed);
            if (t >= c->end) break;
            p->fn(p->ctx, t, thread);
        }
    }
}

/* the next generation after seen (spin, then sleep); quit is checked by the caller */
static unsigned long dp_wait_job(dp_pool *p, unsigned long seen) {
    unsigned long g;
    for (int i = 0; i < DP_POOL_SPIN; i++) {
        g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed)) return g;
        dp_cpu_relax();
    }
    pthread_mutex_lock(&p->mu);
    while ((g = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
           !atomic_load_explicit(&p->quit, memory_order_relaxed))
        pthread_cond_wait(&p->cv_work, &p->mu);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *dp_worker(void *arg) {
    dp_worker_arg a = *(dp_worker_arg *)arg;
    dp_pool *p = a.p;
    unsigned long seen = 0;
    free(arg);
    (void)dp_fp_enter(); /* our own thread: keep FTZ/DAZ for its life */
    for (;;) {
        seen = dp_wait_job(p, seen);
        if (atomic_load_explicit(&p->quit, memory_order_acquire)) break;
        dp_pool_work(p, a.id);
        if (atomic_fetch_sub_explicit(&p->active, 1, memory_order_acq_rel) == 1) {
            /* the last one out wakes the caller if it sleeps (it re-checks active under mu) */
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

disopt_status dp_pool_create(int nthreads, dp_pool **out) {
    dp_pool *p;
    if (nthreads < 1) nthreads = 1;
    p = calloc(1, sizeof *p);
    if (!p) return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
    p->n = nthreads;
    p->cur = aligned_alloc(_Alignof(dp_cursor), (size_t)nthreads * sizeof *p->cur);
    if (!p->cur) {
        free(p);
        return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
    }
    for (int i = 0; i < nthreads; i++) {
        atomic_init(&p->cur[i].next, 0);
        p->cur[i].end = 0;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->active, 0);
    atomic_init(&p->generation, 0);
    atomic_init(&p->quit, 0);
    if (nthreads > 1) {
        p->threads = calloc((size_t)nthreads - 1, sizeof *p->threads);
        if (!p->threads) {
            dp_pool_destroy(p);
            return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
        }
        for (int i = 0; i < nthreads - 1; i++) {
            dp_worker_arg *a = malloc(sizeof *a);
            if (!a) {
                dp_pool_destroy(p);
                return dp_error(DISOPT_ERR_OUT_OF_MEMORY, "thread pool: out of memory");
            }
            a->p = p;
            a->id = i + 1;
            if (pthread_create(&p->threads[i], NULL, dp_worker, a) != 0) {
                free(a);
                dp_pool_destroy(p);
                return dp_error(DISOPT_ERR_BACKEND, "thread pool: cannot start thread %d of %d", i + 2, nthreads);
            }
            p->nstarted++;
        }
    }
    *out = p;
    return DISOPT_OK;
}

void dp_pool_destroy(dp_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->quit, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nstarted; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    free(p->cur);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int dp_pool_size(const dp_pool *p) { return p ? p->n : 1; }

void dp_pool_run(dp_pool *p, int ntasks, dp_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    unsigned fp = dp_fp_enter();
    if (!p || p->nstarted == 0 || ntasks == 1) {
        for (int t = 0; t < ntasks; t++) fn(ctx, t, 0);
        dp_fp_leave(fp);
        return;
    }
    /* no worker is inside a job now (the last call waited for active == 0): publish this one */
    p->fn = fn;
    p->ctx = ctx;
    p->ntasks = ntasks;
    for (int i = 0; i < p->n; i++) {
        atomic_store_explicit(&p->cur[i].next, (int)((long)ntasks * i / p->n), memory_order_relaxed);
        p->cur[i].end = (int)((long)ntasks * (i + 1) / p->n);
    }
    atomic_store_explicit(&p->active, p->nstarted, memory_order_relaxed);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->cv_work); /* no system call when every worker is spinning */
    pthread_mutex_unlock(&p->mu);
    dp_pool_work(p, 0);
    for (int i = 0; i < DP_POOL_SPIN && atomic_load_explicit(&p->active, memory_order_acquire) > 0; i++)
        dp_cpu_relax();
    if (atomic_load_explicit(&p->active, memory_order_acquire) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load_explicit(&p->active, memory_order_acquire) > 0) pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
    dp_fp_leave(fp);
}
