"""A request failure carrying the gRPC status code TF Serving would return."""

from __future__ import annotations

import grpc

# TensorFlow's error codes (tensorflow/core/protobuf/error_codes.proto) are
# the gRPC codes by number, so an `OpError` maps onto a `StatusCode` directly.
_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(Exception):
    """A failed request or load, with the status code a client sees.

    Raised anywhere below the gRPC layer; the servicer turns it into
    `context.abort(code, message)`, and the model manager records it as a
    version's load error (GetModelStatus `status`).

    Args:
      code: the `grpc.StatusCode` (NOT_FOUND, INVALID_ARGUMENT, ...).
      message: what failed, naming the model/version/input and what is allowed.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def code_number(self) -> int:
        """The numeric code (`tensorflow.error.Code`, same numbering as gRPC)."""
        return self.code.value[0]

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def code_from_number(number: int) -> grpc.StatusCode:
    """The gRPC status code for a TensorFlow error code; UNKNOWN if none."""
    return _CODES_BY_NUMBER.get(int(number), grpc.StatusCode.UNKNOWN)
