"""VAEs trained anywhere, as ONNX: the `vae-onnx` folder format, its checked loader and our exporter.

    FOLDER/encoder.onnx      input x (N, C, H, W) float32 in [0, 1] -> outputs mu, logvar (N, D)
    FOLDER/decoder.onnx      input z (N, D) float32 -> one output, named by the likelihood (`logits`;
                             `params` (N, 2C, H, W) = [locations; log-scales] for `logistic`)
    FOLDER/vae.json          {"format": "vae-onnx", "version": 1, "image_shape": [C, H, W],
                              "latent_dim": D, "likelihood": "bernoulli", "dataset": NAME (optional),
                              "classes": [...] (optional), "name": ..., "description": ...}
    FOLDER/evaluation.json   the metrics `evaluate --write` stored (optional)

`load_onnx(FOLDER)` returns an `OnnxVAE`, which keeps the contract of `vae_core.model.VAE`
(`config.latent_dim`, `config.image_shape`, `encode`, `decode`, `likelihood`, `meta`), so the
explorer, evaluation, IWAE and the gap tools use it unchanged; only training needs our own models.

Loading runs no code from the files. Everything is checked before a session exists: each file's size,
the manifest's keys and sizes (against the memory budget), the protobuf's integrity, that every
operator is a standard ONNX one (no custom-op domains; no custom-op library is ever registered), that
no tensor keeps its data in an external file (the path-traversal class of ONNX bugs), and that the
graphs' input and output names, dtypes and shapes are the manifest's, and that every weight is
finite (a NaN or inf weight would decode NaN images). Only then is the checked
ModelProto (not the file again) handed to onnxruntime's CPU provider (CUDA where it is available).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vae_core import budget
from vae_core.atomic import atomic_write_bytes, atomic_write_text
from vae_core.checkpoint import CheckpointError
from vae_core.data import DATASETS
from vae_core.likelihood import Bernoulli, DiscretizedLogistic, Likelihood
from vae_core.model import VAE, CheckpointMeta
from vae_core.spec import DataSpec, RunSpec, VAEConfig

FORMAT = "vae-onnx"
VERSION = 1
MANIFEST_FILE = "vae.json"
ENCODER_FILE = "encoder.onnx"
DECODER_FILE = "decoder.onnx"
EVALUATION_FILE = "evaluation.json"
FILES = (ENCODER_FILE, DECODER_FILE, MANIFEST_FILE)
MAX_ONNX_BYTES = 200 * 2**20  # each graph file; our largest model's graphs take a few MB
MAX_JSON_BYTES = 2**20  # the manifest and evaluation.json: a few hundred bytes in practice
MAX_CHANNELS = 4
MAX_SIDE = 1024  # pixels per image side
MAX_CLASSES = 1000
MAX_TEXT = 10_000  # characters of a name or a description
OPSET = 18  # what our exporter writes
# The operator domains of the ONNX standard; any other names custom operators, refused.
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})
FLOAT = 1  # onnx.TensorProto.FLOAT
EXTERNAL = 1  # onnx.TensorProto.EXTERNAL
FLOATING = frozenset({1, 10, 11, 16})  # onnx.TensorProto FLOAT, FLOAT16, DOUBLE, BFLOAT16
MANIFEST_KEYS = frozenset(
    {"format", "version", "image_shape", "latent_dim", "likelihood", "dataset", "classes", "name"}
    | {"description", "binarize"}
)


@dataclass(frozen=True)
class LikelihoodFormat:
    """How a decoder's single output is named and shaped for a likelihood, and which one scores it."""

    output: str
    build: Callable[[], Likelihood]
    params_shape: Callable[[tuple[int, ...]], tuple[int, ...]]  # image (C, H, W) -> params per image


# Extend with each likelihood of vae_core.likelihood that has a documented output layout.
LIKELIHOODS: dict[str, LikelihoodFormat] = {
    Bernoulli.name: LikelihoodFormat("logits", Bernoulli, lambda image: image),
    # [locations; log-scales] along the channels, on the [0, 1] scale (see DiscretizedLogistic)
    DiscretizedLogistic.name: LikelihoodFormat(
        "params", DiscretizedLogistic, lambda image: (2 * image[0], *image[1:])
    ),
}


