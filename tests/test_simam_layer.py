"""The SimAM layer against the paper's formula, its edge cases, low precision, and the mmcv plugin route."""
import pytest
import torch
import torch.nn as nn

import involution_mm  # noqa: F401  (registers SimAM)
from involution_mm.layers import SimAM


def simam_reference(x: torch.Tensor, e_lambda: float) -> torch.Tensor:
    """The paper's formula, term by term, in float64: y = x * sigmoid(d / (4 * (sum(d) / n + lambda)) + 0.5)."""
    x = x.double()
    n = x.shape[2] * x.shape[3] - 1
    d = (x - x.mean(dim=(2, 3), keepdim=True)) ** 2
    energy_inverse = d / (4 * (d.sum(dim=(2, 3), keepdim=True) / n + e_lambda)) + 0.5
    return x * torch.sigmoid(energy_inverse)


class ReferenceSimAM(nn.Module):
    """The formula as a module, for the reference networks of the other tests."""

    def __init__(self, e_lambda: float) -> None:
        super().__init__()
        self.e_lambda = e_lambda

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return simam_reference(x, self.e_lambda).to(x.dtype)


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (1, 8, 16, 16), (3, 1, 2, 1)])
@pytest.mark.parametrize('e_lambda', [1e-4, 0.1])
def test_matches_the_formula(shape, e_lambda):
    x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
    torch.testing.assert_close(SimAM(e_lambda=e_lambda)(x), simam_reference(x, e_lambda))


def test_attention_is_per_position_and_per_channel():
    x = torch.randn(2, 4, 6, 6)
    weights = SimAM(e_lambda=0.1)(x) / x
    assert weights.min() > torch.sigmoid(torch.tensor(0.5)) - 1e-6  # d >= 0, so the weight is >= sigmoid(0.5)
    assert weights.max() < 1
    assert weights[0, 0].std() > 0 and weights[:, :, 0, 0].std() > 0  # varies over space and over channels


def test_defaults_and_plugin_name():
    assert SimAM().e_lambda == 1e-4  # the paper's module
    assert SimAM._abbr_ == 'simam'
    assert 'e_lambda=0.1' in repr(SimAM(in_channels=8, e_lambda=0.1))
    assert list(SimAM().parameters()) == [] and SimAM().state_dict() == {}


@pytest.mark.parametrize('e_lambda', [0, -1.0])
def test_rejects_a_lambda_that_is_not_positive(e_lambda):
    with pytest.raises(ValueError, match='e_lambda > 0'):
        SimAM(e_lambda=e_lambda)


def test_rejects_inputs_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r'\(B, 8, H, W\)'):
        SimAM(in_channels=8)(torch.rand(1, 4, 3, 3))
    with pytest.raises(ValueError, match='expects input'):
        SimAM()(torch.rand(4, 3, 3))


@pytest.mark.parametrize('e_lambda', [1e-4, 0.1])
def test_constant_maps_and_1x1_maps_are_finite(e_lambda):
    sigmoid_half = torch.sigmoid(torch.tensor(0.5))
    constant = torch.full((2, 3, 7, 7), 2.5)
    torch.testing.assert_close(SimAM(e_lambda=e_lambda)(constant), constant * sigmoid_half)
    single = torch.randn(2, 3, 1, 1)  # n = H * W - 1 = 0: the reference formula divides 0 by 0 here
    assert torch.isnan(simam_reference(single, e_lambda)).all()
    torch.testing.assert_close(SimAM(e_lambda=e_lambda)(single), single * sigmoid_half)


def test_gradients_are_finite_on_degenerate_maps():
    for shape in [(1, 2, 1, 1), (1, 2, 4, 4)]:
        x = torch.ones(shape, requires_grad=True)
        SimAM()(x).sum().backward()
        assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_half_precision_inputs(dtype):
    x = torch.randn(2, 4, 9, 9) * 50  # squared deviations beyond float16's range if computed in it
    y = SimAM(e_lambda=0.1)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), simam_reference(x.to(dtype), 0.1), rtol=1e-2, atol=1e-2)


def test_under_autocast():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        features = conv(x)
        y = SimAM(e_lambda=0.1)(features)
    assert features.dtype == torch.bfloat16 and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.double(), simam_reference(features, 0.1), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_upstream_resnet_takes_simam_as_a_plugin(scope):
    from mmengine.registry import init_default_scope
    init_default_scope(scope)
    registry = __import__(f'{scope}.registry', fromlist=['MODELS']).MODELS
    plugins = [dict(cfg=dict(type='SimAM', e_lambda=0.1), stages=(True, True, True, True),
                    position='after_conv2')]
    backbone = registry.build(dict(type='ResNet', depth=50, plugins=plugins))
    plain = registry.build(dict(type='ResNet', depth=50))
    backbone.eval()  # upstream ResNet.train() returns None, so no chaining
    plain.eval()
    blocks = [block for name in backbone.res_layers for block in getattr(backbone, name)]
    assert len(blocks) == 16
    assert all(block.after_conv2_plugin_names == ['simam'] and isinstance(block.simam, SimAM) for block in blocks)
    assert blocks[0].simam.in_channels == 64 and blocks[-1].simam.in_channels == 512  # the conv2 width
    assert backbone.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(backbone.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outputs, plain_outputs = backbone(x), plain(x)
    assert [o.shape[1] for o in outputs] == [256, 512, 1024, 2048]
    assert not torch.allclose(outputs[-1], plain_outputs[-1])  # SimAM ran
