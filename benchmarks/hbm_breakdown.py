"""Where the train step's HBM traffic goes on a TPU: XLA:TPU's compiled program (as
``raynerf plan`` compiles it, deviceless) attributed instruction by instruction.

    python benchmarks/hbm_breakdown.py --tpu v5litepod-16 --config 360 \\
        --set model.compute_dtype=bfloat16 --set train.batch_size=16384

For every instruction that runs in the entry computation, and in the bodies of the
while loops and conditionals it calls (a loop's body times its trip count when XLA
knows it), the bytes it moves are its operands' plus its result's: a fusion counts
its own operands and result, never its internals; an async copy or slice counts the
part it moves once. Sizes are the arrays' sizes in memory, padded to their layout's
tile (``f32[1024,3]{1,0:T(8,128)}`` holds 1024 x 128 floats), and, separately, their
logical sizes and the part on arrays that live in HBM (memory space 0; ``S(1)`` in a
layout is the chip's on-chip memory, where XLA's memory-space assignment puts
prefetched operands).

XLA's own ``bytes accessed`` counts the same way (exactly, on small programs), with
one exception: a gather along a short row costs about 8.7 kB per gathered element
(a ``take_along_axis`` of 64 of 64 f32 values per row, compiled alone), thousands of
times the element's size. The part of XLA's total that operands and results leave
unexplained is therefore spread over the gathered elements (the fitted cost per
element is printed: 8.8 kB for the 360 step before its gathers were removed), and
every table ranks by these modelled bytes.

The tables group them by kind (the fusion's kind and the op it is built around: a
matmul, a reduction, a gather, ...), by source line and by call chain in raynerf
(from the instruction's ``metadata`` and the module's stack-frame tables; a move
between memory spaces, which has none, takes its data's producer's, marked
``[moved]``), by op name and by instruction.

``--tpu v5litepod-4 --set train.batch_size=4096`` compiles the same per-chip program
(1024 rays per chip) in less time; only the collectives over the slice differ.
``--save-hlo FILE`` keeps the compiled program; ``--hlo FILE --rays-per-chip N
--xla-bytes B`` analyses a saved one without compiling (B: XLA's bytes accessed for
it, to fit the gathers' cost).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import re
import sys
import time
from pathlib import Path

# Traffic-free instructions: they name, alias or reshape buffers without moving them.
FREE_OPS = {
    "parameter",
    "constant",
    "get-tuple-element",
    "tuple",
    "bitcast",
    "after-all",
    "partition-id",
    "replica-id",
    "copy-done",
    "slice-done",
    "async-done",
    "all-reduce-done",
    "all-gather-done",
    "collective-permute-done",
    "send-done",
    "recv-done",
    "opt-barrier",
    "add-dependency",
}
_INSTR_RE = re.compile(r"^\s*(?:ROOT\s+)?%(?P<name>[^\s=]+)\s*=\s*(?P<rest>.*)$")
_HEADER_RE = re.compile(r"^(?P<entry>ENTRY\s+)?%(?P<name>[^\s(]+)\s*\(.*\{\s*$")
_ARRAY_RE = re.compile(
    r"\b(?P<dtype>pred|token|[a-z]+\d+(?:e\d+m\d+\w*)?)\[(?P<dims>[\d,]*)\](?:\{(?P<layout>[^}]*)\})?"
)
_BITS = {"pred": 8, "token": 0}
_TRIP_RE = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_META_RE = re.compile(r"metadata=\{(?P<meta>[^}]*)\}")


@dataclasses.dataclass
class Array:
    """One array of an HLO type: logical and tiled byte sizes and memory space."""

    dtype: str
    dims: tuple[int, ...]
    logical: int
    padded: int
    space: int


@dataclasses.dataclass
class Instr:
    """One HLO instruction of a computation."""

    name: str
    opcode: str
    arrays: list[Array]  # the result's arrays (several for a tuple)
    operands: list[str]
    attrs: str
    computation: str

    @property
    def kind(self) -> str:
        match = re.search(r"kind=(k\w+)", self.attrs)
        return match[1] if match else ""

    def called(self, key: str) -> list[str]:
        """Computations this instruction calls through ``key=%name`` or ``key={%a, %b}``."""
        match = re.search(rf"\b{key}=\{{([^}}]*)\}}", self.attrs)
        if match:
            return [c.strip().lstrip("%") for c in match[1].split(",") if c.strip()]
        match = re.search(rf"\b{key}=%([\w.\-]+)", self.attrs)
        return [match[1]] if match else []

    def metadata(self) -> dict[str, str]:
        """``op_name``, ``stack_frame_id``, ``source_file``, ``source_line`` (when present)."""
        match = _META_RE.search(self.attrs)
        if not match:
            return {}
        return {k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|[^\s,]+)', match["meta"])}


def _tile_padded(dims: tuple[int, ...], layout: str) -> int:
    """Elements of ``dims`` in memory under ``layout`` (``minor_to_major:T(a,b)...``):
    the first tile pads the most minor dimensions up to its multiples."""
    if not dims:
        return 1
    order, _, tiling = layout.partition(":")
    minor_to_major = [int(d) for d in order.split(",") if d.strip().isdigit()]
    if len(minor_to_major) != len(dims):
        minor_to_major = list(range(len(dims) - 1, -1, -1))
    tile = re.match(r"T\(([\d,]+)\)", tiling)
    padded = list(dims)
    if tile:
        sizes = [int(s) for s in tile[1].split(",")]
        # The tile's last size applies to the most minor dimension, and so on.
        for axis, size in zip(minor_to_major, reversed(sizes), strict=False):
            padded[axis] = -(-padded[axis] // size) * size
    return math.prod(padded)


def parse_arrays(type_text: str) -> list[Array]:
    """The arrays of an HLO type (an array or a tuple of them)."""
    arrays = []
    for match in _ARRAY_RE.finditer(type_text):
        dtype = match["dtype"]
        bits = _BITS.get(dtype)
        if bits is None:
            bits = int(re.search(r"\d+", dtype)[0])
        dims = tuple(int(d) for d in match["dims"].split(",") if d)
        layout = match["layout"] or ""
        space = re.search(r"S\((\d+)\)", layout)
        itemsize = bits / 8
        logical = int(math.prod(dims) * itemsize)
        padded = int(_tile_padded(dims, layout) * itemsize)
        arrays.append(Array(dtype, dims, logical, padded, int(space[1]) if space else 0))
    return arrays


def _split_type(rest: str) -> tuple[str, str]:
    """``TYPE opcode(...)...`` -> (TYPE, the rest): a tuple type is balanced parentheses."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1 :].lstrip()
    type_text, _, tail = rest.partition(" ")
    return type_text, tail


