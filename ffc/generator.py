"""The LaMa FFC ResNet generator (official ``FFCResNetGenerator``) with a front/rear split.

Module indices, and hence state-dict keys, follow ``docs/lama-reference.md`` §1.2/§1.3:

    0 pad · 1 init conv · 2..1+D downsampling · blocks · concat · D x (convT, BN, ReLU) · pad · conv · sigmoid

The configuration is read from tensor shapes (:func:`config_from_state_dict`), never from file
names, so Big-LaMa, LaMa-Fourier, the CelebA models, LaMa-MPE and the tiny test generator all load
strictly. LaMa-MPE adds the masking positional encoding (:mod:`ffc.mpe`, keys ``mpe.*``) to the
input convolution's output; it is computed from the input's mask channel, so every caller keeps
passing ``cat(image * (1 - hole), hole)``. Which released model a configuration is, is decided in
:mod:`ffc.variants`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from torch import Tensor, nn

from .layers import FFCBnAct, FFCResBlock, ConcatTuple, FeatureTuple
from .mpe import MaskPositionalEncoding

__all__ = ["LamaConfig", "LamaGenerator", "config_from_state_dict", "run_front", "BIG_LAMA", "LAMA_FOURIER"]


@dataclass(frozen=True)
class LamaConfig:
    """Hyper-parameters of an FFC ResNet generator (all LaMa releases use 3 downsamplings)."""

    ngf: int = 64
    n_downsampling: int = 3
    n_blocks: int = 18
    in_channels: int = 4
    out_channels: int = 3
    max_features: int = 1024
    global_ratio: float = 0.75
    # Rows of the masking positional encoding's position table (LaMa-MPE: 128); 0 = no MPE.
    mpe_positions: int = 0

    def features(self, level: int) -> int:
        """Channels after ``level`` downsamplings."""
        return min(self.max_features, self.ngf * 2**level)

    @property
    def bottleneck_channels(self) -> int:
        return self.features(self.n_downsampling)

    @property
    def bottleneck_global(self) -> int:
        # The official code uses int(channels * ratio); keep that rounding.
        return int(self.bottleneck_channels * self.global_ratio)

    @property
    def first_block_index(self) -> int:
        return 2 + self.n_downsampling

    @property
    def multiple(self) -> int:
        """Input height and width must be multiples of this."""
        return 2**self.n_downsampling

    @property
    def has_mpe(self) -> bool:
        return self.mpe_positions > 0


BIG_LAMA = LamaConfig()
LAMA_FOURIER = LamaConfig(n_blocks=9)


class LamaGenerator(nn.Module):
    """FFC ResNet generator: (B, in_channels, H, W) -> (B, out_channels, H, W) in (0, 1).

    H and W must be multiples of ``config.multiple`` (8); :mod:`ffc.inference` pads for you.
    ``front`` and ``rear`` split the network before the first residual block, which is where the
    multiscale refinement optimises features. With ``config.mpe_positions`` the last input channel
    must be the binary hole mask: the masking positional encoding is computed from it in ``front``.
    """

    def __init__(self, config: LamaConfig = BIG_LAMA) -> None:
        super().__init__()
        self.config = c = config
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            FFCBnAct(c.in_channels, 0, c.ngf, 0, kernel_size=7),
        ]
        for level in range(c.n_downsampling):
            cin, cout = c.features(level), c.features(level + 1)
            cout_global = c.bottleneck_global if level == c.n_downsampling - 1 else 0
            layers.append(FFCBnAct(cin, 0, cout - cout_global, cout_global, kernel_size=3, stride=2, padding=1))
        width_global = c.bottleneck_global
        width_local = c.bottleneck_channels - width_global
        layers += [FFCResBlock(width_local, width_global) for _ in range(c.n_blocks)]
        layers.append(ConcatTuple())
        # One shared ReLU instance, as in the official decoder (it holds no state, so no keys).
        up_relu = nn.ReLU(inplace=True)
        for level in range(c.n_downsampling, 0, -1):
            cin, cout = c.features(level), c.features(level - 1)
            layers += [
                nn.ConvTranspose2d(cin, cout, kernel_size=3, stride=2, padding=1, output_padding=1),
                nn.BatchNorm2d(cout),
                up_relu,
            ]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c.ngf, c.out_channels, kernel_size=7), nn.Sigmoid()]
        self.model = nn.Sequential(*layers)
        self.mpe = MaskPositionalEncoding(c.mpe_positions, c.ngf) if c.has_mpe else None

    @property
    def refinable(self) -> bool:
        """Whether the network splits into ``front`` and ``rear`` (every LaMa variant does)."""
        return True

    def front(self, x: Tensor) -> FeatureTuple:
        """Encoder: padding, init conv (+ MPE), downsampling -> (local, global) features at H/8."""
        self._check_input(x)
        return run_front(self.model, self.mpe, x, self.config.first_block_index)

    def rear(self, features: FeatureTuple) -> Tensor:
        """Residual blocks, concat and decoder -> prediction in (0, 1)."""
        return self.model[self.config.first_block_index :](features)

    def forward(self, x: Tensor) -> Tensor:
        return self.rear(self.front(x))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check_input(self, x: Tensor) -> None:
        c = self.config
        if x.ndim != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"generator input: expected (B, {c.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-2] % c.multiple or x.shape[-1] % c.multiple:
            raise ValueError(
                f"generator input: H and W must be multiples of {c.multiple}, got {tuple(x.shape[-2:])}; "
                "use ffc.inpaint(), which pads"
            )


def run_front(body: nn.Sequential, mpe: MaskPositionalEncoding | None, x: Tensor, first_block: int) -> FeatureTuple:
    """``body[:first_block](x)``, with the masking positional encoding added after the input conv.

    Shared by :class:`LamaGenerator` and the fused fast model, whose bodies have the same indices
    up to the first residual block (0 padding, 1 input conv, then the downsampling layers).
    """
    if mpe is None:
        local, global_ = body[:first_block](x)
        return local, global_
    local, global_ = body[:2](x)  # the input conv has no global part
    local = mpe.add_to(local, x[:, -1:])
    local, global_ = body[2:first_block]((local, global_))
    return local, global_


_INDEX = re.compile(r"^model\.(\d+)\.")


def config_from_state_dict(state: Mapping[str, Tensor]) -> LamaConfig:
    """Infer the generator configuration from canonical (``model.<i>...``) tensor shapes.

    Raises:
        ValueError: if the tensors do not describe an FFC ResNet generator.
    """
    init = state.get("model.1.ffc.convl2l.weight")
    if init is None or init.ndim != 4:
        raise ValueError("not a LaMa generator: no 'model.1.ffc.convl2l.weight' (the 7x7 input convolution)")
    ngf, in_channels = int(init.shape[0]), int(init.shape[1])

    n_down = 0
    while f"model.{2 + n_down}.ffc.convl2l.weight" in state:
        n_down += 1
    if n_down == 0:
        raise ValueError("not a LaMa generator: no downsampling layers after 'model.1'")
    last_down = 1 + n_down
    split = state.get(f"model.{last_down}.ffc.convl2g.weight")
    if split is None:
        raise ValueError(f"not an FFC generator: 'model.{last_down}.ffc.convl2g.weight' is missing (no global branch)")
    out_local = int(state[f"model.{last_down}.ffc.convl2l.weight"].shape[0])
    out_global = int(split.shape[0])
    bottleneck = out_local + out_global

    n_blocks = 0
    while f"model.{2 + n_down + n_blocks}.conv1.ffc.convl2l.weight" in state:
        n_blocks += 1
    if n_blocks == 0:
        raise ValueError("not a LaMa generator: no FFC residual blocks found")

    indices = {int(m.group(1)) for key in state if (m := _INDEX.match(key))}
    final_conv = max(indices)
    out = state.get(f"model.{final_conv}.weight")
    if out is None or out.ndim != 4:
        raise ValueError(f"not a LaMa generator: no output convolution at 'model.{final_conv}.weight'")

    mpe_positions = 0
    table = state.get("mpe.rel_pos_emb.weight")
    if table is not None:
        if table.ndim != 2 or int(table.shape[1]) != ngf:
            raise ValueError(
                f"tensor 'mpe.rel_pos_emb.weight' has shape {list(table.shape)}: the masking positional encoding is added "
                f"to the {ngf} channels of the input convolution, expected [positions, {ngf}]"
            )
        mpe_positions = int(table.shape[0])

    natural = ngf * 2**n_down
    config = LamaConfig(
        ngf=ngf,
        n_downsampling=n_down,
        n_blocks=n_blocks,
        in_channels=in_channels,
        out_channels=int(out.shape[0]),
        max_features=bottleneck if bottleneck < natural else max(natural, LamaConfig.max_features),
        global_ratio=out_global / bottleneck,
        mpe_positions=mpe_positions,
    )
    if config.bottleneck_global != out_global:
        # int(channels * ratio) must give back the stored split; move the ratio off the rounding edge.
        config = replace(config, global_ratio=(out_global + 0.5) / bottleneck)
    return config

