"""RedNet and the Involution layer: official key layouts, parameter counts, options."""
import pytest
import torch

from involution_mm.backbones import RedNet
from involution_mm.layers import Involution
from conftest import state_dict_layout

PUBLISHED_PARAMS_M = {26: 9.23, 38: 12.39, 50: 15.54, 101: 25.65, 152: 33.99}  # with the 1000-way fc
FC_PARAMS = 2048 * 1000 + 1000


@pytest.mark.parametrize('depth', sorted(PUBLISHED_PARAMS_M))
def test_classifier_backbone_layout_and_params(depth, official_layouts):
    model = RedNet(depth)
    official = official_layouts[f'rednet{depth}_in1k_classifier']
    backbone = {k: v for k, v in official.items() if k.startswith('backbone.')}
    assert state_dict_layout(model, 'backbone.') == backbone
    assert official['head.fc.weight'] == [1000, model.feat_dim]
    params = sum(p.numel() for p in model.parameters()) + FC_PARAMS
    # 33.98M for RedNet-152: the official layout itself counts 33,984,582 (published rounded to 33.99)
    assert abs(params / 1e6 - PUBLISHED_PARAMS_M[depth]) < 0.01


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_dense_prediction_backbone_layout(task, official_layouts):
    model = RedNet(50, stem_involution_kernel=7, out_indices=(0, 1, 2, 3))
    assert state_dict_layout(model, 'backbone.') == official_layouts[f'rednet50_{task}_backbone']


def test_output_shapes_follow_out_indices():
    x = torch.rand(2, 3, 64, 96)
    expected = [(2, 256, 16, 24), (2, 512, 8, 12), (2, 1024, 4, 6), (2, 2048, 2, 3)]
    model = RedNet(26, out_indices=(0, 1, 2, 3)).eval()
    assert [tuple(o.shape) for o in model(x)] == expected
    model = RedNet(26, out_indices=(1, 3)).eval()
    assert [tuple(o.shape) for o in model(x)] == [expected[1], expected[3]]


def test_odd_input_sizes_work_with_strided_involutions():
    outs = RedNet(26, out_indices=(0, 1, 2, 3)).eval()(torch.rand(1, 3, 75, 53))
    assert [tuple(o.shape[2:]) for o in outs] == [(19, 14), (10, 7), (5, 4), (3, 2)]


def test_frozen_stages_and_norm_eval():
    model = RedNet(26, frozen_stages=2, norm_eval=True)
    model.train()
    for name in ('stem', 'layer1', 'layer2'):
        module = getattr(model, name)
        assert not any(p.requires_grad for p in module.parameters()), name
        assert not any(m.training for m in module.modules()), name
    assert all(p.requires_grad for p in model.layer3.parameters())
    bns = [m for m in model.layer3.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)  # norm_eval keeps every BN in eval mode
    assert model.layer3.training  # but the rest of the unfrozen stages trains
    stats = model.layer3[0].bn1.running_mean.clone()
    model(torch.rand(2, 3, 64, 64))
    assert torch.equal(stats, model.layer3[0].bn1.running_mean)


def test_with_cp_gives_the_same_result_and_gradients():
    torch.manual_seed(0)
    plain = RedNet(26, out_indices=(2, 3)).eval()  # eval: both runs normalise with the same statistics
    checkpointed = RedNet(26, out_indices=(2, 3), with_cp=True).eval()
    checkpointed.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)

    def run(model):
        outs = model(x)
        sum(o.sum() for o in outs).backward()
        return [o.detach() for o in outs], [p.grad for p in model.parameters()]

    torch.testing.assert_close(run(plain), run(checkpointed))


def test_zero_init_residual():
    model = RedNet(26)
    model.init_weights()
    assert not any(block.norm3.weight.any() for layer in (model.layer1, model.layer4) for block in layer)
    model = RedNet(26, zero_init_residual=False)
    model.init_weights()
    assert model.layer1[0].norm3.weight.all()


@pytest.mark.parametrize('kwargs,message', [
    (dict(depth=34), 'invalid depth 34 for RedNet'),
    (dict(depth=50, out_indices=(4, )), r'out_indices \(4,\) must name stages'),
    (dict(depth=50, num_stages=3), 'RedNet needs 1 to 4 stages'),
])
def test_rednet_rejects_bad_arguments(kwargs, message):
    with pytest.raises((KeyError, ValueError), match=message):
        RedNet(**kwargs)


def test_involution_layer_shapes_and_errors():
    layer = Involution(32, 7, stride=2)
    assert tuple(layer(torch.rand(2, 32, 15, 16)).shape) == (2, 32, 8, 8)
    with pytest.raises(ValueError, match=r'Involution\(32\) expects input \(B, 32, H, W\), got \(2, 16, 8, 8\)'):
        layer(torch.rand(2, 16, 8, 8))
    with pytest.raises(ValueError, match='divisible by group_channels, got channels=40'):
        Involution(40)
    with pytest.raises(ValueError, match='odd kernel_size, got 4'):
        Involution(32, 4)


def test_involution_layer_matches_its_definition():
    """Kernel generation (conv1 -> BN -> ReLU -> conv2 on the pooled input), then the op's formula."""
    torch.manual_seed(0)
    layer = Involution(32, 3, stride=2).eval()
    x = torch.rand(1, 32, 8, 8)
    pooled = torch.nn.functional.avg_pool2d(x, 2)
    kernels = layer.conv2.conv(torch.relu(layer.conv1.bn(layer.conv1.conv(pooled)))).view(1, 2, 3, 3, 4, 4)
    cols = torch.nn.functional.unfold(x, 3, padding=1, stride=2).view(1, 2, 16, 3, 3, 4, 4)
    expected = (cols * kernels.unsqueeze(2)).sum((3, 4)).view(1, 32, 4, 4)
    torch.testing.assert_close(layer(x), expected)
