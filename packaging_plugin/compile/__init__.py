"""Compiling model libraries: the cache, the compile child and its runner, the export of a model
and the Relax pipeline.
"""
