/* status.c - gRPC status codes: their names and the mapping to and from the
 * project's CR_E* codes, so a handler can fail with a cr_err_t and a client gets
 * the same code back (see the table in rpc.h). */
#include "common/rpc/rpc.h"

const char *rpc_code_name(rpc_code_t code)
{
    static const char *const names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
        "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
    if ((unsigned)code < sizeof names / sizeof names[0]) return names[code];
    return "UNKNOWN";
}

rpc_code_t rpc_code_from_err(int cr_code)
{
    switch (cr_code) {
    case CR_OK: return RPC_OK;
    case CR_EINVAL: return RPC_INVALID_ARGUMENT;
    case CR_ENOENT: return RPC_NOT_FOUND;
    case CR_EEXIST: return RPC_ALREADY_EXISTS;
    case CR_ENOMEM: case CR_ENOSPC: case CR_ETOOBIG: return RPC_RESOURCE_EXHAUSTED;
    case CR_ETIMEDOUT: return RPC_DEADLINE_EXCEEDED;
    case CR_EBUSY: case CR_EUNAVAIL: case CR_ECLOSED: return RPC_UNAVAILABLE;
    case CR_ECORRUPT: return RPC_DATA_LOSS;
    case CR_EVERSION: return RPC_FAILED_PRECONDITION;
    case CR_ECANCELLED: return RPC_CANCELLED;
    case CR_EPERM: return RPC_PERMISSION_DENIED;
    case CR_ENOTSUP: return RPC_UNIMPLEMENTED;
    default: return RPC_INTERNAL;   /* EIO, EPROTO, EINTERNAL, unknown */
    }
}

int rpc_code_to_err(rpc_code_t code)
{
    switch (code) {
    case RPC_OK: return CR_OK;
    case RPC_CANCELLED: return CR_ECANCELLED;
    case RPC_INVALID_ARGUMENT: case RPC_FAILED_PRECONDITION: case RPC_OUT_OF_RANGE:
        return CR_EINVAL;
    case RPC_DEADLINE_EXCEEDED: return CR_ETIMEDOUT;
    case RPC_NOT_FOUND: return CR_ENOENT;
    case RPC_ALREADY_EXISTS: return CR_EEXIST;
    case RPC_PERMISSION_DENIED: case RPC_UNAUTHENTICATED: return CR_EPERM;
    case RPC_RESOURCE_EXHAUSTED: return CR_ETOOBIG;
    case RPC_ABORTED: return CR_EBUSY;
    case RPC_UNIMPLEMENTED: return CR_ENOTSUP;
    case RPC_UNAVAILABLE: return CR_EUNAVAIL;
    case RPC_DATA_LOSS: return CR_ECORRUPT;
    default: return CR_EINTERNAL;   /* UNKNOWN, INTERNAL */
    }
}