# ---------------------------------------------------------------- the manifest


@dataclass(frozen=True)
class Manifest:
    """What `vae.json` says about the two graphs, checked."""

    image_shape: tuple[int, int, int]
    latent_dim: int
    likelihood: str = Bernoulli.name
    dataset: str = ""
    classes: tuple[str, ...] = ()
    name: str = ""
    description: str = ""
    binarize: str = "none"  # optional extension: how our exporter's model saw its training images

    def to_dict(self) -> dict:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "image_shape": list(self.image_shape),
            "latent_dim": self.latent_dim,
            "likelihood": self.likelihood,
            "name": self.name,
            "description": self.description,
        }
        if self.dataset:
            d["dataset"] = self.dataset
        if self.classes:
            d["classes"] = list(self.classes)
        if self.binarize != "none":
            d["binarize"] = self.binarize
        return d


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text(file: Path, d: dict, key: str) -> str:
    value = d.get(key, "")
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise CheckpointError(f"{file}: {key} must be a text of at most {MAX_TEXT:,} characters", file)
    return value


def _read_json(file: Path) -> Any:
    """A small JSON file's value; CheckpointError if it is missing, too large or not JSON."""
    if not file.is_file():
        raise CheckpointError(f"No {file.name} at {file}", file)
    size = file.stat().st_size
    if size > MAX_JSON_BYTES:
        raise CheckpointError(f"{file} is {size:,} bytes; at most {MAX_JSON_BYTES:,} are read", file)
    try:
        return json.loads(file.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})", file) from e


def _check_shape(file: Path, shape: Any) -> tuple[int, int, int]:
    limits = (MAX_CHANNELS, MAX_SIDE, MAX_SIDE)
    if not (isinstance(shape, list) and len(shape) == 3 and all(_whole(s) for s in shape)):
        raise CheckpointError(f"{file}: image_shape must be [channels, height, width], got {shape!r}", file)
    if not all(1 <= s <= limit for s, limit in zip(shape, limits, strict=True)):
        raise CheckpointError(
            f"{file}: image_shape {shape} is out of range: at most {MAX_CHANNELS} channels and "
            f"{MAX_SIDE} pixels a side",
            file,
        )
    batch_bytes = budget.SCORE_BATCH * math.prod(shape) * budget.FLOAT_BYTES * 2  # images and params
    if batch_bytes > budget.budget_bytes():
        raise CheckpointError(
            f"{file}: a batch of {budget.SCORE_BATCH} images of shape {shape} takes "
            f"{budget.shown_bytes(batch_bytes)}, more than the memory budget of "
            f"{budget.shown_bytes(budget.budget_bytes())} (set by the operator with {budget.BUDGET_ENV})",
            file,
        )
    return shape[0], shape[1], shape[2]


def parse_manifest(file: Path, d: Any) -> Manifest:
    """The manifest's value checked: format, version, keys, sizes; CheckpointError naming what is wrong."""
    if not isinstance(d, dict):
        raise CheckpointError(f"{file} must hold a JSON object, got {type(d).__name__}", file)
    if d.get("format") != FORMAT:
        raise CheckpointError(f"{file}: format must be {FORMAT!r}, got {d.get('format')!r}", file)
    if d.get("version") != VERSION:
        raise CheckpointError(
            f"{file} has version {d.get('version')!r}; this vae_core reads version {VERSION} of {FORMAT}",
            file,
        )
    unknown = sorted(d.keys() - MANIFEST_KEYS)
    if unknown:
        raise CheckpointError(f"{file} has unknown keys {unknown}; known: {sorted(MANIFEST_KEYS)}", file)
    latent_dim = d.get("latent_dim")
    high = VAEConfig.__dataclass_fields__["latent_dim"].metadata["option"].max
    if not (_whole(latent_dim) and 1 <= latent_dim <= high):
        raise CheckpointError(
            f"{file}: latent_dim must be a whole number from 1 to {high}, got {latent_dim!r}", file
        )
    likelihood = d.get("likelihood")
    if likelihood not in LIKELIHOODS:
        raise CheckpointError(
            f"{file}: likelihood must be one of {sorted(LIKELIHOODS)}, got {likelihood!r}", file
        )
    classes = d.get("classes", [])
    if not (
        isinstance(classes, list) and len(classes) <= MAX_CLASSES and all(isinstance(c, str) for c in classes)
    ):
        raise CheckpointError(f"{file}: classes must be a list of at most {MAX_CLASSES} names", file)
    binarize = d.get("binarize", "none")
    if binarize not in DataSpec.__dataclass_fields__["binarize"].metadata["option"].choices:
        raise CheckpointError(f"{file}: binarize must be 'none' or 'dynamic', got {binarize!r}", file)
    return Manifest(
        image_shape=_check_shape(file, d.get("image_shape")),
        latent_dim=latent_dim,
        likelihood=likelihood,
        dataset=_text(file, d, "dataset"),
        classes=tuple(classes),
        name=_text(file, d, "name"),
        description=_text(file, d, "description"),
        binarize=binarize,
    )


