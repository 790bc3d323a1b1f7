"""KServe v2 datatype names and Baton's wire dtypes, one table for every transport.

Theory of operation: Baton's wire describes a tensor's element type by numpy's name
(``float32``) or ``BYTES`` (length-prefixed byte strings, the KServe layout). The Open
Inference Protocol names the same types ``FP32``, ``BYTES`` and so on, and Triton's
model configuration ``TYPE_FP32``/``TYPE_STRING``. The frontend's KServe gateway and the
SDK's gRPC client both translate through these two dictionaries; a type missing from
them (bfloat16, complex) is not served.
"""

from __future__ import annotations

__all__ = ["KSERVE_OF", "WIRE_OF", "TRITON_CONFIG_OF"]

KSERVE_OF: dict[str, str] = {
    "bool": "BOOL", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "int8": "INT8", "int16": "INT16", "int32": "INT32",
    "int64": "INT64", "float16": "FP16", "float32": "FP32", "float64": "FP64",
    "BYTES": "BYTES",
}  # fmt: skip
WIRE_OF: dict[str, str] = {v: k for k, v in KSERVE_OF.items()}
TRITON_CONFIG_OF: dict[str, str] = {
    wire: "TYPE_STRING" if kind == "BYTES" else "TYPE_" + kind for wire, kind in KSERVE_OF.items()
}