def _split_call(tail: str) -> tuple[str, str, str]:
    """``opcode(operands), attrs`` -> (opcode, operands, attrs)."""
    opcode, _, after = tail.partition("(")
    depth = 1
    for i, ch in enumerate(after):
        depth += ch in "({"
        depth -= ch in ")}"
        if depth == 0:
            return opcode.strip(), after[:i], after[i + 1 :]
    return opcode.strip(), after, ""


@dataclasses.dataclass(frozen=True)
class Frame:
    """One Python stack frame of the traced program (the HLO module's frame tables)."""

    file: str
    function: str
    line: int
    parent: int  # the caller's frame id, 0 for none

    def label(self) -> str:
        path = self.file
        for marker in ("raynerf/", "benchmarks/", "site-packages/"):
            if marker in path:
                path = path[path.index(marker) :]
                break
        return f"{path}:{self.line} ({self.function})"


def _parse_frames(text: str) -> dict[int, Frame]:
    """The module's ``FileNames``, ``FunctionNames``, ``FileLocations`` and
    ``StackFrames`` tables -> {stack frame id: Frame}. A frame's ``parent_frame_id``
    is one more than its caller's id (0: none)."""
    tables: dict[str, list[str]] = collections.defaultdict(list)
    section = ""
    for line in text.splitlines():
        if line in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            section = line
        elif not line.strip() or line.startswith(("%", "ENTRY", "HloModule", " ", "}")):
            section = "" if not line.strip() or line.startswith(("%", "ENTRY")) else section
        elif section:
            tables[section].append(line)
    names = {int(a): b.strip('"') for a, _, b in (ln.partition(" ") for ln in tables["FileNames"])}
    functions = {int(a): b.strip('"') for a, _, b in (ln.partition(" ") for ln in tables["FunctionNames"])}
    locations = {}
    for line in tables["FileLocations"]:
        ident, _, rest = line.partition(" ")
        fields = dict(re.findall(r"(\w+)=(\d+)", rest))
        locations[int(ident)] = (
            names.get(int(fields.get("file_name_id", 0)), "?"),
            functions.get(int(fields.get("function_name_id", 0)), "?"),
            int(fields.get("line", 0)),
        )
    frames = {}
    for line in tables["StackFrames"]:
        ident, _, rest = line.partition(" ")
        fields = dict(re.findall(r"(\w+)=(\d+)", rest))
        file, function, lineno = locations.get(int(fields.get("file_location_id", 0)), ("?", "?", 0))
        frames[int(ident)] = Frame(file, function, lineno, max(0, int(fields.get("parent_frame_id", 0)) - 1))
    return frames


