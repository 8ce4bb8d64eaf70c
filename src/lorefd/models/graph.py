"""The detector's inference graph as ONNX, stored inside its bundle, run with ONNX Runtime.

A bundle may hold, beside the weights, the tensor ``onnx.graph`` (uint8): an ONNX model of
``images (B, 3, S, S) in [0, 1] -> prob (B,), maps...`` -- the probability of *fake* and the
maps ``explain()`` gives (attention maps of the ``lre`` method, the blend mask of a baseline
with a mask head). The graph carries no copy of the weights it shares with the bundle: those
initializers are marked external and filled from the bundle's own tensors when the session is
built (float16 bundle weights are cast to float32, as PyTorch loading does), so the graph adds
little to the file. The manifest's ``onnx`` entry says what the graph is::

    {"graph_version", "lorefd_version", "sha256" (of the graph bytes), "outputs" (map names),
     "shared" (bundle keys the graph reads), "prefix", "max_abs_diff" (vs PyTorch at export),
     "checked_on"}

Export (:func:`add_graph`, needs torch, ``onnx`` and ``onnxscript``) checks the graph against
PyTorch on real face crops and refuses to store one whose probabilities differ by more than
:data:`PROB_TOL`; it stores the first of those crops (``onnx.reference``, uint8) with
PyTorch's score (``manifest["reference"]``). Loading runs the graph on it again and refuses
the bundle when the score moved (:func:`lorefd.models.bundle_check.check_reference`): checksums
show a file is intact, not that a re-sealed graph computes what the weights do. Running it
(:func:`load_onnx_bundle`) needs numpy, safetensors and onnxruntime only: no torch, timm or
torchvision is imported on that path.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lorefd.errors import MissingExtraError, OptionError, missing_module
from lorefd.models.bundle import (
    RESERVED_PREFIX,
    Bundle,
    BundleError,
    read_bundle_header,
    resolve_model,
)
from lorefd.models.bundle_check import REFERENCE_KEY, check_manifest, check_reference
from lorefd.version import __version__

if TYPE_CHECKING:
    import torch

log = logging.getLogger("lorefd")

GRAPH_KEY = "onnx.graph"  # the reserved bundle tensor (bundle.RESERVED_PREFIX)
GRAPH_VERSION = 1  # the graph's contract: input "images", outputs "prob" then the maps
PROB_TOL = 1e-4  # largest |prob_onnx - prob_torch| export accepts
N_REFERENCE = 1  # faces stored with their scores, run again at every load (cheap: one face)
PREFIX = "detector."  # initializer name = PREFIX + bundle key
OPSET = 18
RUNTIMES = ("onnx", "torch")
FACES = Path(__file__).resolve().parents[1] / "assets" / "faces"


class GraphError(BundleError):
    """A graph that cannot be exported, is missing, damaged, or from another lorefd version."""


# ------------------------------------------------------------------------------ export
def reference_faces(image_size: int, preprocess: dict[str, Any], n: int = 8
                    ) -> tuple[np.ndarray, list[str]]:
    """``n`` bundled real faces aligned and resized as ``lorefd detect`` crops them (with their
    stored landmarks, so no face detector is needed): ``(n, 3, S, S)`` uint8, and their file
    names."""
    from lorefd.data.images import load_rgb, resize_square
    from lorefd.data.preprocess.align import align_face

    out, names = [], []
    for jpg in sorted((FACES / "real").glob("*.jpg"))[:n]:
        landmarks = np.load(FACES / "landmarks" / f"{jpg.stem}.npy")
        crop, _, _ = align_face(load_rgb(jpg), landmarks, int(preprocess["size"]),
                                float(preprocess["margin"]), preprocess.get("crop", "template"))
        out.append(np.ascontiguousarray(resize_square(crop, image_size).transpose(2, 0, 1)))
        names.append(jpg.name)
    return np.stack(out), names


def reference_crops(image_size: int, preprocess: dict[str, Any], n: int = 8) -> np.ndarray:
    """:func:`reference_faces` as the detector input: ``(n, 3, S, S)`` float32 in [0, 1]
    (the values :func:`lorefd.data.images.to_chw` gives)."""
    return reference_faces(image_size, preprocess, n)[0].astype(np.float32) / 255.0


def _wrapper(detector: Any) -> torch.nn.Module:
    import torch

    class Explain(torch.nn.Module):
        """``images -> (prob, *maps)`` of ``detector.explain`` (attribute named by PREFIX)."""

        def __init__(self) -> None:
            super().__init__()
            self.detector = detector

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
            ex = self.detector.explain(images)
            return (ex["prob"], *ex["attention"].values())

    return Explain().eval()


def _torch_outputs(detector: Any, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    import torch

    with torch.no_grad():
        ex = detector.explain(torch.from_numpy(images))
    return (ex["prob"].float().numpy(),
            {k: v.float().numpy() for k, v in ex["attention"].items()})


def export_graph(detector: Any, weights: dict[str, Any]) -> tuple[bytes, list[str], list[str]]:
    """The ONNX graph of ``detector`` (eval mode): ``(bytes, map names, shared bundle keys)``.

    Initializers equal to a tensor of ``weights`` (the bundle's, as stored) are left out of
    the bytes and marked external: they are read from the bundle at load time."""
    import onnx
    import onnxscript.optimizer
    import torch
    from onnx import numpy_helper

    detector = detector.eval()
    if hasattr(detector, "eval_mask"):  # the fixed evaluation masks become constants
        for k in range(detector.eval_masks):
            detector.eval_mask(k, torch.device("cpu"))
    size = int(detector.image_size)
    with torch.no_grad():
        names = list(detector.explain(torch.zeros(1, 3, size, size))["attention"])
    outputs = ["prob", *[f"map{i}" for i in range(len(names))]]
    program = torch.onnx.export(
        _wrapper(detector), (torch.zeros(2, 3, size, size),), dynamo=True, optimize=False,
        input_names=["images"], output_names=outputs, opset_version=OPSET,
        dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},), verbose=False)
    # Fold the constants torch.export leaves as nodes (a convolution's zero bias as Cast +
    # Expand): ONNX Runtime fuses Conv + BatchNorm + ReLU into its blocked (NCHWc) kernels
    # only where a convolution's inputs are constants. Only folding: the optimizer's rewrite
    # rules (optimize=True) would also change weights (BatchNorm folded into them), which the
    # bundle then could not share.
    onnxscript.optimizer.fold_constants(program.model)
    onnxscript.optimizer.remove_unused_nodes(program.model)
    model = program.model_proto
    shared = []
    for init in model.graph.initializer:
        key = init.name.removeprefix(PREFIX)
        if not init.name.startswith(PREFIX) or key not in weights:
            continue
        value = numpy_helper.to_array(init)
        stored = weights[key].detach().cpu()
        stored = stored.to(torch.float32) if value.dtype == np.float32 else stored
        if tuple(stored.shape) != value.shape or not np.array_equal(stored.numpy(), value):
            continue
        init.ClearField("raw_data")
        for field in ("float_data", "int64_data", "int32_data", "double_data"):
            init.ClearField(field)
        init.data_location = onnx.TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", "lorefd-bundle"), ("offset", "0"),
                     ("length", str(value.nbytes))):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        shared.append(key)
    model.producer_name, model.producer_version = "lorefd", __version__
    return model.SerializeToString(), names, shared


def add_graph(bundle_path: str | Path, out_path: str | Path | None = None,
              n_check: int = 8, tta: str | None = None,
              threshold: float | None = None, threshold_rule: str | None = None
              ) -> dict[str, Any]:
    """Add (or replace) the ONNX graph of a bundle, written to ``out_path`` (default: in place);
    ``tta`` / ``threshold`` change the bundle's test-time flip / decision threshold first.

    The graph is run with ONNX Runtime on ``n_check`` bundled real faces and compared with
    PyTorch; :class:`GraphError` (nothing written) when a probability differs by more than
    :data:`PROB_TOL`. The first :data:`N_REFERENCE` of them are stored in the bundle
    (:data:`~lorefd.models.bundle_check.REFERENCE_KEY`, uint8) with PyTorch's scores
    (``manifest["reference"]``): every load runs them again (:func:`load_onnx_bundle`, and
    the PyTorch loader) and refuses a bundle whose scores moved. Returns the stored manifest."""
    import torch
    from safetensors.torch import load_file

    from lorefd.models.bundle import load_bundle, write_bundle
    from lorefd.models.bundle_manifest import with_tta

    bundle_path = Path(bundle_path)
    bundle = load_bundle(bundle_path, old=True)  # a version 1 bundle is re-sealed here
    weights = {k: v for k, v in load_file(str(bundle_path)).items()
               if not k.startswith(RESERVED_PREFIX)}
    manifest = {k: v for k, v in bundle.manifest.items()
                if k not in ("format", "bundle_version", "lorefd_version", "created",
                             "payload_sha256", "tensors_sha256", "num_tensors", "onnx",
                             "reference")}
    if tta is not None:
        manifest["config"] = with_tta(bundle.detector.config, tta).to_dict()
        manifest["checkpoint_meta"] = {**manifest["checkpoint_meta"], "tta": tta}
        bundle.detector.tta = tta
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise OptionError(f"threshold must be in [0, 1], got {threshold}")
        manifest["threshold"] = {"value": float(threshold), "source": (
            f"given at export: {threshold_rule}" if threshold_rule else "given at export")}
    graph, names, shared = export_graph(bundle.detector, weights)
    info = {"graph_version": GRAPH_VERSION, "lorefd_version": __version__,
            "sha256": hashlib.sha256(graph).hexdigest(), "outputs": names, "shared": shared,
            "prefix": PREFIX, "opset": OPSET}
    faces, names = reference_faces(bundle.detector.image_size, bundle.preprocess,
                                   max(n_check, N_REFERENCE))
    crops = faces.astype(np.float32) / 255.0
    runner = OnnxDetector(graph, {k: weights[k].numpy() for k in shared}, info,
                          bundle.detector.name, bundle.detector.image_size)
    diff, map_diff = 0.0, 0.0
    p_reference = None
    for batch in (crops[:N_REFERENCE], crops):  # batch 1 and a full batch (dynamic batch axis)
        p_torch, m_torch = _torch_outputs(bundle.detector, batch)
        p_reference = p_torch if p_reference is None else p_reference
        p_onnx, m_onnx = runner.run(batch)
        diff = max(diff, float(np.abs(p_onnx - p_torch).max()))
        for k in m_torch:
            map_diff = max(map_diff, float(np.abs(m_onnx[k] - m_torch[k]).max()))
    if not diff <= PROB_TOL:
        raise GraphError(f"ONNX graph of {bundle_path} differs from PyTorch by {diff:.2e} in "
                         f"the probability (> {PROB_TOL:g}); not written")
    info.update(max_abs_diff={"prob": diff, "maps": map_diff},
                checked_on=f"{len(crops)} bundled real faces (assets/faces)")
    manifest["onnx"] = info
    manifest["reference"] = {"tensor": REFERENCE_KEY, "faces": names[:N_REFERENCE],
                             "prob": [float(p) for p in p_reference],
                             "source": "PyTorch at export (assets/faces/real)"}
    weights[GRAPH_KEY] = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
    weights[REFERENCE_KEY] = torch.from_numpy(np.ascontiguousarray(faces[:N_REFERENCE]))
    return write_bundle(out_path or bundle_path, weights, manifest)


# ------------------------------------------------------------------------------ runtime
class OnnxDetector:
    """A detector's graph in an ONNX Runtime session, with the detector interface of
    ``lorefd detect`` needs, on numpy arrays: ``run`` (probabilities and maps),
    ``predict_proba``, ``name``, ``image_size``."""

    runtime = "onnx"

    def __init__(self, graph: bytes, shared: dict[str, np.ndarray], info: dict[str, Any],
                 name: str, image_size: int, threads: int | None = None) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
        prefix = info.get("prefix", PREFIX)
        # float16 bundle weights are cast to float32 exactly as PyTorch loads them
        self._shared = {prefix + k: np.ascontiguousarray(
            v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in shared.items()}
        values = [ort.OrtValue.ortvalue_from_numpy(v) for v in self._shared.values()]
        if values:
            opts.add_external_initializers(list(self._shared), values)
        self._values = values  # the session reads them: keep them alive
        # ConvBNFusion writes a fused copy of every convolution's weights beside the bundle's
        # (ours, held for the session): more memory and loading time for ~no speed, as the
        # blocked (NCHWc) kernels the layout pass builds carry the speed-up without it
        # (measured: benchmarks/RESULTS.md, "ConvBNFusion").
        self.session = ort.InferenceSession(graph, opts, providers=["CPUExecutionProvider"],
                                            disabled_optimizers=["ConvBNFusion"])
        self.map_names = list(info["outputs"])
        self.name, self.image_size = name, int(image_size)

    def to(self, device: Any) -> OnnxDetector:
        return self  # CPU only

    def run(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """``(prob (B,), {map name: (B, 1, h, w)})`` for ``images (B, 3, S, S)`` in [0, 1]."""
        out = self.session.run(None, {"images": np.ascontiguousarray(images, np.float32)})
        return out[0].astype(np.float32), dict(zip(self.map_names, out[1:], strict=True))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[0]


def graph_info(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's ``onnx`` entry, or None when the bundle has no graph."""
    info = manifest.get("onnx")
    return info if isinstance(info, dict) else None


def read_graph(path: Path, manifest: dict[str, Any], reference: dict[str, Any] | None = None
               ) -> tuple[bytes, dict[str, np.ndarray]]:
    """The graph bytes and the bundle tensors it shares, checked against the manifest (and,
    into ``reference`` when given, the stored reference faces under ``"faces"``)."""
    from safetensors import safe_open

    info = graph_info(manifest)
    if info is None:
        raise GraphError(f"{path} has no ONNX graph (add one with `lorefd export {path} "
                         "--out NEW.lorefd`)")
    if info.get("graph_version") != GRAPH_VERSION:
        raise GraphError(f"the ONNX graph of {path} is of version {info.get('graph_version')} "
                         f"(lorefd {info.get('lorefd_version')}); this lorefd runs version "
                         f"{GRAPH_VERSION}: re-export it")
    try:
        with safe_open(str(path), framework="np") as fh:
            graph = fh.get_tensor(GRAPH_KEY).tobytes()
            shared = {k: fh.get_tensor(k) for k in info["shared"]}
            if reference is not None and REFERENCE_KEY in fh.keys():  # noqa: SIM118
                reference["faces"] = fh.get_tensor(REFERENCE_KEY)
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise GraphError(f"cannot read the ONNX graph of {path}: {exc}") from exc
    if hashlib.sha256(graph).hexdigest() != info.get("sha256"):
        raise GraphError(f"the ONNX graph of {path} fails its checksum; not run")
    return graph, shared


def load_onnx_bundle(path: str | Path, threads: int | None = None) -> Bundle:
    """A bundle whose detector is its ONNX graph (:class:`OnnxDetector`); no torch."""
    path = Path(path)
    manifest = read_bundle_header(path, verify=True)
    check_manifest(manifest, path)  # the same values and ranges as the PyTorch path
    if manifest.get("reference") is None:
        raise GraphError(f"{path} records no reference scores to check its ONNX graph against "
                         f"(exported by an older lorefd; re-export it: lorefd export {path} "
                         "--out NEW.lorefd)")
    stored: dict[str, Any] = {}
    graph, shared = read_graph(path, manifest, stored)
    try:
        det = OnnxDetector(graph, shared, graph_info(manifest), manifest["detector"],
                           manifest["image_size"], threads)
        side = det.session.get_inputs()[0].shape[2:]
    except Exception as exc:  # noqa: BLE001 - onnxruntime's errors have no common base
        raise GraphError(f"the ONNX graph of {path} cannot be run: {type(exc).__name__}: "
                         f"{exc}") from exc
    if list(side) != [det.image_size, det.image_size]:
        raise BundleError(f"invalid bundle {path}: image_size {det.image_size} but its ONNX "
                          f"graph takes {side}")
    # one face through the graph (cheap; docs/contract.md): a graph that does not compute what the weights do
    # (replaced and re-sealed) is refused here, before any file is scored
    check_reference(det.predict_proba, manifest, stored.get("faces"), path, "ONNX Runtime")
    return Bundle(detector=det, manifest=manifest, path=path)  # type: ignore[arg-type]


def pick_runtime(path: Path, runtime: str | None) -> str:
    """``runtime`` as asked, else ``"onnx"`` for a bundle file with a graph, else torch."""
    if runtime is not None:
        if runtime not in RUNTIMES:
            raise OptionError(f"unknown runtime {runtime!r}; choose one of "
                              f"{', '.join(RUNTIMES)}")
        return runtime
    if not path.is_file():
        return "torch"
    try:
        return "onnx" if graph_info(read_bundle_header(path, verify=False)) else "torch"
    except BundleError:
        return "torch"  # load_bundle says what is wrong with it


def load_runtime_model(spec: str | Path | Bundle | None, device: str | None = None,
                       runtime: str | None = None, threads: int | None = None) -> Bundle:
    """What ``--model`` names, run by ``runtime`` (``onnx``, ``torch``; default onnx when the
    bundle has a graph). A graph that is missing, damaged or from another version falls back
    to PyTorch with one warning, or raises :class:`GraphError` when onnx was asked for.
    Without torch (a base install) PyTorch is no fallback: :class:`~lorefd.errors.MissingExtraError`
    says what needed it."""
    if isinstance(spec, Bundle):
        return spec
    path = resolve_model(spec)
    chosen = pick_runtime(path, runtime)
    if chosen == "onnx" and device not in (None, "cpu"):
        if runtime == "onnx":
            raise GraphError(f"--runtime onnx runs on the CPU only, not --device {device}")
        chosen = "torch"
    # a base install (no torch): PyTorch is the fallback of no bundle file, so the bundle's own
    # error (damaged, no graph) is said, then that running it with PyTorch needs the extra
    no_torch = missing_module(("torch", "timm"))
    why = "--runtime torch" if runtime == "torch" else f"--device {device}"
    if no_torch and chosen == "torch" and runtime is None and device in (None, "cpu"):
        if path.is_file():
            chosen = "onnx"
        else:
            why = f"{path} (a checkpoint folder, run with PyTorch)"
    if chosen == "onnx":
        if not path.is_file():
            raise GraphError(f"--runtime onnx needs a .lorefd bundle with a graph; {path} is a "
                             "checkpoint folder (export it with `lorefd export`)")
        try:
            return load_onnx_bundle(path, threads)
        except GraphError as exc:
            if runtime == "onnx":
                raise
            if no_torch:
                raise MissingExtraError(f"{exc}; running it with PyTorch", no_torch) from exc
            log.warning("%s; running it with PyTorch", exc)
    if no_torch:
        raise MissingExtraError(why, no_torch)
    from lorefd.models.bundle import load_bundle
    from lorefd.utils import pick_device

    if threads:
        import torch

        torch.set_num_threads(threads)
    return load_bundle(path, pick_device(device))


__all__ = ["GRAPH_KEY", "GRAPH_VERSION", "N_REFERENCE", "PROB_TOL", "RUNTIMES", "GraphError",
           "OnnxDetector", "add_graph", "export_graph", "graph_info", "load_onnx_bundle",
           "load_runtime_model", "pick_runtime", "read_graph", "reference_crops",
           "reference_faces"]
