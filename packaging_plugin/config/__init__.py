"""Reading what the user wrote: the package config, chat configs and their overrides, and the
devices.

Names with a leading underscore may be shared between the modules of this package, but are not
for use outside it.
"""