def parse_hlo(text: str) -> tuple[dict[str, list[Instr]], str, dict[int, Frame]]:
    """An HLO module's text -> ({computation name: instructions}, entry name, frames)."""
    computations: dict[str, list[Instr]] = {}
    entry = ""
    current = None
    for line in text.splitlines():
        header = _HEADER_RE.match(line)
        if header and not line.startswith(" "):
            current = header["name"]
            computations[current] = []
            if header["entry"]:
                entry = current
            continue
        if line.startswith("}"):
            current = None
            continue
        if current is None:
            continue
        match = _INSTR_RE.match(line)
        if not match:
            continue
        type_text, tail = _split_type(match["rest"])
        opcode, operands, attrs = _split_call(tail)
        names = re.findall(r"%([\w.\-]+)", operands)
        computations[current].append(
            Instr(match["name"], opcode, parse_arrays(type_text), names, attrs, current)
        )
    return computations, entry, _parse_frames(text)


# --------------------------------------------------------------------------- attribution


@dataclasses.dataclass
class Row:
    """Traffic of one instruction run ``count`` times."""

    instr: Instr
    count: int
    read_padded: int
    write_padded: int
    read_logical: int
    write_logical: int
    hbm_padded: int  # the part of read + write in HBM (memory space 0)
    gathered: int  # elements a gather inside this (custom) fusion picks out
    group: str
    source: str
    chain: str
    op_name: str

    @property
    def padded(self) -> int:
        return self.count * (self.read_padded + self.write_padded)

    @property
    def logical(self) -> int:
        return self.count * (self.read_logical + self.write_logical)

    @property
    def hbm(self) -> int:
        return self.count * self.hbm_padded

    def modelled(self, per_gathered: float) -> float:
        """Bytes as XLA:TPU's cost analysis counts them, modelled: the operands and
        result, plus ``per_gathered`` bytes for every gathered element."""
        return self.padded + self.count * self.gathered * per_gathered


def _fusion_core(computations: dict[str, list[Instr]], instr: Instr) -> str:
    """What a fusion is built around: the opcode of its root (or of a matmul,
    convolution, sort, scatter, gather, reduce inside it, in that order)."""
    called = instr.called("calls")
    if not called or called[0] not in computations:
        return ""
    body = computations[called[0]]
    opcodes = []
    stack = list(body)
    while stack:
        inner = stack.pop()
        if inner.opcode == "fusion":
            stack.extend(computations.get((inner.called("calls") or [""])[0], []))
        opcodes.append(inner.opcode)
    for core in ("convolution", "dot", "sort", "scatter", "gather", "reduce-window", "reduce", "concatenate"):
        if core in opcodes:
            return core
    root = body[-1].opcode if body else ""
    return root


def _gathered(computations: dict[str, list[Instr]], instr: Instr) -> int:
    """Elements gathered by a gather, or by the gathers inside a fusion. A scatter
    fusion's own gathers do not count: XLA does not charge them alike (replacing the
    360 step's scatters saved 0.19 GB of XLA's bytes, not the 9 GB that charging them
    alike would predict)."""
    if instr.opcode == "gather":
        return sum(math.prod(a.dims) for a in instr.arrays)
    if instr.opcode != "fusion" or _fusion_core(computations, instr) == "scatter":
        return 0
    return sum(
        _gathered(computations, inner) for c in instr.called("calls") for inner in computations.get(c, [])
    )


def group_of(computations: dict[str, list[Instr]], instr: Instr) -> str:
    """A kind label: ``fusion:kLoop/reduce``, ``sort``, ``copy``, ``custom-call:Target``..."""
    if instr.opcode == "fusion":
        return f"fusion:{instr.kind}/{_fusion_core(computations, instr)}"
    if instr.opcode == "custom-call":
        target = re.search(r'custom_call_target="([^"]*)"', instr.attrs)
        return f"custom-call:{target[1] if target else '?'}"
    return instr.opcode


