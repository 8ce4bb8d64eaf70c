"""int8 ONNX Runtime quantisation of a bundle's graph, measured against the float graph.

    python benchmarks/bench_int8.py --model BUNDLE --calib TRAIN_MANIFEST \
        --eval NAME=MANIFEST [NAME=MANIFEST ...] [--out RESULT.json]

Both quantisations of ONNX Runtime are tried: dynamic (weights int8, activations quantised
at run time) and static QDQ (activations calibrated on ``--calib-n`` crops, evenly spread, of
``--calib``: the validation set, never an evaluated one). For every evaluated manifest: the AUC of each graph
(frame level; video level by the median where the manifest has videos), the largest
probability difference to the float graph, and the throughput at batch 32 on one thread.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def _crops(manifest: str, size: int, limit: int | None = None):
    from lorefd.data.images import load_rgb, resize_square, to_chw
    from lorefd.data.manifest import load_samples

    samples = load_samples(manifest)
    if limit and len(samples) > limit:  # evenly spread: reals and fakes alike
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, limit).astype(int)]
    x = np.stack([to_chw(resize_square(load_rgb(s.path), size)) for s in samples])
    return samples, x


def _self_contained(bundle: Path):
    """The bundle's graph with its shared tensors as initialisers (float32): one model file."""
    import onnx
    from onnx import numpy_helper

    from lorefd.models.bundle import read_bundle_header
    from lorefd.models.graph import PREFIX, graph_info, read_graph

    manifest = read_bundle_header(bundle)
    graph, shared = read_graph(bundle, manifest)
    model = onnx.load_from_string(graph)
    prefix = graph_info(manifest).get("prefix", PREFIX)
    values = {prefix + k: v.astype(np.float32) for k, v in shared.items()}
    # the graph names the shared tensors as external data; put their values in instead
    kept = [i for i in model.graph.initializer if i.name not in values]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept + [numpy_helper.from_array(v, k) for k, v in values.items()])
    return model, manifest


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _edge_layers(model) -> list[str]:  # noqa: ANN001
    """Compute layers (Conv, Gemm, MatMul) with no compute layer before them (they read the
    image) or after them (they write an output): the usual ones to keep in float."""
    ops = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
    nodes = {n.name or n.output[0]: n for n in model.graph.node}
    producer = {o: k for k, n in nodes.items() for o in n.output}
    parents = {k: {producer[i] for i in n.input if i in producer} for k, n in nodes.items()}
    children: dict[str, set[str]] = {k: set() for k in nodes}
    for k, ps in parents.items():
        for q in ps:
            children[q].add(k)
    compute = {k for k, n in nodes.items() if n.op_type in ops}

    def reaches(start: str, edges: dict[str, set[str]]) -> bool:
        todo, seen = list(edges[start]), set()
        while todo:
            n = todo.pop()
            if n in compute:
                return True
            if n not in seen:
                seen.add(n)
                todo += edges[n]
        return False

    return sorted(k for k in compute if not reaches(k, parents) or not reaches(k, children))


def _probs(sess, x: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([sess.run(None, {"images": x[i:i + batch]})[0]
                           for i in range(0, len(x), batch)]).astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--calib", required=True)
    ap.add_argument("--calib-n", type=int, default=256)
    ap.add_argument("--eval", nargs="+", required=True, metavar="NAME=MANIFEST")
    ap.add_argument("--activations", choices=("int8", "uint8"), default="int8",
                    help="static QDQ activation type (uint8: ONNX Runtime's U8S8 kernels)")
    ap.add_argument("--skip-dynamic", action="store_true", help="static QDQ only")
    ap.add_argument("--float-edges", action="store_true",
                    help="static QDQ keeps the first and last compute layers in float")
    ap.add_argument("--work", default="int8_work")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from lorefd.metrics import roc_auc, video_level

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model, manifest = _self_contained(Path(args.model))
    size = int(manifest["image_size"])
    fp32, pre = work / "fp32.onnx", work / "fp32_pre.onnx"
    onnx.save(model, str(fp32))
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    dyn, sta = work / "int8_dynamic.onnx", work / "int8_static.onnx"
    if not args.skip_dynamic:
        quantize_dynamic(str(pre), str(dyn), weight_type=QuantType.QInt8)
    _, calib = _crops(args.calib, size, args.calib_n or None)  # --calib-n 0: all

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):  # noqa: ANN201
            return next(self.batches, None)

    quantize_static(str(pre), str(sta), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8 if args.activations == "uint8"
                    else QuantType.QInt8, weight_type=QuantType.QInt8,
                    per_channel=True,
                    nodes_to_exclude=_edge_layers(onnx.load(str(pre))) if args.float_edges
                    else [])
    graphs = {"float32": fp32, "int8 dynamic": dyn, "int8 static (QDQ)": sta}
    if args.skip_dynamic:
        del graphs["int8 dynamic"]
    sessions = {k: _session(v) for k, v in graphs.items()}
    result: dict = {"model": args.model, "calibration": f"{len(calib)} crops of {args.calib}",
                    "activations": args.activations, "float_edges": args.float_edges,
                    "bytes": {k: v.stat().st_size for k, v in graphs.items()}, "sets": {}}
    for spec in args.eval:
        name, path = spec.split("=", 1)
        samples, x = _crops(path, size)
        y = np.array([s.label for s in samples])
        groups = [s.group for s in samples]
        row: dict = {}
        ref = None
        for k, sess in sessions.items():
            t0 = time.perf_counter()
            p = _probs(sess, x)
            dt = time.perf_counter() - t0
            ref = p if ref is None else ref
            vy, vp, _ = video_level(y, p, groups)
            row[k] = {"frame_auc": roc_auc(y, p),
                      "video_auc": roc_auc(vy, vp) if len(vy) < len(y) else None,
                      "max_abs_diff": float(np.max(np.abs(p - ref))),
                      "img_per_s_1thread": len(x) / dt}
        result["sets"][name] = row
        print(name, json.dumps(row, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
