"""The pytest side of a run: the session plugin object, collection items, each model's steps, the
report and summary.
"""
