"""A tiny real training loop with a real smdebug hook, for rule tests that need a specific failure.

The project's trainer covers the realistic runs (see test_rules_trainer.py); this loop exists to
produce failure modes the trainer cannot be configured into (zero-initialised weights, a network
whose gradients vanish) in a fraction of a second. Everything here is real: a torch model, an
optimizer, and ``smdebug.pytorch.Hook`` writing the same collections our trainer saves
(losses, weights, gradients, biases), TRAIN and EVAL modes.

Also runnable as a script (the StopTraining test runs it as a subprocess):

    python tiny_training.py OUT_DIR --lr 1e4 --epochs 500 --sleep 0.05
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

import torch
from torch import nn

KINDS = ("healthy", "exploding", "frozen", "vanishing", "zero_init", "overfit")


def _data(seed: int, n: int, noisy_labels: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (x[:, 1].mean(dim=(1, 2)) > 0).long()   # 4 classes
    if noisy_labels:
        y = torch.randint(0, 4, (n,), generator=g)
    return x, y


class Net(nn.Module):
    def __init__(self, output_scale: float = 1.0):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(8 * 4, 4)
        self.output_scale = output_scale

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1)) * self.output_scale


def train(out_dir: str, kind: str = "healthy", lr: float | None = None, epochs: int = 6,
          steps_per_epoch: int = 4, batch_size: int = 16, sleep: float = 0.0, seed: int = 0) -> int:
    """Train and save tensors to ``out_dir`` every step; returns the number of TRAIN steps run."""
    import smdebug.pytorch as smd

    torch.manual_seed(seed)
    model = Net(output_scale=1e-9 if kind == "vanishing" else 1.0)
    if kind == "zero_init":
        for p in model.parameters():
            nn.init.zeros_(p)
    default_lr = {"healthy": 0.1, "exploding": 1e4, "frozen": 0.0, "vanishing": 0.1,
                  "zero_init": 0.1, "overfit": 0.1}[kind]
    opt = torch.optim.SGD(model.parameters(), lr=default_lr if lr is None else lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    hook = smd.Hook(out_dir=out_dir, export_tensorboard=False, save_config=smd.SaveConfig(save_interval=1),
                    include_collections=["losses", "weights", "gradients", "biases"])
    hook.register_module(model)
    hook.register_loss(loss_fn)

    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))

    train_x, train_y = _data(seed, steps_per_epoch * batch_size)
    if kind == "frozen":   # one fixed batch, no learning: the loss is identical at every step
        train_x, train_y = train_x[:batch_size].repeat(steps_per_epoch, 1, 1, 1), train_y[:batch_size].repeat(steps_per_epoch)
    if kind == "overfit":  # memorise a small set whose labels say nothing about the validation set
        train_x, train_y = train_x[:batch_size].repeat(steps_per_epoch, 1, 1, 1), train_y[:batch_size].repeat(steps_per_epoch)
    val_x, val_y = _data(seed + 1, 2 * batch_size, noisy_labels=(kind == "overfit"))

    train_steps = 0
    for _epoch in range(epochs):
        hook.set_mode(smd.modes.TRAIN)
        model.train()
        for i in range(steps_per_epoch):
            xb = train_x[i * batch_size:(i + 1) * batch_size]
            yb = train_y[i * batch_size:(i + 1) * batch_size]
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            train_steps += 1
            if sleep:
                time.sleep(sleep)
            if stop["now"]:
                hook.close()
                return train_steps
        hook.set_mode(smd.modes.EVAL)
        model.eval()
        with torch.no_grad():
            for i in range(2):
                loss_fn(model(val_x[i * batch_size:(i + 1) * batch_size]), val_y[i * batch_size:(i + 1) * batch_size])
    hook.close()
    return train_steps


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--kind", default="healthy", choices=KINDS)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--sleep", type=float, default=0.0)
    a = ap.parse_args()
    steps = train(a.out_dir, a.kind, a.lr, a.epochs, sleep=a.sleep)
    print(f"train_steps={steps}", flush=True)
    sys.exit(0)
