/* pool.c - the handler threads of a server. Queue threads hand a call's next
 * callback here so that a handler which blocks (SQLite, a slow disk, a full send
 * queue) never holds up the completion queue other calls depend on. Items are
 * embedded in their owners (one outstanding per call), so submitting never fails. */
#include "common/rpc/internal.h"

#include <stdlib.h>

static void *pool_main(void *arg)
{
    rpc_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
        if (!p->head) break;   /* stopping and drained */
        rpc_work_t *w = p->head;
        p->head = w->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        w->fn(w);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int rpc_pool_start(rpc_pool_t *p, int n, cr_err_t *err)
{
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->head = p->tail = NULL;
    p->stop = 0;
    p->n = 0;
    p->thread = calloc((size_t)n, sizeof *p->thread);
    if (!p->thread) return cr_err_set(err, CR_ENOMEM, "no memory for %d handler threads", n);
    for (int i = 0; i < n; i++) {
        if (pthread_create(&p->thread[i], NULL, pool_main, p) != 0) {
            rpc_pool_stop(p);
            return cr_err_set(err, CR_ENOMEM, "cannot start handler thread %d", i);
        }
        p->n++;
    }
    p->started = 1;
    return 0;
}

void rpc_pool_submit(rpc_pool_t *p, rpc_work_t *w)
{
    w->next = NULL;
    pthread_mutex_lock(&p->mu);
    if (p->tail) p->tail->next = w;
    else p->head = w;
    p->tail = w;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void rpc_pool_stop(rpc_pool_t *p)
{
    if (!p->thread) return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n; i++) pthread_join(p->thread[i], NULL);
    free(p->thread);
    p->thread = NULL;
    p->started = 0;
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
}
