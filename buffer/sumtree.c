/* sumtree.c - a binary tree of partial sums over leaf priorities: set a leaf and
 * find the leaf holding a given prefix sum in O(log n). Leaves live at node[cap+i],
 * node[k] = node[2k] + node[2k+1]; the capacity doubles (and the tree is rebuilt)
 * when a push does not fit. */
#include "buffer/internal.h"

#include <stdlib.h>
#include <string.h>

static int grow(sumtree_t *t)
{
    int64_t cap = t->cap ? t->cap * 2 : 1024;
    double *node = calloc((size_t)cap * 2, sizeof *node);
    if (!node) return CR_ENOMEM;
    for (int64_t i = 0; i < t->n; i++) node[cap + i] = t->node[t->cap + i];
    for (int64_t k = cap - 1; k >= 1; k--) node[k] = node[2 * k] + node[2 * k + 1];
    free(t->node);
    t->node = node;
    t->cap = cap;
    return 0;
}

int buf_sumtree_push(sumtree_t *t, double value)
{
    if (t->n == t->cap && grow(t)) return CR_ENOMEM;
    buf_sumtree_set(t, t->n++, value);
    return 0;
}

void buf_sumtree_set(sumtree_t *t, int64_t i, double value)
{
    int64_t k = t->cap + i;
    t->node[k] = value;
    /* Recompute the sums instead of adding a delta, so rounding never accumulates. */
    for (k /= 2; k >= 1; k /= 2) t->node[k] = t->node[2 * k] + t->node[2 * k + 1];
}

double buf_sumtree_get(const sumtree_t *t, int64_t i) { return t->node[t->cap + i]; }
double buf_sumtree_total(const sumtree_t *t) { return t->cap ? t->node[1] : 0; }

int64_t buf_sumtree_find(const sumtree_t *t, double u)
{
    int64_t k = 1;
    while (k < t->cap) {
        double left = t->node[2 * k];
        if (u < left || t->node[2 * k + 1] <= 0) k = 2 * k;
        else { u -= left; k = 2 * k + 1; }
    }
    int64_t i = k - t->cap;
    /* u at the very top of the range can fall off the last positive leaf. */
    if (i >= t->n) i = t->n - 1;
    while (i > 0 && t->node[t->cap + i] <= 0) i--;
    return i;
}

void buf_sumtree_free(sumtree_t *t)
{
    free(t->node);
    memset(t, 0, sizeof *t);
}