def read_manifest(folder: str | Path) -> Manifest:
    """The checked manifest of an ONNX model folder."""
    file = Path(folder) / MANIFEST_FILE
    return parse_manifest(file, _read_json(file))


def is_onnx_folder(path: str | Path) -> bool:
    """Whether `path` is a folder holding a `vae.json` (an ONNX model, to be checked when loaded)."""
    return (Path(path) / MANIFEST_FILE).is_file()


# ---------------------------------------------------------------- the graphs


def _read_graph_bytes(file: Path) -> bytes:
    if file.is_symlink() or not file.is_file():
        raise CheckpointError(f"No {file.name} at {file} (a regular file, not a link)", file)
    size = file.stat().st_size
    if size > MAX_ONNX_BYTES:
        raise CheckpointError(
            f"{file} is {budget.shown_bytes(size)}, more than the {budget.shown_bytes(MAX_ONNX_BYTES)} an "
            f"ONNX graph may take here",
            file,
        )
    if size == 0:
        raise CheckpointError(f"{file} is empty (0 bytes): it is not an ONNX model", file)
    return file.read_bytes()


def _graph_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of a graph: initializers, sparse initializers, attributes, subgraphs'."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _node_tensors(node)


def _node_tensors(node: Any) -> Iterator[Any]:
    for attribute in node.attribute:
        if attribute.HasField("t"):
            yield attribute.t
        yield from attribute.tensors
        if attribute.HasField("sparse_tensor"):
            yield from (attribute.sparse_tensor.values, attribute.sparse_tensor.indices)
        for graph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
            yield from _graph_tensors(graph)


def _nodes(graph: Any) -> Iterator[Any]:
    """Every node of a graph and of its subgraphs."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                yield from _nodes(sub)


def check_safe(file: Path, proto: Any) -> None:
    """Refuse external-data tensors and operators outside the ONNX standard domains."""
    functions = {(f.domain, f.name) for f in proto.functions}
    domains = {op.domain for op in proto.opset_import} - STANDARD_DOMAINS
    for function in proto.functions:
        for node in function.node:
            for t in _node_tensors(node):
                _check_inline(file, t)
    for t in _graph_tensors(proto.graph):
        _check_inline(file, t)
    for node in _nodes(proto.graph):
        if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in functions:
            raise CheckpointError(
                f"{file} uses the operator {node.op_type} of the domain {node.domain!r}, which is not a "
                f"standard ONNX operator: custom operators are refused (they would run native code)",
                file,
            )
    for function in proto.functions:
        for node in function.node:
            if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in functions:
                raise CheckpointError(
                    f"{file}: function {function.name} uses {node.op_type} of the domain {node.domain!r}: "
                    f"custom operators are refused",
                    file,
                )
    extra = domains - {domain for domain, _ in functions}
    if extra:
        raise CheckpointError(
            f"{file} imports the non-standard operator domains {sorted(extra)}: refused", file
        )


def _check_inline(file: Path, tensor: Any) -> None:
    if tensor.data_location == EXTERNAL or len(tensor.external_data):
        where = {entry.key: entry.value for entry in tensor.external_data}.get("location", "?")
        raise CheckpointError(
            f"{file}: the tensor {tensor.name or '(unnamed)'} keeps its data in an external file "
            f"({where!r}); external data is refused: every weight must be inside the .onnx file",
            file,
        )


def check_finite(file: Path, proto: Any) -> None:
    """Refuse weights (initializers, constants, in subgraphs and functions too) holding NaN or inf.

    Each tensor is read from the checked file's own bytes, so its size is bounded by MAX_ONNX_BYTES."""
    from onnx import numpy_helper

    functions = (t for f in proto.functions for node in f.node for t in _node_tensors(node))
    for tensor in [*_graph_tensors(proto.graph), *functions]:
        if tensor.data_type not in FLOATING:
            continue
        values = numpy_helper.to_array(tensor)
        values = values if values.dtype.kind == "f" else values.astype(np.float32)  # bfloat16: ml_dtypes
        bad = int(values.size - np.count_nonzero(np.isfinite(values)))
        if bad:
            raise CheckpointError(
                f"{file}: the tensor {tensor.name or '(unnamed)'} holds {bad:,} NaN or infinite values (of "
                f"{values.size:,}); a model with non-finite weights decodes NaN images: retrain or re-export "
                f"it",
                file,
            )


