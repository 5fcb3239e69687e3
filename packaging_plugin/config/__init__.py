"""Reading what the user wrote: the package config, chat configs and their overrides, and the
devices.
"""
