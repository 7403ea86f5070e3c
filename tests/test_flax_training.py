"""Training proof for the Flax NNX backend, as tests/test_training.py has for
PyTorch and Keras: the generated ResNet-18 trained from scratch with optax
(batch norm on batch statistics, dropout and drop path live, drawn from the
model's rngs) reaches 90% test accuracy on digits 0-4 in the same number of
steps; then its frozen backbone's pooled features (num_classes=0's output,
computed once) train a new classifier for digits 5-9 to 85%."""

from __future__ import annotations

import pytest
from helpers import RESNET, digits

jax = pytest.importorskip("jax")
nnx = pytest.importorskip("flax.nnx")
optax = pytest.importorskip("optax")
pytest.importorskip("sklearn")

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import archspec  # noqa: E402

VARIANT = "resnet18"
STEPS, BATCH = 60, 32  # as test_training.py
HEAD_STEPS = 200
ACCURACY, TRANSFER_ACCURACY = 0.90, 0.85
FIRST, SECOND = range(0, 5), range(5, 10)


@nnx.jit
def train_step(model, optimizer, x, y):
    def loss_fn(model):
        logits = model(x, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def predict(model, x):
    return model(x).argmax(-1)


def test_flax_trains_and_transfers():
    model = archspec.create_model(
        RESNET,
        VARIANT,
        backend="flax",
        num_classes=5,
        drop_rate=0.2,
        drop_path_rate=0.1,
        rngs=nnx.Rngs(0),
    )
    assert model.dropout.rate == 0.2 and model.stages[3][1].drop_path.rate > 0
    x, y, x_test, y_test = digits(FIRST)
    optimizer = nnx.Optimizer(
        model, optax.adamw(2e-3, weight_decay=1e-4), wrt=nnx.Param
    )
    rng = np.random.default_rng(0)
    before = np.asarray(model.stem.bn.mean[...]).copy()
    for _ in range(STEPS):
        idx = rng.choice(len(x), BATCH, replace=False)
        train_step(model, optimizer, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    # Training mode updated the running statistics eval mode then uses.
    assert not np.allclose(before, np.asarray(model.stem.bn.mean[...]))
    accuracy = float((np.asarray(predict(model, jnp.asarray(x_test))) == y_test).mean())
    print(f"flax: digits 0-4 after {STEPS} steps: {accuracy:.3f}")
    assert accuracy >= ACCURACY

    # Transfer: the backbone's pooled features (pre_logits) for digits 5-9,
    # computed once in eval mode, train a new classifier; then the whole
    # model is evaluated.
    model.reset_classifier(5, rngs=nnx.Rngs(1))
    x, y, x_test, y_test = digits(SECOND)
    features = nnx.jit(
        lambda m, v: m.forward_head(m.forward_features(v), pre_logits=True)
    )(model, jnp.asarray(x))
    head = model.classifier
    head_optimizer = nnx.Optimizer(head, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def head_step(head, optimizer, features, labels):
        def loss_fn(head):
            logits = head(features)
            return optax.softmax_cross_entropy_with_integer_labels(
                logits, labels
            ).mean()

        grads = nnx.grad(loss_fn)(head)
        optimizer.update(head, grads)

    labels = jnp.asarray(y)
    for _ in range(HEAD_STEPS):
        head_step(head, head_optimizer, features, labels)
    accuracy = float((np.asarray(predict(model, jnp.asarray(x_test))) == y_test).mean())
    print(f"flax: transfer to digits 5-9 after {HEAD_STEPS} steps: {accuracy:.3f}")
    assert accuracy >= TRANSFER_ACCURACY