def parse_graph(file: Path) -> Any:
    """The ModelProto of a graph file, checked safe and well-formed; nothing of it runs."""
    import onnx
    from google.protobuf.message import DecodeError

    data = _read_graph_bytes(file)
    try:
        proto = onnx.load_model_from_string(data)  # bytes: no external file is read
    except (DecodeError, RuntimeError, ValueError) as e:
        raise CheckpointError(
            f"{file} is not a readable ONNX model: its protobuf is damaged or truncated, as when a copy "
            f"or a write stopped early ({_reason(e)})",
            file,
        ) from e
    if not proto.HasField("graph") or not proto.graph.output:
        raise CheckpointError(f"{file} is not an ONNX model (it holds no graph with outputs)", file)
    check_safe(file, proto)
    check_finite(file, proto)
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"{file} is not a valid ONNX model: {_reason(e)}", file) from e
    return proto


def _reason(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _signature(value: Any) -> tuple[int, tuple[int | str | None, ...]]:
    """(element type, dims) of a graph input or output; a dim is a number, a name, or None (unknown)."""
    tensor = value.type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
    return tensor.elem_type, dims


def _inputs(proto: Any) -> list[Any]:
    initialised = {t.name for t in proto.graph.initializer}
    return [v for v in proto.graph.input if v.name not in initialised]


def check_signature(file: Path, values: list[Any], expected: dict[str, tuple[int, ...]], kind: str) -> None:
    """The graph's inputs (or outputs) are exactly `expected`: names, float32, dynamic batch, shapes."""
    names = [v.name for v in values]
    if sorted(names) != sorted(expected):
        raise CheckpointError(f"{file} has {kind}s {names}; the manifest implies {list(expected)}", file)
    for value in values:
        elem, dims = _signature(value)
        want = expected[value.name]
        if elem != FLOAT:
            raise CheckpointError(f"{file}: {kind} {value.name} is not float32 (ONNX type {elem})", file)
        if len(dims) != 1 + len(want):
            raise CheckpointError(
                f"{file}: {kind} {value.name} has {len(dims)} dimensions; the manifest implies "
                f"(N, {', '.join(map(str, want))})",
                file,
            )
        if isinstance(dims[0], int):
            raise CheckpointError(
                f"{file}: {kind} {value.name} has a fixed batch size {dims[0]}; export it with a dynamic "
                f"batch dimension",
                file,
            )
        if tuple(dims[1:]) != want:
            shown = ", ".join("?" if d is None else str(d) for d in dims)
            raise CheckpointError(
                f"{file}: {kind} {value.name} has shape ({shown}); the manifest implies "
                f"(N, {', '.join(map(str, want))})",
                file,
            )


def check_graphs(folder: Path, manifest: Manifest, encoder: Any, decoder: Any) -> None:
    """Both graphs' names, dtypes and shapes against the manifest."""
    image, d = manifest.image_shape, (manifest.latent_dim,)
    form = LIKELIHOODS[manifest.likelihood]
    check_signature(folder / ENCODER_FILE, _inputs(encoder), {"x": image}, "input")
    check_signature(folder / ENCODER_FILE, list(encoder.graph.output), {"mu": d, "logvar": d}, "output")
    check_signature(folder / DECODER_FILE, _inputs(decoder), {"z": d}, "input")
    outputs = {form.output: form.params_shape(image)}
    check_signature(folder / DECODER_FILE, list(decoder.graph.output), outputs, "output")


def _session(file: Path, proto: Any) -> Any:
    """An onnxruntime session of a checked graph: CPU (CUDA where available), no custom ops."""
    import onnxruntime as ort

    options = ort.SessionOptions()  # no register_custom_ops_library: only built-in kernels
    options.intra_op_num_threads = torch.get_num_threads()
    options.log_severity_level = 3  # errors only: warnings would go to stderr on every load
    available = ort.get_available_providers()
    providers = ["CUDAExecutionProvider"] * ("CUDAExecutionProvider" in available) + ["CPUExecutionProvider"]
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=providers)
    except Exception as e:  # onnxruntime's own errors share no base class
        raise CheckpointError(f"{file} could not be prepared by onnxruntime: {_reason(e)}", file) from e


