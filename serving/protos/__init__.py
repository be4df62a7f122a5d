"""The retrieval service's messages and stubs, generated from
`retrieval.proto` (the source of truth).

Regenerate after editing the .proto (a test checks they match):

    python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. serving/protos/retrieval.proto

Why generated files and not `grpc.protos_and_services` at import: loading
grpc_tools' protoc extension into a process that already holds TensorFlow's
protobuf library crashes it (segmentation fault).
"""
