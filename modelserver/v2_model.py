"""The ranker behind the Open Inference Protocol: its typed signature, and one infer request checked against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from modelserver.asgi import V2Error
from modelserver.ranker import Ranker
from modelserver.tensors import InferRequest, InputTensor, OutputTensor, decode_tensor

MODEL_VERSION = "1"
PLATFORM = "frontdoor-numpy"
MAX_BATCH = 65_536  # rows per request: bounds the work (and the response) one request can ask for


@dataclass(frozen=True)
class TensorSpec:
    """A tensor of the signature; -1 in ``shape`` is the batch dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


USER_ID = TensorSpec("user_id", "INT64", (-1,))
ITEM_ID = TensorSpec("item_id", "INT64", (-1,))
SCORE = TensorSpec("score", "FP32", (-1,))
INPUTS = (USER_ID, ITEM_ID)
OUTPUTS = (SCORE,)


def _bad(message: str) -> V2Error:
    return V2Error(400, message)


def _batch_size(spec: TensorSpec, tensor: InputTensor) -> int:
    """Rows of a [-1] input, sent as [n] or as a column [n, 1]."""
    if tensor.datatype != spec.datatype:
        raise _bad(f"input '{spec.name}' must be {spec.datatype}, not {tensor.datatype}.")
    shape = tensor.shape
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1):
        raise _bad(f"input '{spec.name}' must have shape [-1] or [-1, 1], not {list(shape)}.")
    if shape[0] > MAX_BATCH:
        raise _bad(f"input '{spec.name}' has {shape[0]} rows; at most {MAX_BATCH} are served per request.")
    return shape[0]


def _ids(spec: TensorSpec, tensor: InputTensor, limit: int) -> npt.NDArray[np.int64]:
    ids = decode_tensor(tensor).reshape(-1).astype(np.int64, copy=False)
    outside = np.flatnonzero((ids < 0) | (ids >= limit))
    if outside.size:
        first = int(outside[0])
        raise _bad(f"input '{spec.name}'[{first}] is {int(ids[first])}; ids run from 0 to {limit - 1}.")
    return ids


@dataclass(frozen=True)
class ScoringBatch:
    """Checked ids, one pair per row."""

    user_ids: npt.NDArray[np.int64]
    item_ids: npt.NDArray[np.int64]


class RankerModel:
    """The one model a v2 server serves: ``score`` for each (``user_id``, ``item_id``) pair."""

    def __init__(self, name: str, ranker: Ranker) -> None:
        self.name = name
        self.ranker = ranker

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": [MODEL_VERSION],
            "platform": PLATFORM,
            "inputs": [spec.metadata() for spec in INPUTS],
            "outputs": [spec.metadata() for spec in OUTPUTS],
        }

    def prepare(self, request: InferRequest) -> ScoringBatch:
        """The request's ids, checked against the signature; every refusal is a 400 naming the input at fault."""
        given = {tensor.name: tensor for tensor in request.inputs}
        unknown = sorted(set(given) - {spec.name for spec in INPUTS})
        if unknown:
            raise _bad(f"unexpected input '{unknown[0][:64]}'; the model takes {', '.join(s.name for s in INPUTS)}.")
        missing = [spec.name for spec in INPUTS if spec.name not in given]
        if missing:
            raise _bad(f"missing input '{missing[0]}'.")
        for output in request.outputs or ():
            if output.name != SCORE.name:
                raise _bad(f"unknown output '{output.name[:64]}'; the model returns '{SCORE.name}'.")
        users, items = given[USER_ID.name], given[ITEM_ID.name]
        rows = _batch_size(USER_ID, users)
        if _batch_size(ITEM_ID, items) != rows:
            raise _bad(f"inputs 'user_id' and 'item_id' must have the same batch size ({rows} and {items.shape[0]}).")
        return ScoringBatch(_ids(USER_ID, users, self.ranker.users), _ids(ITEM_ID, items, self.ranker.items))

    def run(self, batch: ScoringBatch) -> list[OutputTensor]:
        return [OutputTensor(SCORE.name, SCORE.datatype, self.ranker.score(batch.user_ids, batch.item_ids))]