# ---------------------------------------------------------------- the model


@dataclass(frozen=True)
class OnnxConfig:
    """An ONNX model's config: what the manifest declares (no architecture: the graphs are opaque)."""

    latent_dim: int
    image_shape: tuple[int, int, int]
    likelihood: str = Bernoulli.name


@dataclass(frozen=True)
class ForeignData:
    """The data of a model trained elsewhere on a dataset vae_core does not know (DataSpec's role)."""

    name: str = "unknown"
    binarize: str = "none"


@dataclass
class OnnxMeta(CheckpointMeta):
    """A checkpoint card for an ONNX folder: the spec built from the manifest, and the manifest."""

    manifest: Manifest = field(default_factory=lambda: Manifest((1, 28, 28), 2))


def spec_of(manifest: Manifest) -> RunSpec:
    """A run spec standing for the manifest: its dataset (or "unknown"), binarisation and sizes."""
    name = manifest.dataset or "unknown"
    data = (
        DataSpec(name=name, binarize=manifest.binarize)
        if name in DATASETS
        else ForeignData(name, manifest.binarize)
    )
    model = VAEConfig(latent_dim=manifest.latent_dim, image_shape=manifest.image_shape)
    return RunSpec(data=data, model=model)  # type: ignore[arg-type]


class OnnxVAE:
    """A VAE of two ONNX graphs, with the encode/decode contract of `vae_core.model.VAE`."""

    def __init__(self, manifest: Manifest, encoder: Any, decoder: Any, meta: OnnxMeta) -> None:
        self.manifest = manifest
        self.config = OnnxConfig(manifest.latent_dim, manifest.image_shape, manifest.likelihood)
        self.meta = meta
        self._encoder, self._decoder = encoder, decoder
        self._output = LIKELIHOODS[manifest.likelihood].output

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")  # inputs and outputs are CPU tensors, whatever runs the graphs

    @property
    def likelihood(self) -> Likelihood:
        return LIKELIHOODS[self.manifest.likelihood].build()

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (N, C, H, W) in [0, 1] -> mu, logvar: each (N, latent_dim)."""
        if tuple(x.shape[1:]) != self.config.image_shape:
            raise ValueError(
                f"encode expects images of shape (N, {', '.join(map(str, self.config.image_shape))}),"
                f" got {tuple(x.shape)}"
            )
        mu, logvar = self._encoder.run(["mu", "logvar"], {"x": _array(x)})
        return torch.from_numpy(mu).to(x.device), torch.from_numpy(logvar).to(x.device)

    def decode(self, z: Tensor) -> Tensor:
        """z: (N, latent_dim) -> the likelihood's parameters, e.g. Bernoulli logits (N, C, H, W)."""
        if z.ndim != 2 or z.shape[1] != self.config.latent_dim:
            raise ValueError(f"decode expects z of shape (N, {self.config.latent_dim}), got {tuple(z.shape)}")
        (params,) = self._decoder.run([self._output], {"z": _array(z)})
        return torch.from_numpy(params).to(z.device)

    def eval(self) -> OnnxVAE:
        return self  # a graph has no training mode

    def to(self, device: str | torch.device) -> OnnxVAE:
        return self  # sessions pick their provider when loaded; tensors come back on the input's device


