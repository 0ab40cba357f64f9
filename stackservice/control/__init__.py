"""The control plane of a stack instance: the gRPC server and its link to the loop."""
