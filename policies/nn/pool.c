/* pool.c - CPU lanes: a fork-join pool that runs the independent pieces of one
 * training step (the heads of a critic ensemble, row blocks of a batch, the
 * weight and input gradients of one layer) on several cores at once.
 *
 * Why not BLAS threads: SAC-sized products (256x256x256) are too small for
 * OpenBLAS to split well; it mostly spins in sched_yield. Running whole
 * independent products side by side, each on one BLAS thread, keeps every
 * product at full single-core speed.
 *
 * Protocol. A job is published as one 64-bit word: generation, task count and
 * the index of the next unclaimed task. A task is claimed by a compare-and-swap
 * on that word, so a lane holding a stale generation can never claim a task of
 * a newer job, and the job's fields (fn, arg) stay put while any of its tasks is
 * unclaimed or running: the caller rewrites them only after `done` reached n.
 * The caller's thread claims tasks too, so a lane that is slow to wake (a busy
 * machine) just gets fewer tasks: a job never waits for a particular thread.
 * Idle workers spin for a short while (the jobs of one step come back to back),
 * then sleep on a condition variable; `sleepers` (seq_cst, read by the caller
 * after it publishes, written by a worker before its last look at the word)
 * guarantees no wake-up is lost. A task that calls nn_pool_run runs the inner
 * job serially: nesting never deadlocks.
 *
 * Invariant: tasks write disjoint memory, so the result of a job does not
 * depend on how many lanes ran it or in which order. */
#include "policies/nn/nn.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#define POOL_MAX_LANES 64
#define POOL_MAX_TASKS ((1 << 20) - 1)
/* Iterations of the idle spin (a pause each, some tens of ns): on the order of
 * 100 us, longer than the serial gaps between the jobs of one update. */
#define WORKER_SPIN 4000
#define CALLER_SPIN 20000

/* the job word: generation (24 bits) | task count (20) | next task (20) */
#define W_GEN(w) ((unsigned)((w) >> 40))
#define W_N(w) ((int)(((w) >> 20) & POOL_MAX_TASKS))
#define W_IDX(w) ((int)((w) & POOL_MAX_TASKS))
#define W_MAKE(g, n) (((uint64_t)((g) & 0xffffff) << 40) | ((uint64_t)(n) << 20))

struct nn_pool {
    int lanes, nth;
    pthread_t th[POOL_MAX_LANES];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t word;
    atomic_int sleepers, stop, done;
    unsigned gen;          /* the caller's count of published jobs */
    nn_task_fn fn;         /* the current job; see the protocol above */
    void *arg;
};

static _Thread_local int in_task;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Claims and runs tasks of job generation g until none is left. */
static void drain(nn_pool_t *p, unsigned g)
{
    uint64_t w = atomic_load(&p->word);
    in_task = 1;
    while (W_GEN(w) == (g & 0xffffff) && W_IDX(w) < W_N(w)) {
        if (!atomic_compare_exchange_weak(&p->word, &w, w + 1)) continue;   /* w reloaded */
        p->fn(p->arg, W_IDX(w));
        atomic_fetch_add(&p->done, 1);
        w = atomic_load(&p->word);
    }
    in_task = 0;
}

static void *worker(void *arg)
{
    nn_pool_t *p = arg;
    unsigned seen = W_GEN(atomic_load(&p->word));
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = W_GEN(atomic_load(&p->word))) == seen && !atomic_load(&p->stop)) {
            if (++spins < WORKER_SPIN) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (W_GEN(atomic_load(&p->word)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = g;
        drain(p, g);
    }
}

int nn_pool_create(nn_pool_t **out, int lanes, cr_err_t *err)
{
    *out = NULL;
    if (lanes < 1 || lanes > POOL_MAX_LANES)
        return cr_err_set(err, CR_EINVAL, "threads: %d (1..%d)", lanes, POOL_MAX_LANES);
    nn_pool_t *p = calloc(1, sizeof *p);
    if (!p) return cr_err_set(err, CR_ENOMEM, "threads: out of memory");
    p->lanes = lanes;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    for (int i = 0; i < lanes - 1; i++) {
        int rc = pthread_create(&p->th[i], NULL, worker, p);
        if (rc != 0) {
            nn_pool_destroy(p);
            return cr_err_set(err, CR_EUNAVAIL, "threads: cannot start worker %d of %d (error %d)", i + 1,
                              lanes - 1, rc);
        }
        p->nth++;
    }
    *out = p;
    return 0;
}

void nn_pool_destroy(nn_pool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nth; i++) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

int nn_pool_lanes(const nn_pool_t *p) { return p ? p->lanes : 1; }

void nn_pool_run(nn_pool_t *p, int n, nn_task_fn fn, void *arg)
{
    if (n <= 0) return;
    if (!p || p->nth == 0 || n == 1 || in_task || n > POOL_MAX_TASKS) {
        for (int i = 0; i < n; i++) fn(arg, i);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->done, 0);
    unsigned g = ++p->gen;
    atomic_store(&p->word, W_MAKE(g, n));   /* publishes the job (seq_cst) */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    drain(p, g);
    /* the last tasks run on other lanes: wait for them, politely once it takes long */
    for (int spins = 0; atomic_load(&p->done) < n; spins++) {
        if (spins < CALLER_SPIN) cpu_relax();
        else sched_yield();
    }
}
