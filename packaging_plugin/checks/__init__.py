"""Reading what was built: objects and archives, library contents, validation, memory estimates and
OpenCL kernels.
"""
