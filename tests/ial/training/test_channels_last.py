"""``ial.training.engines.to_channels_last``: NHWC weights with the same maths, and no crash on a
narrow model (PyTorch 2.13's CPU 1×1 stride-2 conv backward corrupts the heap below 16 input
channels on a channels-last path)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# Run in a child: a heap corruption aborts the process, which must fail this test, not pytest.
CHECK = """
import copy, torch
from ial.models import ModelConfig, build_model
from ial.training.engines import to_channels_last

torch.manual_seed(0)
cfg = ModelConfig(name="ial_cms", audio_channels=[4, 8, 16, 32], embed_dim=8, common_hidden=8,
                  visual_channels=16)
nchw = build_model(cfg)
nhwc = to_channels_last(copy.deepcopy(nchw))
narrow = [m for m in nhwc.modules() if isinstance(m, torch.nn.Conv2d)
          and m.kernel_size == (1, 1) and m._forward_pre_hooks]
assert len(narrow) == 3, narrow  # the shortcuts with 4, 4, 8 input channels (not 16)
mag = torch.rand(2, 256, 64)
visual = torch.randn(2, 2, 1, 16, 7, 7)
grads = []
for model in (nchw, nhwc):
    for _ in range(2):  # the crash came in the first or second backward
        model.zero_grad()
        out = model(mag, visual)
        out.mask.square().mean().backward()
    grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
assert set(grads[0]) == set(grads[1])
# only the order of floating-point sums differs: the whole gradient agrees to 1e-3 of its norm
flat = [torch.cat([g[n].flatten() for n in sorted(g)]) for g in grads]
error = float((flat[1] - flat[0]).norm() / flat[0].norm())
assert error < 1e-3, error
print("same gradients", len(grads[0]), error)
"""


def test_a_narrow_model_trains_channels_last_with_the_same_gradients():
    run = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         cwd=REPO, timeout=300)
    assert run.returncode == 0, f"rc={run.returncode}\n{run.stdout[-2000:]}{run.stderr[-3000:]}"
    assert "same gradients" in run.stdout
