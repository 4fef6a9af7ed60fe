"""Training a small LSTM with reverse-mode gradients through a scan.

The task: read a noisy sine wave one value at a time and predict the next clean value. An LSTM
cell of H units carries (h, c) along the sequence; its four gates come from one product,

    z = x_t @ Wx + h @ Wh + b,   i, f, o, g = np.split(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g),   h = sigmoid(o) * tanh(c)

and a linear read-out turns every h into a prediction, ``hs @ w + w0``. The loss is the mean
squared error over the sequence. ``ns.scan`` runs the cell; ``ns.value_and_grad`` gives the loss
and its gradient with respect to all five weights in one call (the first call compiles, later
calls reuse the program), and a few steps of Adam, written in NumPy, train them.

    python examples/lstm.py [--T 200] [--steps 40]
"""
import argparse
import time

import numpy as np

import numbascan as ns

H = 16  # hidden units
WEIGHTS = ("Wx", "Wh", "b", "w", "w0")


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def lstm_step(x_t, h, c, Wx, Wh, b):
    z = x_t @ Wx + h @ Wh + b
    i, f, o, g = np.split(z, 4)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def loss(Wx, Wh, b, w, w0, X, target):
    """Mean squared error of the read-out of every h against the targets."""
    h0, c0 = np.zeros(Wh.shape[0]), np.zeros(Wh.shape[0])
    (hs, _), _ = ns.scan(lstm_step, sequences=X, outputs_info=[h0, c0],
                         non_sequences=[Wx, Wh, b])
    return np.mean((hs @ w + w0 - target) ** 2)


def make_data(T=200, noise=0.1, seed=0):
    """Inputs X (T x 1): a noisy sine; targets (T,): the clean sine one step later."""
    rng = np.random.default_rng(seed)
    t = np.arange(T + 1) * 0.2
    clean = np.sin(t) + 0.5 * np.sin(0.37 * t)
    X = (clean[:-1] + noise * rng.standard_normal(T))[:, None]
    return X, clean[1:]


def init_weights(D=1, seed=1):
    rng = np.random.default_rng(seed)
    b = np.zeros(4 * H)
    b[H:2 * H] = 1.0  # forget gates start open
    return [rng.standard_normal((D, 4 * H)) / np.sqrt(D),
            rng.standard_normal((H, 4 * H)) * (0.5 / np.sqrt(H)),
            b,
            rng.standard_normal(H) / np.sqrt(H),
            np.array(0.0)]


def adam(value_and_grad, weights, steps, lr=0.05, beta1=0.9, beta2=0.999, eps=1e-8,
         verbose=True, every=5):
    """Adam on the list of weights; returns (the weights, the loss before each step)."""
    m = [np.zeros_like(p) for p in weights]
    v = [np.zeros_like(p) for p in weights]
    losses = []
    for k in range(1, steps + 1):
        value, grads = value_and_grad(*weights)
        losses.append(float(value))
        if verbose and (k == 1 or k % every == 0):
            print(f"  step {k:3d}   loss {value:.5f}")
        for j, g in enumerate(grads):
            m[j] = beta1 * m[j] + (1 - beta1) * g
            v[j] = beta2 * v[j] + (1 - beta2) * g * g
            m_hat, v_hat = m[j] / (1 - beta1 ** k), v[j] / (1 - beta2 ** k)
            weights[j] = weights[j] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return weights, losses


def main(T=200, steps=40, lr=0.05, verbose=True):
    """Train the LSTM for `steps` Adam steps. Returns (the losses, before each step and after
    the last; the trained weights)."""
    X, target = make_data(T)
    grad_all = ns.value_and_grad(loss, argnums=(0, 1, 2, 3, 4))

    def value_and_grad(*weights):
        return grad_all(*weights, X, target)

    weights = init_weights(X.shape[1])
    if verbose:
        print(f"LSTM with H = {H} on {T} steps of a noisy sine; predict the next clean value")
        print(f"predicting the last input would give loss "
              f"{np.mean((X[:, 0] - target) ** 2):.5f}")
    t0 = time.perf_counter()
    grad_all(*weights, X, target)  # the first call traces and compiles
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    weights, losses = adam(value_and_grad, weights, steps, lr=lr, verbose=verbose)
    train_s = time.perf_counter() - t0
    losses.append(float(value_and_grad(*weights)[0]))
    if verbose:
        print(f"  after {steps} steps: loss {losses[-1]:.5f} "
              f"({losses[0] / losses[-1]:.1f}x lower than at the start)")
        print(f"first loss-and-gradient call (compiles) {compile_s:.2f} s; {steps} training "
              f"steps {train_s:.2f} s")
    return losses, dict(zip(WEIGHTS, weights))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=200, help="length of the sequence")
    ap.add_argument("--steps", type=int, default=40, help="Adam steps")
    a = ap.parse_args()
    main(T=a.T, steps=a.steps)
