"""The served user tower run by ONNX Runtime: an export of the very module, made at load.

Why: a feed cache miss encodes one to eight histories, and in torch (eager or a TorchScript trace)
that call is almost all per-op dispatch (~110 traced ops for the 3-member TikTok ensemble).
ONNX Runtime runs the same graph with a fraction of the per-op cost. Nothing is written by hand:
`OnnxTower` exports the loaded module (`ServedUserTower`, `MemberConcat`) in memory with the
TorchScript-based exporter, so the graph is the trained module's own `forward`, and the caller
checks it against that module before serving with it (`recsys.models.user_encoder`).

The export has dynamic users and entries, so one session serves every request-sized batch with
no padding, empty histories included; `UserHistories.n_users` is the size of `lengths` (not an
int of it) and segment sums export as `scatter_add` (`recsys.models.user_tower.segment_sum`) for that reason.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn

INPUTS = ("items", "lengths", "segment", "age")
OPSET = 18


def export_onnx(module: nn.Module, example: tuple[torch.Tensor, ...]) -> bytes:
    """The ONNX model of `module(items, lengths, segment, age)`, users and entries dynamic."""
    entries = {0: "entries"}
    axes = {"items": entries, "lengths": {0: "users"}, "segment": entries, "age": entries, "users": {0: "users"}}
    buffer = io.BytesIO()
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python-level branches (config constants)
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=OPSET, input_names=list(INPUTS),
                          output_names=["users"], dynamic_axes=axes, do_constant_folding=True)
    return buffer.getvalue()


class OnnxTower:
    """`tower(items, lengths, segment, age)` -> (n_users, dim) numpy vectors, by one ONNX Runtime session.

    One thread, sequential execution: the server runs one tower call at a time on its event loop
    (`serving.batching`), and a pool of threads would only contend with the loop for the core.

    Args:
        module: the served tower module; example: history tensors to trace it with.
    Raises:
        ImportError without onnxruntime; any exporter or session error as raised.
    Example::
        tower = OnnxTower(served, history_tensors([[3, 7]])); users = tower(*history_tensors([[1, 2], [5]]))
    """

    def __init__(self, module: nn.Module, example: tuple[torch.Tensor, ...]):
        import onnxruntime as ort  # noqa: PLC0415 - optional at import time: the caller falls back without it

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 4  # fatal only: a failure is raised, and the caller logs it
        self.session = ort.InferenceSession(export_onnx(module, example), options, providers=["CPUExecutionProvider"])
        # the exporter drops inputs a module never reads (the closed-form member ignores `age`)
        self.inputs = [i for i, name in enumerate(INPUTS) if name in {x.name for x in self.session.get_inputs()}]

    def __call__(self, items: torch.Tensor, lengths: torch.Tensor, segment: torch.Tensor,
                 age: torch.Tensor) -> np.ndarray:
        tensors = (items, lengths, segment, age)
        feeds = {INPUTS[i]: tensors[i].numpy() for i in self.inputs}
        return self.session.run(None, feeds)[0]
