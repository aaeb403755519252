"""dnnscape's three ParaDnn model families written the way a PyTorch user would write them.

Used by bench/bench_pytorch.py. Each builder returns a `Workload`: the model, its data (drawn
once and reused every step, as dnnscape does), and a `step()` for training or inference. The
shapes follow docs/conventions.md (FC), docs/conventions-cnn.md (CNN) and docs/conventions-rnn.md
(RNN) exactly; `dnnscape_params` is the parameter count dnnscape reports for the same config, so
the bench can check that both sides build the same model.

Idioms (nothing tuned, nothing dnnscape-specific):
- nn.Sequential / nn.Module, default initialization, default NCHW (contiguous) tensors;
- training step: optimizer.zero_grad(set_to_none=True); forward; CrossEntropyLoss; backward;
  torch.optim.SGD step (set_to_none is PyTorch's own performance advice, and the default from
  2.0 on; it only helps PyTorch);
- inference step: model.eval() and torch.inference_mode(); forward + softmax, because dnnscape's
  inference step ends with a softmax too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


@dataclass
class Workload:
    model: nn.Module
    step: Callable[[], object]
    torch_params: int      # parameters of the PyTorch model
    dnnscape_params: int   # what dnnscape counts for the same shapes (docs/conventions*.md)
    note: str = ""


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _make_step(model: nn.Module, mode: str, forward: Callable[[], torch.Tensor],
               targets: torch.Tensor, lr: float) -> Callable[[], object]:
    if mode == "training":
        model.train()
        loss_fn = nn.CrossEntropyLoss()
        opt = torch.optim.SGD(model.parameters(), lr=lr)

        def train_step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(forward(), targets)
            loss.backward()
            opt.step()
            return loss

        return train_step
    if mode == "inference":
        model.eval()

        def infer_step():
            with torch.inference_mode():
                return torch.softmax(forward(), dim=1)

        return infer_step
    raise ValueError(f"unknown mode {mode!r}")


# ---------------------------------------------------------------------------------------- FC
def build_fc(layers: int, nodes: int, input: int, output: int, batch: int, mode: str,
             gen: torch.Generator) -> Workload:
    """`layers` hidden Dense(nodes)+ReLU, then Dense(output) logits; SGD lr 0.01."""
    mods: list[nn.Module] = []
    width = input
    for _ in range(layers):
        mods += [nn.Linear(width, nodes), nn.ReLU()]
        width = nodes
    mods.append(nn.Linear(width, output))
    model = nn.Sequential(*mods)
    x = torch.rand(batch, input, generator=gen) - 0.5
    y = torch.randint(0, output, (batch,), generator=gen)
    widths = [input] + [nodes] * layers + [output]
    expect = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return Workload(model, _make_step(model, mode, lambda: model(x), y, 0.01), _count(model),
                    expect)


# --------------------------------------------------------------------------------------- CNN
def _conv_bn(cin: int, cout: int, k: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout)]


class ResidualBlock(nn.Module):
    """3x3 conv (stride) BN ReLU, 3x3 conv BN; + shortcut; ReLU."""
    expansion = 1

    def __init__(self, cin: int, f: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, f, 3, stride), nn.ReLU(inplace=True),
                                  *_conv_bn(f, f, 3, 1))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, f, 1, stride))
                         if stride != 1 or cin != f else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """1x1 conv BN ReLU, 3x3 conv (stride) BN ReLU, 1x1 conv (4f) BN; + shortcut; ReLU."""
    expansion = 4

    def __init__(self, cin: int, f: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*_conv_bn(cin, f, 1, 1), nn.ReLU(inplace=True),
                                  *_conv_bn(f, f, 3, stride), nn.ReLU(inplace=True),
                                  *_conv_bn(f, 4 * f, 1, 1))
        self.shortcut = (nn.Sequential(*_conv_bn(cin, 4 * f, 1, stride))
                         if stride != 1 or cin != 4 * f else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetV1(nn.Module):
    """ResNet-v1 post-activation as docs/conventions-cnn.md defines it."""

    def __init__(self, block_fn: str, filters: int, blocks: int, output: int):
        super().__init__()
        block = {"residual": ResidualBlock, "bottleneck": BottleneckBlock}[block_fn]
        self.stem = nn.Sequential(*_conv_bn(3, filters, 7, 2), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(3, stride=2, padding=1))
        groups: list[nn.Module] = []
        cin = filters
        for g in range(4):
            f = filters << g
            for b in range(blocks):
                groups.append(block(cin, f, (1 if g == 0 else 2) if b == 0 else 1))
                cin = f * block.expansion
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, output)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.groups(self.stem(x))), 1))


def build_cnn(block_fn: str, filters: int, blocks: int, image: int, output: int, batch: int,
              mode: str, gen: torch.Generator) -> Workload:
    model = ResNetV1(block_fn, filters, blocks, output)
    x = torch.rand(batch, 3, image, image, generator=gen) - 0.5
    y = torch.randint(0, output, (batch,), generator=gen)
    n = _count(model)  # conv weights + 2C per BN + dense: dnnscape's convention exactly
    return Workload(model, _make_step(model, mode, lambda: model(x), y, 0.05), n, n)


# --------------------------------------------------------------------------------------- RNN
class RnnLM(nn.Module):
    """Embedding(V, E) -> L-layer LSTM/GRU/RNN(tanh), hidden E, zero initial state ->
    Linear(E, V) on every step."""

    def __init__(self, cell: str, layers: int, embedding: int, vocab: int):
        super().__init__()
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]
        self.embed = nn.Embedding(vocab, embedding)
        self.rnn = rnn(embedding, embedding, num_layers=layers)  # (T, B, E), unidirectional
        self.fc = nn.Linear(embedding, vocab)

    def forward(self, tokens):  # tokens (T, B) -> logits (T*B, V)
        out, _ = self.rnn(self.embed(tokens))
        return self.fc(out.reshape(-1, out.shape[-1]))


def build_rnn(cell: str, layers: int, embedding: int, length: int, vocab: int, batch: int,
              mode: str, gen: torch.Generator) -> Workload:
    model = RnnLM(cell, layers, embedding, vocab)
    tokens = torch.randint(0, vocab, (length, batch), generator=gen)
    targets = torch.randint(0, vocab, (length * batch,), generator=gen)
    g = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    e = embedding
    # PyTorch's cells carry two bias vectors (b_ih, b_hh); dnnscape's oneDNN cells one.
    expect = vocab * e + layers * g * e * (e + e) + layers * g * e + e * vocab + vocab
    n = _count(model) - layers * g * e
    note = ""
    if cell == "gru":
        note = ("PyTorch's GRU is the linear-before-reset variant (oneDNN lbr_gru), dnnscape runs "
                "the standard GRU; same GEMM shapes")
    return Workload(model, _make_step(model, mode, lambda: model(tokens), targets, 0.1), n,
                    expect, note)


def build(family: str, params: dict, mode: str, seed: int = 0) -> Workload:
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if family == "fc":
        return build_fc(**params, mode=mode, gen=gen)
    if family == "cnn":
        return build_cnn(**params, mode=mode, gen=gen)
    if family == "rnn":
        return build_rnn(**params, mode=mode, gen=gen)
    raise ValueError(f"unknown family {family!r}")
