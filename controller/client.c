/* client.c - how the CLI and tools reach the controller: one channel, a check that
 * it answers, and Registry calls that keep the exact gRPC status (the CLI turns
 * UNAVAILABLE and DEADLINE_EXCEEDED into "controller unreachable"). */
#include "controller/controller.h"

#include <stdlib.h>

int ctl_client_connect(const char *addr, const rpc_opts_t *opts, int64_t timeout_ms,
                       rpc_channel_t **out, cr_err_t *err)
{
    *out = NULL;
    if (!addr || !*addr) addr = getenv("CORRAL_CONTROLLER");
    if (!addr || !*addr) addr = CTL_DEFAULT_LISTEN;
    rpc_opts_t o = {0};
    if (opts) o = *opts;
    rpc_channel_t *ch = NULL;
    int rc = rpc_channel_create(&ch, addr, &o, err);
    if (rc) return cr_err_wrap(err, "controller %s", addr);
    if (timeout_ms > 0 && rpc_channel_wait_ready(ch, timeout_ms, err) != 0) {
        rpc_channel_destroy(ch);
        return cr_err_set(err, CR_EUNAVAIL, "controller %s unreachable (is `corral controller` running "
                          "there? set --controller or CORRAL_CONTROLLER)", addr);
    }
    *out = ch;
    return 0;
}

int ctl_client_call(rpc_channel_t *ch, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                    int64_t timeout_ms, rpc_code_t *code, cr_err_t *err)
{
    return rpc_unary_code(ch, method, req, resp_desc, resp, timeout_ms, code, err);
}