def _chain(frames: dict[int, Frame], frame_id: int, depth: int = 3) -> list[Frame]:
    """The innermost ``depth`` frames of a stack, innermost first, preferring
    raynerf's own (the train step, the model) over the tracer's and the libraries'."""
    stack, seen = [], set()
    while frame_id in frames and frame_id not in seen:
        seen.add(frame_id)
        stack.append(frames[frame_id])
        frame_id = frames[frame_id].parent
    own = [f for f in stack if "raynerf/" in f.file]
    return (own or stack)[:depth]


def source_of(
    computations: dict[str, list[Instr]], frames: dict[int, Frame], instr: Instr
) -> tuple[str, str, str]:
    """(source line, call chain, op_name) from the instruction's metadata, or from the
    instruction inside a fusion that carries some, the fusion's root first."""
    candidates = [instr]
    if instr.opcode == "fusion":
        stack = list(instr.called("calls"))
        while stack:
            body = list(reversed(computations.get(stack.pop(0), [])))
            candidates += body
            stack += [c for i in body if i.opcode == "fusion" for c in i.called("calls")]
    for cand in candidates:
        meta = cand.metadata()
        if "stack_frame_id" in meta and int(meta["stack_frame_id"]) in frames:
            chain = _chain(frames, int(meta["stack_frame_id"]))
            return chain[0].label(), " < ".join(f.label() for f in chain), meta.get("op_name", "")
        if "source_file" in meta:
            label = Frame(meta["source_file"], "", int(meta.get("source_line", 0)), 0).label()
            return label, label, meta.get("op_name", "")
    for cand in candidates:
        if cand.metadata().get("op_name"):
            return "(no source)", "(no source)", cand.metadata()["op_name"]
    return "(no metadata)", "(no metadata)", ""


def attribute(
    computations: dict[str, list[Instr]], entry: str, frames: dict[int, Frame], loops_once: bool = False
) -> list[Row]:
    """One row per executed instruction (see the module docstring). ``loops_once``:
    count each loop body once, as XLA's cost analysis does."""
    rows: list[Row] = []

    def visit(name: str, count: int) -> None:
        table = {i.name: i for i in computations.get(name, [])}
        for instr in computations.get(name, []):
            if instr.opcode == "while":
                trip = _TRIP_RE.search(instr.attrs)
                n = 1 if loops_once or not trip else int(trip[1])
                for body in instr.called("body"):
                    visit(body, count * n)
                for cond in instr.called("condition"):
                    visit(cond, count * (1 if loops_once else n + 1))
                continue
            if instr.opcode == "conditional":
                # Every branch counted once: an upper bound when only one runs.
                for key in ("branch_computations", "true_computation", "false_computation"):
                    for branch in instr.called(key):
                        visit(branch, count)
                continue
            if instr.opcode == "call":
                for callee in instr.called("to_apply"):
                    visit(callee, count)
                continue
            if instr.opcode in FREE_OPS:
                continue
            operands = [table[o] for o in instr.operands if o in table]
            reads = [a for o in operands for a in o.arrays]
            writes = instr.arrays
            if instr.opcode.endswith("-start"):
                # An async start's result tuple holds its operands again, the
                # destination and context scalars: count the destination once, and
                # for a slice only the part of the operand that it reads.
                writes = instr.arrays[len(reads) : len(reads) + 1] if len(instr.arrays) > len(reads) else []
                if instr.opcode == "slice-start":
                    reads = writes
            hbm = sum(a.padded for a in reads + writes if a.space == 0)
            gathered = _gathered(computations, instr)
            source, chain, op_name = source_of(computations, frames, instr)
            if source == "(no metadata)":
                # A move between memory spaces (a prefetch, an async slice, a copy)
                # carries none: take its data's producer's, through other moves.
                producer = operands[0] if operands else None
                while producer is not None and source == "(no metadata)":
                    source, chain, op_name = source_of(computations, frames, producer)
                    inner = [table[o] for o in producer.operands if o in table]
                    producer = inner[0] if inner else None
                source, chain = f"{source} [moved]", f"{chain} [moved]"
            rows.append(
                Row(
                    instr,
                    count,
                    sum(a.padded for a in reads),
                    sum(a.padded for a in writes),
                    sum(a.logical for a in reads),
                    sum(a.logical for a in writes),
                    hbm,
                    gathered,
                    group_of(computations, instr),
                    source,
                    chain,
                    op_name,
                )
            )

    visit(entry, 1)
    return rows