def _array(t: Tensor) -> Any:
    """A tensor as the contiguous float32 numpy array onnxruntime takes (N is never 0 here)."""
    return t.detach().to("cpu", torch.float32).contiguous().numpy()


def read_evaluation(folder: Path) -> dict:
    """The metrics stored beside an ONNX model, {} if none."""
    file = folder / EVALUATION_FILE
    if not file.exists():
        return {}
    metrics = _read_json(file)
    if not isinstance(metrics, dict):
        raise CheckpointError(f"{file} must hold a JSON object of metrics", file)
    return metrics


def write_evaluation(folder: str | Path, metrics: dict) -> Path:
    """Merge `metrics` into `evaluation.json` beside an ONNX model, atomically."""
    folder = Path(folder)
    merged = {**read_evaluation(folder), **metrics}
    return atomic_write_text(folder / EVALUATION_FILE, json.dumps(merged, indent=1))


def load_onnx(folder: str | Path) -> OnnxVAE:
    """An ONNX model folder, every file checked before anything is run; CheckpointError otherwise."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    encoder, decoder = parse_graph(folder / ENCODER_FILE), parse_graph(folder / DECODER_FILE)
    check_graphs(folder, manifest, encoder, decoder)
    meta = OnnxMeta(
        spec=spec_of(manifest), metrics=read_evaluation(folder), path=str(folder), manifest=manifest
    )
    sessions = _session(folder / ENCODER_FILE, encoder), _session(folder / DECODER_FILE, decoder)
    return OnnxVAE(manifest, *sessions, meta)


def folder_mtime(folder: str | Path) -> float:
    """The latest modification time of the model's files: a cache key that changes with any of them."""
    return max((Path(folder) / name).stat().st_mtime for name in FILES)


# ---------------------------------------------------------------- export


class _Encoder(nn.Module):
    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.encode(x)


class _Decoder(nn.Module):
    def __init__(self, model: VAE) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> Tensor:
        return self.model.decode(z)


def graph_bytes(module: nn.Module, example: Tensor, inputs: list[str], outputs: list[str]) -> bytes:
    """A module as a serialised ONNX graph with a dynamic batch dimension (torch.export based)."""
    batch = torch.export.Dim("N", min=1, max=2**20)
    program = torch.onnx.export(
        module.eval(),
        (example,),
        input_names=inputs,
        output_names=outputs,
        dynamic_shapes=({0: batch},),
        opset_version=OPSET,
        dynamo=True,
        verbose=False,
    )
    return program.model_proto.SerializeToString()


def export_onnx(model: VAE, out: str | Path, *, name: str = "", description: str = "") -> Path:
    """Write one of our models as an ONNX folder (each file atomically, the manifest last)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config, spec = model.config, model.meta.spec
    form = LIKELIHOODS[model.likelihood.name]
    x = torch.rand(2, *config.image_shape)  # (2, C, H, W): example inputs for tracing
    z = torch.randn(2, config.latent_dim)  # (2, D)
    with torch.no_grad():
        encoder = graph_bytes(_Encoder(model), x, ["x"], ["mu", "logvar"])
        decoder = graph_bytes(_Decoder(model), z, ["z"], [form.output])
    atomic_write_bytes(out / ENCODER_FILE, encoder)
    atomic_write_bytes(out / DECODER_FILE, decoder)
    manifest = Manifest(
        image_shape=config.image_shape,  # type: ignore[arg-type]
        latent_dim=config.latent_dim,
        likelihood=model.likelihood.name,
        dataset=spec.data.name,
        classes=DATASETS[spec.data.name].classes if spec.data.name in DATASETS else (),
        name=name,
        description=description,
        binarize=spec.data.binarize,
    )
    atomic_write_text(out / MANIFEST_FILE, json.dumps(manifest.to_dict(), indent=1))
    return out
