"""face.evoLVe's IR-50 network (``Backbone(input_size, 50, 'ir')``) with its module names, so its
checkpoints load by key. Imported lazily (it imports torch) by :mod:`.face_models`."""
from __future__ import annotations

from torch import Tensor, nn


class BottleneckIR(nn.Module):
    """BN → conv3x3 → PReLU → conv3x3 (stride) → BN, plus a (projected) shortcut."""

    def __init__(self, cin: int, depth: int, stride: int) -> None:
        super().__init__()
        self.shortcut_layer: nn.Module = (
            nn.MaxPool2d(1, stride) if cin == depth else
            nn.Sequential(nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin), nn.Conv2d(cin, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth))

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IR50(nn.Module):
    """Stages of 3, 4, 14, 3 units (64…512 channels, each first unit stride 2); the output layer
    BN → Dropout → Flatten → Linear(512·side², 512) → BN1d fixes the input side (16·side)."""

    def __init__(self, side: int = 7) -> None:
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units: list[nn.Module] = []
        cin = 64
        for depth, n in ((64, 3), (128, 4), (256, 14), (512, 3)):
            for i in range(n):
                units.append(BottleneckIR(cin, depth, 2 if i == 0 else 1))
                cin = depth
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(nn.BatchNorm2d(512), nn.Dropout(0.4), nn.Flatten(),
                                          nn.Linear(512 * side * side, 512), nn.BatchNorm1d(512))

    def forward(self, x: Tensor) -> Tensor:
        return self.output_layer(self.body(self.input_layer(x)))
