"""The package steps: the combined archive, the link check, bindings, bundled weights, the app
config and the staged output.
"""
