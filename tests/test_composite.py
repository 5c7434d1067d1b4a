"""The standard-operator form of the op (ops/composite.py) as ONNX Runtime runs it, over the op test cases."""
import warnings

import pytest
import torch

from involution_mm.ops.composite import involution_composite
from op_cases import SHAPES, make_inputs, pair, unfold_reference

onnxruntime = pytest.importorskip('onnxruntime', reason='the deploy extra (onnxruntime) is not installed')


class Composite(torch.nn.Module):

    def __init__(self, stride, padding, dilation):
        super().__init__()
        self.geometry = pair(stride), pair(padding), pair(dilation)

    def forward(self, x, weight):
        return involution_composite(x, weight, *self.geometry)


@pytest.mark.parametrize('shape', SHAPES)
def test_exported_graph_matches_unfold_with_a_dynamic_batch(tmp_path, shape):
    """Exported at opset 11 (the lowest we write) with the batch symbolic, run on another batch size."""
    *sizes, stride, padding, dilation = shape
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32)
    path = str(tmp_path / 'composite.onnx')
    with warnings.catch_warnings():  # the tracer's warnings about shapes read as Python numbers
        warnings.simplefilter('ignore')
        torch.onnx.export(Composite(stride, padding, dilation), (x, weight), path, opset_version=11, dynamo=False,
                          input_names=['x', 'weight'], dynamic_axes={'x': {0: 'batch'}, 'weight': {0: 'batch'}})
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    sizes[0] += 1
    x, weight = make_inputs(*sizes, stride, padding, dilation, dtype=torch.float32, seed=1)
    got = torch.from_numpy(session.run(None, {'x': x.numpy(), 'weight': weight.numpy()})[0])
    torch.testing.assert_close(got, unfold_reference(x, weight, pair(stride), pair(padding), pair(dilation)),
                               rtol=1e-5, atol=1e-5)
