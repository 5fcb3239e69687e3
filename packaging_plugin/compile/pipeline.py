"""Compile one request into a model library tar: `compile_library(request, output_tar)`.

Runs inside the compile child process only (TVM can segfault; see child.py). The tar holds
the objects the app links: the host object `lib0.o` (kernels' host code and the VM functions'
symbols, all named `__tvm_ffi_<prefix>...`) and `<prefix>devc.o` (the library blob with VM bytecode
and OpenCL/Metal kernel source, registered by a static constructor). It is written reproducibly:
sorted members, zero times and owners, plain (uncompressed) tar.
"""

from __future__ import annotations

import io
import os
import re
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import tvm
from tvm import relax
from tvm.s_tir import dlight as dl
from tvm.target import Target

from packaging_plugin.atomic_files import atomic_file
from packaging_plugin.compile import export as models
from packaging_plugin.config.devices import DEVICES
from packaging_plugin.temporaries import owned_name


def compile_library(request: dict[str, Any], output_tar: Path) -> None:
    """Compile `request` (see docs/architecture.md) and write the library tar to `output_tar`."""
    output_tar = Path(output_tar)
    device = request["device"]
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    prefix = request["system_lib_prefix"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", prefix or ""):
        raise ValueError(f"system_lib_prefix {prefix!r} is not a C identifier")

    target = Target(DEVICES[device].target)
    with target:
        exported = models.export_model(request, target)
        # The prefix is set here, not by relax.build(system_lib=True): TVM 0.27's helper reads
        # it back with IRModule.get_attr, which raises for strings of 7 bytes or fewer (stored
        # inline as ffi.SmallStr). Codegen only needs the attribute, which C++ reads fine; with
        # system_lib left False, the Python helper leaves the module alone. The built module is
        # checked to be a system library below.
        mod = exported.mod.with_attr("system_lib_prefix", prefix)
        executable = relax.build(
            mod,
            target=target,
            relax_pipeline=_relax_pipeline(target, exported.metadata),
            system_lib=False,
        )
    _check_system_lib(executable, prefix)
    with tempfile.TemporaryDirectory(prefix=owned_name("mlc-export-")) as workdir:
        objects: list[Path] = []

        def collect(_output: str, files: list[str], **_kwargs: Any) -> None:
            objects.extend(Path(f) for f in files)

        collect.output_format = "tar"  # type: ignore[attr-defined]
        executable.export_library(
            os.path.join(workdir, "unused.tar"), fcompile=collect, workspace_dir=workdir
        )
        _write_tar_atomically(output_tar, objects)


def _relax_pipeline(target: Target, metadata: dict[str, Any]) -> tvm.transform.Pass:
    """Relax passes: legalize, fuse, (GPU) dlight schedules, then lower for the VM.

    Right after static memory planning, `_metadata` is rebuilt with `memory_usage` measured on
    the planned module (one build, no second pipeline run), as MLC's own pipeline does.
    """
    schedule: list[tvm.transform.Pass] = []
    if "gpu" in target.keys:
        schedule.append(
            dl.ApplyDefaultSchedule(
                _MatmulWithoutMetalTensorize(),
                dl.gpu.GEMV(),
                dl.gpu.LowBatchGEMV(),
                dl.gpu.Reduction(),
                dl.gpu.GeneralReduction(),
                dl.gpu.Fallback(),
            )
        )
    passes = [
        relax.backend.DispatchSampling(),
        relax.backend.DispatchSortScan(),
        relax.transform.LegalizeOps(),
        relax.transform.AnnotateTIROpPattern(),
        relax.transform.FoldConstant(),
        relax.transform.FuseOps(),
        relax.transform.FuseTIR(),
        relax.transform.DeadCodeElimination(),
        *schedule,
        relax.transform.RewriteDataflowReshape(),
        relax.transform.ToNonDataflow(),
        relax.transform.RemovePurityChecking(),
        relax.transform.CallTIRRewrite(),
        relax.transform.StaticPlanBlockMemory(),
        _AttachMemoryUsage(metadata),
        relax.transform.LowerAllocTensor(),
        relax.transform.KillAfterLastUse(),
        relax.transform.LowerRuntimeBuiltin(),
        relax.transform.ComputePrimValue(),
        relax.transform.VMShapeLower(),
        relax.transform.AttachGlobalSymbol(),
    ]
    return tvm.transform.Sequential(passes)


@tvm.transform.module_pass(opt_level=0, name="AttachMemoryUsage")
class _AttachMemoryUsage:
    """Fill `memory_usage` of `_metadata` from the planned allocations, then rebuild `_metadata`.

    Must run after StaticPlanBlockMemory and before LowerAllocTensor: the planned buffers are
    then `relax.memory.alloc_storage` calls, the unplanned ones `relax.builtin.alloc_tensor`.
    """

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        usage = planned_memory_usage(mod)
        usage.pop("_metadata", None)  # the function being replaced, not a model function
        # Replaced after the passes before this one: `_metadata` allocates nothing and has no
        # dataflow block, so those passes leave such a function as it is.
        mod["_metadata"] = models.metadata_function({**self.metadata, "memory_usage": usage})
        return mod


def planned_memory_usage(mod: tvm.IRModule) -> dict[str, int]:
    """{Relax function: bytes of its statically sized allocations} of a memory-planned module.

    Counts what MLC's estimator counts, so the runtime sizes its KV cache the same way: every
    `alloc_storage` of constant size (the storage StaticPlanBlockMemory planned, sized by the
    `tir_var_upper_bound`s) and every `alloc_tensor` of constant shape it left unplanned.
    Allocations whose size depends on an unbounded variable (the vocabulary) are not counted.
    """
    alloc_storage = tvm.ir.Op.get("relax.memory.alloc_storage")
    alloc_tensor = tvm.ir.Op.get("relax.builtin.alloc_tensor")
    usage: dict[str, int] = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, relax.Function):
            continue
        total = 0

        def visit(node: Any) -> None:
            nonlocal total
            if not isinstance(node, relax.Call) or not isinstance(node.args[0], relax.ShapeExpr):
                return
            dims = node.args[0].values
            if not all(isinstance(d, tvm.tirx.IntImm) for d in dims):
                return
            if node.op.same_as(alloc_storage):
                total += int(dims[0])  # the size in bytes
            elif node.op.same_as(alloc_tensor):
                dtype = tvm.DataType(node.args[1].value)
                count = 1
                for d in dims:
                    count *= int(d)
                total += count * ((dtype.bits + 7) // 8) * dtype.lanes

        relax.analysis.post_order_visit(func.body, visit)
        usage[gvar.name_hint] = total
    return usage


class _MatmulWithoutMetalTensorize(dl.gpu.Matmul):
    """dlight's gpu.Matmul with its Metal branch (`MetalMatmul`) turned off.

    For Metal targets gpu.Matmul first tries `MetalMatmul`, whose `sch.tensorize` segfaults inside
    libtvm_ffi 0.1.15 (a crash no `try` catches). Handing the rule an OpenCL target with the same
    limits takes the generic branch, which is what Metal gets whenever MetalMatmul declines; both
    use the default Matmul config, so the kernels are the generic GPU ones.
    """

    def apply(self, func: Any, target: Target, tunable: bool) -> Any:
        if target.kind.name == "metal":
            target = Target(
                {
                    "kind": "opencl",
                    **{
                        key: int(target.attrs[key])
                        for key in (
                            "max_threads_per_block",
                            "max_shared_memory_per_block",
                            "thread_warp_size",
                        )
                    },
                }
            )
        return super().apply(func, target, tunable)


def _check_system_lib(executable: Any, prefix: str) -> None:
    """The host module must be a system library with exactly our prefix."""
    lib = executable.mod
    for module in [lib, *lib.imports]:
        if module.kind == "llvm":
            if not module.get_function("__tvm_is_system_module")():
                raise RuntimeError("TVM built a non-system library; the prefix was not applied")
            got = module.get_function("__tvm_get_system_lib_prefix")()
            if got != prefix:
                raise RuntimeError(f"TVM built prefix {got!r}, expected {prefix!r}")
            return
    raise RuntimeError("no host (llvm) module in the build")


def _write_tar_atomically(output_tar: Path, objects: list[Path]) -> None:
    """A plain tar of `objects`: sorted names, mtime/uid/gid 0, no owner names, mode 0644."""
    names = [p.name for p in objects]
    if len(set(names)) != len(names):
        raise RuntimeError(f"duplicate object names in the build: {sorted(names)}")
    with (
        atomic_file(output_tar) as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for path in sorted(objects, key=lambda p: p.name):
            data = path.read_bytes()
            info = tarfile.TarInfo(path.name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