def summarise(rows: list[Row], key, top: int, per_gathered: float) -> list[dict]:
    """Rows summed by ``key(row)``, largest modelled total first."""
    sums: dict[str, dict] = collections.defaultdict(
        lambda: {"modelled": 0.0, "padded": 0, "logical": 0, "hbm": 0, "gathered": 0, "instructions": 0}
    )
    largest: dict[str, float] = {}
    for row in rows:
        name = key(row)
        item = sums[name]
        modelled = row.modelled(per_gathered)
        item["modelled"] += modelled
        item["padded"] += row.padded
        item["logical"] += row.logical
        item["hbm"] += row.hbm
        item["gathered"] += row.count * row.gathered
        item["instructions"] += 1
        if modelled > largest.get(name, -1.0):
            largest[name] = modelled
            item["example"] = f"{row.instr.name} ({row.group}) {row.op_name[-90:]}"
    ranked = sorted(sums.items(), key=lambda kv: -kv[1]["modelled"])[:top]
    return [dict(item, key=name) for name, item in ranked]


# --------------------------------------------------------------------------- compiling


def compile_step(slice_name: str, config_name: str | None, overrides: list[str]):
    """The train step as ``raynerf plan`` compiles it: (executable, config, mesh)."""
    import jax

    if not os.environ.get("JAX_PLATFORMS"):
        jax.config.update("jax_platforms", "cpu")
    from raynerf.cli.options import build_config
    from raynerf.distributed.plan import compile_train_step
    from raynerf.distributed.slices import parse_slice, topology_devices
    from raynerf.mesh import make_mesh

    tpu_slice = parse_slice(slice_name)
    config = build_config(config_name, tuple(overrides))
    mesh = make_mesh(topology_devices(tpu_slice))
    result, _, _ = compile_train_step(config, mesh)
    if result.executable is None:
        raise SystemExit(f"XLA could not compile the step: {result.error}")
    return result, config, mesh, tpu_slice


