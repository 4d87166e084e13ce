/* tokenizer.c - the byte-level tokenizer of the VLA's instructions: every UTF-8
 * byte is one token (2 + byte), after a BOS token and padded with PAD to the
 * model's context. No vocabulary file, no merges: any text maps to tokens, and
 * the same text always to the same tokens. A text that does not fit is an
 * error, never silently cut, since a truncated instruction can name another
 * target. */
#include "policies/models/gen.h"
#include "policies/policies.h"

#include <string.h>

int pol_tokenize(const char *text, int32_t *ids, int ctx, cr_err_t *err)
{
    if (!text) return cr_err_set(err, CR_EINVAL, "tokenizer: no instruction text");
    size_t n = strlen(text);
    if (ctx < 1 || n + 1 > (size_t)ctx)
        return cr_err_set(err, CR_EINVAL, "tokenizer: instruction of %zu bytes needs %zu tokens with BOS, the "
                          "context holds %d", n, n + 1, ctx);
    ids[0] = POL_TOK_BOS;
    for (size_t i = 0; i < n; i++) ids[i + 1] = 2 + (int32_t)(unsigned char)text[i];
    for (int i = (int)n + 1; i < ctx; i++) ids[i] = POL_TOK_PAD;
    return 0;
}

int pol_detokenize(const int32_t *ids, int ctx, char *buf, size_t cap)
{
    size_t o = 0;
    for (int i = 0; i < ctx && ids[i] != POL_TOK_PAD; i++) {
        if (ids[i] == POL_TOK_BOS) continue;
        if (ids[i] < 2 || ids[i] >= POL_TOK_VOCAB) return CR_EINVAL;
        if (o + 1 >= cap) return CR_ETOOBIG;
        buf[o++] = (char)(ids[i] - 2);
    }
    if (cap) buf[o < cap ? o : cap - 1] = '\0';
    return (int)o;
}

int pol_instruction_tokens(const char *text, float *ids, int ctx, cr_err_t *err)
{
    int32_t tmp[512];
    if (ctx > 512) return cr_err_set(err, CR_EINVAL, "tokenizer: context %d longer than 512", ctx);
    int rc = pol_tokenize(text, tmp, ctx, err);
    if (rc) return rc;
    for (int i = 0; i < ctx; i++) ids[i] = (float)tmp[i];
    return 0;
}
