"""ONNX export through tools/deployment/export_onnx.py as a user runs it: standard operators only, a dynamic batch, and
outputs equal to PyTorch's on ONNX Runtime; clear one-line errors for bad output paths."""
import os.path as osp

import numpy as np
import pytest
import torch

from conftest import REPO, randomise_norms, run_command

onnx = pytest.importorskip('onnx', reason='the deploy extra (onnx, onnxscript, onnxruntime) is not installed')
onnxruntime = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

REDNET26 = osp.join('configs', 'rednet', 'rednet26_64xb32-warmup-coslr-130e_in1k.py')
DETECTOR = osp.join('configs', 'involution_det', 'mask-rcnn_rednet50-involution-fpn-head_1x_coco.py')


def graph_facts(path):
    """(operator domains, operator types, batch dimension of the first input) of an ONNX file."""
    model = onnx.load(path)
    onnx.checker.check_model(model)
    batch = model.graph.input[0].type.tensor_type.shape.dim[0]
    return ({node.domain for node in model.graph.node}, {node.op_type for node in model.graph.node},
            batch.dim_param or batch.dim_value)


def test_rednet26_classifier_exports_with_a_dynamic_batch(tmp_path):
    """The whole classifier, a checkpoint loaded, the default (dynamo) exporter; ONNX Runtime gives PyTorch's
    scores for batches other than the exported one."""
    from involution_mm.upstream import build_model_from_config
    model = randomise_norms(build_model_from_config(osp.join(REPO, REDNET26))[0])
    checkpoint, out = tmp_path / 'rednet26.pth', tmp_path / 'rednet26.onnx'
    torch.save({'state_dict': model.state_dict()}, checkpoint)
    log = run_command(['python', 'tools/deployment/export_onnx.py', REDNET26, str(checkpoint), str(out), '--shape', '64'])
    assert 'ONNX Runtime matches PyTorch on a batch of 3' in log
    domains, op_types, batch = graph_facts(str(out))
    assert domains <= {'', 'ai.onnx'} and isinstance(batch, str)  # standard operators; symbolic batch
    assert {'Slice', 'Mul', 'Add', 'Conv'} <= op_types
    session = onnxruntime.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    for size in (1, 5):
        images = torch.rand(size, 3, 64, 64)
        with torch.no_grad():
            want = model(images, mode='tensor').numpy()
        got = session.run(None, {'inputs': images.numpy()})[0]
        assert got.shape == want.shape
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, np.abs(want).max())
    assert sorted(p.name for p in tmp_path.iterdir()) == ['rednet26.onnx', 'rednet26.pth']  # no leftovers


def test_detector_involution_neck_and_head_export(tmp_path):
    """Backbone, involution FPN and involution RPN head of a detector (a RedNet-26 backbone to keep the test
    short), with the TorchScript exporter; the tool checks ONNX Runtime against PyTorch itself."""
    out = tmp_path / 'detector.onnx'
    log = run_command(['python', 'tools/deployment/export_onnx.py', DETECTOR, str(out), '--shape', '64', '--exporter',
                       'torchscript', '--cfg-options', 'model.backbone.depth=26'])
    assert 'outputs feat0, feat1, feat2, feat3, feat4, cls0, cls1, cls2, cls3, cls4, reg0' in log
    assert 'ONNX Runtime matches PyTorch on a batch of 3' in log
    domains, _, batch = graph_facts(str(out))
    assert domains <= {'', 'ai.onnx'} and batch == 'batch'


@pytest.mark.parametrize('exporter', ['dynamo', 'torchscript'])
def test_involution_layers_in_onnx_runtime(tmp_path, exporter):
    """Involution layers alone (stride 1 and 2, K 7 and 3, odd sizes), whose outputs depend strongly on the
    input, so the comparison checks the exported aggregation itself; a dynamic batch (and, with the
    TorchScript exporter, dynamic height and width: the dynamo exporter takes them too, but its symbolic
    shape reasoning over every tap's slice costs about a minute here)."""
    from involution_mm.layers import Involution
    torch.manual_seed(0)
    layers = randomise_norms(torch.nn.Sequential(Involution(32, 7, 1), torch.nn.ReLU(), Involution(32, 3, 2)))
    example = torch.randn(2, 32, 13, 11)
    path = str(tmp_path / 'layers.onnx')
    if exporter == 'dynamo':
        torch.onnx.export(layers, (example, ), path, input_names=['x'], dynamo=True,
                          dynamic_shapes=({0: torch.export.Dim('batch')}, ))
    else:
        torch.onnx.export(layers, (example, ), path, input_names=['x'], dynamo=False,
                          dynamic_axes={'x': {0: 'batch', 2: 'height', 3: 'width'}})
    session = onnxruntime.InferenceSession(path, providers=['CPUExecutionProvider'])
    for shape in ((1, 32, 13, 11), (3, 32, 13, 11) if exporter == 'dynamo' else (3, 32, 9, 16)):
        x = torch.randn(shape)
        with torch.no_grad():
            want = layers(x).numpy()
        got = session.run(None, {'x': x.numpy()})[0]
        assert got.shape == want.shape and want.std() > 0.1
        assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


@pytest.mark.parametrize('make_out, message', [
    (lambda tmp: tmp, 'is a folder; give the path of a file'),
    (lambda tmp: tmp / 'missing' / 'model.onnx', 'does not exist; create it first'),
    (lambda tmp: (tmp / 'file').write_text('x') and tmp / 'file' / 'model.onnx', 'is a file, not a folder'),
    (lambda tmp: (tmp / 'old.onnx').write_text('x') and tmp / 'old.onnx', 'exists; pass --force to overwrite'),
])
def test_output_path_problems_are_one_line(tmp_path, make_out, message):
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, 'tools/deployment/export_onnx.py', REDNET26, str(make_out(tmp_path))], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
    assert len(errors) == 1 and message in errors[0] and 'Traceback' not in proc.stderr
