# Types for engine.py, compiled (setup.py); the .py stays the source.

# Its `from stackservice.tcp.segment import ...` of these then binds the C
# functions: sequence compares without a Python call.
from stackservice.tcp.segment cimport seq_gt
