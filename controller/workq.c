/* workq.c - a FIFO of jobs and the one thread that runs them (see workq.h). */
#include "controller/workq.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct job {
    struct job *next;
    void (*fn)(void *arg);
    void *arg;
} job_t;

struct ctl_workq {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    int stop;
    pthread_t thread;
};

static void *run(void *arg)
{
    ctl_workq_t *q = arg;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->head && !q->stop) pthread_cond_wait(&q->cv, &q->mu);
        job_t *j = q->head;
        if (!j) break;  /* stop, and nothing left */
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        pthread_mutex_unlock(&q->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

int ctl_workq_create(ctl_workq_t **out, cr_err_t *err)
{
    *out = NULL;
    ctl_workq_t *q = calloc(1, sizeof *q);
    if (!q) return cr_err_set(err, CR_ENOMEM, "work queue");
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    if (pthread_create(&q->thread, NULL, run, q) != 0) {
        pthread_cond_destroy(&q->cv);
        pthread_mutex_destroy(&q->mu);
        free(q);
        return cr_err_set(err, CR_EINTERNAL, "cannot start the work queue thread");
    }
    *out = q;
    return 0;
}

int ctl_workq_push(ctl_workq_t *q, void (*fn)(void *arg), void *arg)
{
    job_t *j = malloc(sizeof *j);
    if (!j) return CR_ENOMEM;
    j->next = NULL;
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&q->mu);
    if (q->tail) q->tail->next = j;
    else q->head = j;
    q->tail = j;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void ctl_workq_destroy(ctl_workq_t *q)
{
    if (!q) return;
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->thread, NULL);
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
