"""C compilers that build objects shaped like TVM's for each device (cc for linux, zig's clang
for the phones), with the flags the tests build them with."""

from __future__ import annotations

import importlib.util
import sys

ZIG = (sys.executable, "-m", "ziglang")
HAVE_ZIG = importlib.util.find_spec("ziglang") is not None
CFLAGS = ("-c", "-O1", "-g0", "-fPIC", "-fno-sanitize=undefined")
COMPILERS = {  # how to build objects for each device
    "linux": ("cc",),
    "android": (*ZIG, "cc", "-target", "aarch64-linux-gnu"),
    "iphone": (*ZIG, "cc", "-target", "aarch64-macos"),
}
