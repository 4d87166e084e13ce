/* test_pool.c - the CPU lanes (nn_pool): every task of every job runs exactly
 * once, whatever the lane count and the job sizes, over thousands of jobs back
 * to back (the claim protocol under contention); jobs after the workers went
 * to sleep still complete (no lost wake-up); a task that starts a job runs it
 * on its own thread; a NULL or one-lane pool runs tasks in order on the
 * caller; bad lane counts are refused. */
#include "policies/nn/nn.h"
#include "tests/harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define MAX_TASKS 64

typedef struct job {
    atomic_int hits[MAX_TASKS];
    pthread_t who[MAX_TASKS];
    atomic_int order;
    int seq[MAX_TASKS];
    nn_pool_t *pool;   /* for the nested case */
    atomic_int nested_bad;
} job_t;

/* a little work, so that other lanes claim tasks while the caller is busy */
static void spin(int iters)
{
    volatile unsigned x = 0;
    for (int k = 0; k < iters; k++) x += (unsigned)k;
}

static void count_task(void *arg, int i)
{
    job_t *j = arg;
    spin(200 + 50 * (i % 5));
    atomic_fetch_add(&j->hits[i], 1);
    j->who[i] = pthread_self();
    j->seq[i] = atomic_fetch_add(&j->order, 1);
}

static void reset(job_t *j)
{
    for (int i = 0; i < MAX_TASKS; i++) atomic_store(&j->hits[i], 0);
    atomic_store(&j->order, 0);
    atomic_store(&j->nested_bad, 0);
}

static void test_each_task_once(void)
{
    static job_t j;
    cr_err_t err = {0};
    for (int lanes = 1; lanes <= 4; lanes++) {
        nn_pool_t *p;
        ASSERT_INT_EQ(nn_pool_create(&p, lanes, &err), 0);
        ASSERT_INT_EQ(nn_pool_lanes(p), lanes);
        for (int it = 0; it < 3000; it++) {
            int n = 1 + (it * 7) % MAX_TASKS;
            reset(&j);
            nn_pool_run(p, n, count_task, &j);
            for (int i = 0; i < MAX_TASKS; i++) {
                int want = i < n;
                if (atomic_load(&j.hits[i]) != want) fprintf(stderr, "  lanes %d job %d task %d\n", lanes, it, i);
                ASSERT_INT_EQ(atomic_load(&j.hits[i]), want);
            }
        }
        nn_pool_destroy(p);
    }
}

static void slow_task(void *arg, int i)
{
    struct timespec ts = {0, 500000L};
    nanosleep(&ts, NULL);
    count_task(arg, i);
}

static void test_wake_after_sleep(void)
{
    static job_t j;
    cr_err_t err = {0};
    nn_pool_t *p;
    ASSERT_INT_EQ(nn_pool_create(&p, 3, &err), 0);
    int elsewhere = 0;
    for (int it = 0; it < 20; it++) {
        struct timespec ts = {0, (it % 4) * 2000000L};   /* 0-6 ms: past the idle spin */
        nanosleep(&ts, NULL);
        reset(&j);
        nn_pool_run(p, 16, slow_task, &j);
        for (int i = 0; i < 16; i++) {
            ASSERT_INT_EQ(atomic_load(&j.hits[i]), 1);
            elsewhere += !pthread_equal(j.who[i], pthread_self());
        }
    }
    /* 320 half-millisecond tasks: the woken workers took some of them */
    ASSERT_TRUE(elsewhere > 0);
    nn_pool_destroy(p);   /* joins workers asleep on the condition variable */
}

static void inner_task(void *arg, int i)
{
    (void)i;
    job_t *j = arg;
    atomic_fetch_add(&j->hits[MAX_TASKS - 1], 1);
}

typedef struct outer {
    job_t inner[4];
    nn_pool_t *pool;
    atomic_int wrong_thread;
} outer_t;

static void record_thread(void *arg, int i)
{
    pthread_t *t = arg;
    t[i] = pthread_self();
}

static void outer_task(void *arg, int i)
{
    outer_t *o = arg;
    nn_pool_run(o->pool, 5, inner_task, &o->inner[i]);
    /* the inner job ran here, on this thread, before the call returned */
    if (atomic_load(&o->inner[i].hits[MAX_TASKS - 1]) != 5) atomic_fetch_add(&o->wrong_thread, 1);
    pthread_t t[3];
    nn_pool_run(o->pool, 3, record_thread, t);
    for (int k = 0; k < 3; k++)
        if (!pthread_equal(t[k], pthread_self())) atomic_fetch_add(&o->wrong_thread, 1);
}

static void test_nested_runs_inline(void)
{
    static outer_t o;
    cr_err_t err = {0};
    ASSERT_INT_EQ(nn_pool_create(&o.pool, 2, &err), 0);
    for (int it = 0; it < 200; it++) {
        for (int i = 0; i < 4; i++) reset(&o.inner[i]);
        atomic_store(&o.wrong_thread, 0);
        nn_pool_run(o.pool, 4, outer_task, &o);
        ASSERT_INT_EQ(atomic_load(&o.wrong_thread), 0);
    }
    nn_pool_destroy(o.pool);
}

static void test_serial_pools(void)
{
    static job_t j;
    cr_err_t err = {0};
    nn_pool_t *one;
    ASSERT_INT_EQ(nn_pool_create(&one, 1, &err), 0);
    nn_pool_t *pools[2] = {NULL, one};
    for (int k = 0; k < 2; k++) {
        reset(&j);
        nn_pool_run(pools[k], 10, count_task, &j);
        for (int i = 0; i < 10; i++) {
            ASSERT_INT_EQ(atomic_load(&j.hits[i]), 1);
            ASSERT_INT_EQ(j.seq[i], i);   /* in order */
            ASSERT_TRUE(pthread_equal(j.who[i], pthread_self()));
        }
    }
    ASSERT_INT_EQ(nn_pool_lanes(NULL), 1);
    nn_pool_run(one, 0, count_task, &j);   /* no tasks: nothing runs */
    nn_pool_destroy(one);
    nn_pool_destroy(NULL);
    nn_pool_t *p = (nn_pool_t *)&j;
    ASSERT_INT_EQ(nn_pool_create(&p, 0, &err), CR_EINVAL);
    ASSERT_TRUE(p == NULL && strstr(err.msg, "threads: 0") != NULL);
    ASSERT_INT_EQ(nn_pool_create(&p, 65, &err), CR_EINVAL);
}

int main(int argc, char **argv)
{
    static const test_case_t cases[] = {
        {"each_task_once", test_each_task_once},
        {"wake_after_sleep", test_wake_after_sleep},
        {"nested_runs_inline", test_nested_runs_inline},
        {"serial_pools", test_serial_pools},
        {NULL, NULL},
    };
    return test_main("policies.pool", cases, argc, argv);
}