def _fmt(value: float) -> str:
    for scale, unit in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tpu", default="v5litepod-16", help="slice name, as `raynerf plan --tpu`")
    parser.add_argument("--config", default="360")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--save-hlo", type=Path, help="write the compiled program's text here")
    parser.add_argument("--hlo", type=Path, help="read a saved compiled program instead of compiling")
    parser.add_argument("--rays-per-chip", type=int, help="with --hlo: rays per chip (per ray figures)")
    parser.add_argument(
        "--xla-bytes",
        type=float,
        help="with --hlo: XLA's bytes accessed for that program (to fit the gathers)",
    )
    parser.add_argument("--json", type=Path, help="also write the breakdown as JSON here")
    parser.add_argument(
        "--per-gathered",
        type=float,
        help="bytes XLA charges per gathered element [default: fitted to XLA's total; 0 with --hlo]",
    )
    args = parser.parse_args(argv)

    cost: dict = {}
    header = []
    if args.hlo:
        text = args.hlo.read_text()
        rays = args.rays_per_chip or 1
        peak = bandwidth = None
        if args.xla_bytes:
            cost = {"bytes accessed": args.xla_bytes}
    else:
        start = time.perf_counter()
        result, config, mesh, tpu_slice = compile_step(args.tpu, args.config, args.overrides)
        seconds = time.perf_counter() - start
        text = result.executable.as_text()
        raw = result.executable.cost_analysis()
        cost = raw[0] if isinstance(raw, (list, tuple)) else raw
        rays = config.train.batch_size // mesh.devices.size
        import jax

        from raynerf.distributed.plan import peak_flops

        peak = peak_flops(tpu_slice, config.model.compute_dtype, jax.config.jax_default_matmul_precision)
        bandwidth = tpu_slice.generation.hbm_bandwidth
        memory = result.executable.memory_analysis()
        header.append(
            f"{args.tpu}: {mesh.devices.size} devices, {rays} rays per chip, "
            f"{result.grad_accum_steps} micro-batch(es), compiled in {seconds:.0f} s; "
            f"XLA temporaries {memory.temp_size_in_bytes / 2**20:.0f} MiB"
        )
    if args.save_hlo:
        args.save_hlo.write_text(text)
    computations, entry, frames = parse_hlo(text)
    rows = attribute(computations, entry, frames)
    once = attribute(computations, entry, frames, loops_once=True)
    total = sum(r.padded for r in rows)
    logical = sum(r.logical for r in rows)
    hbm = sum(r.hbm for r in rows)
    gathered = sum(r.count * r.gathered for r in rows)
    report: dict = {
        "rays_per_chip": rays,
        "padded_bytes": total,
        "logical_bytes": logical,
        "hbm_space_bytes": hbm,
        "gathered_elements": gathered,
        "padded_bytes_loops_once": sum(r.padded for r in once),
        "logical_bytes_loops_once": sum(r.logical for r in once),
    }
    print("\n".join(header))
    print(
        f"operands + results, per chip per step: {_fmt(total)} in tiled layouts "
        f"({_fmt(total / rays)} per ray), {_fmt(logical)} logical; of the tiled, {_fmt(hbm)} on "
        f"arrays in HBM, {_fmt(total - hbm)} on arrays XLA placed on chip (VMEM and others)"
    )
    print(
        f"  each loop body once (as XLA's cost analysis counts): {_fmt(report['padded_bytes_loops_once'])} "
        f"tiled; elements gathered: {gathered:,} ({gathered / rays:,.0f} per ray)"
    )
    per_gathered = args.per_gathered
    if cost:
        xla = float(cost.get("bytes accessed", 0.0))
        flops = float(cost.get("flops", 0.0))
        if per_gathered is None:
            # XLA:TPU charges each gathered element far more than its own bytes (about 8 kB
            # for a take_along_axis over rows of 64 f32 values, measured alone): the part of
            # XLA's total that operands and results leave unexplained, per gathered element.
            per_gathered = max(0.0, xla - total) / gathered if gathered else 0.0
        report.update(
            xla_bytes_accessed=xla, xla_flops=flops, xla_optimal_seconds=cost.get("optimal_seconds")
        )
        print(
            f"XLA cost analysis: bytes accessed {_fmt(xla)} ({_fmt(xla / rays)} per ray), "
            f"flops {flops / 1e12:.3f} T; operands + results (tiled) / XLA = {total / xla:.3f}; "
            f"the rest, {_fmt(xla - total)}, over {gathered:,} gathered elements: "
            f"{per_gathered:,.0f} B each"
        )
        if peak and bandwidth:
            compute_s, memory_s = flops / peak, xla / bandwidth
            report["estimate"] = {"compute_s": compute_s, "memory_s": memory_s}
            print(
                f"roofline (XLA's bytes): compute {compute_s * 1e3:.2f} ms, HBM {memory_s * 1e3:.2f} ms "
                f"-> {max(compute_s, memory_s) * 1e3:.2f} ms "
                f"({'compute' if compute_s >= memory_s else 'HBM'} bound); operands + results alone: "
                f"{total / bandwidth * 1e3:.2f} ms, HBM-resident arrays alone: {hbm / bandwidth * 1e3:.2f} ms"
            )
    per_gathered = per_gathered or 0.0
    report["bytes_per_gathered_element"] = per_gathered
    for title, key in (
        ("by kind", lambda r: r.group),
        ("by source line", lambda r: r.source),
        ("by call chain", lambda r: r.chain),
        ("by op name", lambda r: re.sub(r"\.\d+$", "", r.op_name) or r.group),
        ("by instruction", lambda r: f"{r.instr.computation}/{r.instr.name}"),
    ):
        table = summarise(rows, key, args.top, per_gathered)
        report[title.replace(" ", "_")] = table
        print(
            f"\ntop {args.top} {title}: modelled bytes per chip per step, per ray, share; "
            f"operands + results (tiled, logical, in HBM); gathered elements"
        )
        modelled_total = sum(r.modelled(per_gathered) for r in rows)
        for item in table:
            print(
                f"  {_fmt(item['modelled']):>10} {_fmt(item['modelled'] / rays):>10}/ray "
                f"{100 * item['modelled'] / modelled_total:5.1f}%  {_fmt(item['padded']):>10} "
                f"{_fmt(item['logical']):>10} {_fmt(item['hbm']):>10}  {item['gathered']:>9,}  "
                f"x{item['instructions']:<4} {item['key']}"
            )
            if title in ("by kind", "by source line"):
                print(f"  {'':>10} e.g. {item['example']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
