"""`detector.drop_rate` acts: dropout before the classifier in training mode only."""

from __future__ import annotations

import pytest
import torch

from lorefd.models.xception import XceptionNet


def _discarding_head(body):  # noqa: ANN001, ANN202
    """timm's legacy_xception head as some timm versions have it: the dropout is lost."""
    def forward_head(x, pre_logits=False):  # noqa: ANN001, ANN202
        x = body.global_pool(x)
        torch.nn.functional.dropout(x, body.drop_rate, training=body.training)
        return x if pre_logits else body.fc(x)
    return forward_head


@pytest.mark.parametrize("timm_head", ["as installed", "discarding dropout"])
def test_training_mode_head_applies_dropout(timm_head: str) -> None:
    torch.manual_seed(0)
    net = XceptionNet(num_classes=1, drop_rate=0.5)
    if timm_head != "as installed":
        net.body.forward_head = _discarding_head(net.body)
    feats = torch.rand(4, 2048, 3, 3)
    net.eval()
    ref = net.forward_head(feats)
    assert torch.equal(ref, net.forward_head(feats))  # eval: deterministic
    net.train()
    a, b = net.forward_head(feats), net.forward_head(feats)
    assert not torch.allclose(a, ref) and not torch.allclose(a, b)


def test_zero_drop_rate_changes_nothing() -> None:
    torch.manual_seed(0)
    net = XceptionNet(num_classes=1, drop_rate=0.0)
    feats = torch.rand(4, 2048, 3, 3)
    net.eval()
    ref = net.forward_head(feats)
    net.train()
    assert torch.allclose(net.forward_head(feats), ref)
