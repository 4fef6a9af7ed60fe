"""Stage: generated CPU code's calls — a compiled function called by its address.

A program (`cpu.render_main_function`) calls its scan loop functions by address, not by name:
numba links a callee's code into its caller's and optimises and compiles it there once more, so
a derivative whose two scans were linked into its program compiled them twice (0.6 s of a
4.8 s first call, LSTM H=16). `call_address(address, (args...))` calls the function at
`address` with numba's own calling convention, as numba calls a first-class function: the
callee's exceptions reach the caller, and no code is linked or copied. The address is that of
the callee's compiled native function (runtime/linked.py); its parameter types must have the
data model of the argument types of the call (the renderer passes C-contiguous arrays and
scalars of the callee's dtypes), and it returns an intp (the steps run).
"""

from __future__ import annotations

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def call_address(typingctx, address, args):
    if not isinstance(address, types.Integer) or not isinstance(args, types.BaseTuple):
        return None
    argtys = tuple(args)

    def codegen(context, builder, signature, llargs):
        addr, packed = llargs
        values = [builder.extract_value(packed, i) for i in range(len(argtys))]
        fnty = context.call_conv.get_function_type(types.intp, argtys)
        fptr = builder.inttoptr(addr, fnty.as_pointer())
        status, result = context.call_conv.call_function(builder, fptr, types.intp, argtys,
                                                         values)
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return result

    return types.intp(address, args), codegen
