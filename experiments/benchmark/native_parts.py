r"""Times the native CPU LSTM's parts one by one: where a training call's time goes.

A training call of the fused LSTM on the CPU runs the forward kernel, the backward loop's
kernel, the weight-gradient kernel and one XLA matmul (``dxs``); an inference call runs the
forward kernel without residuals (``infer``). This times each on its own inputs, in
interleaved rounds (as ``experiments.benchmark`` does), and prints milliseconds and GFLOP/s
per part. Benchmarks are not tests: nothing here asserts a speed.

    python -m experiments.benchmark.native_parts --shapes=8x512x512x512,32x128x256x256
    perf record -g python -m experiments.benchmark.native_parts --shapes=8x512x512x512 \
        --parts=backward --repeats=40     # then `perf report`: one kernel's profile

A shape is ``batch x time x input x hidden``; ``--shapes`` defaults to the CPU reference shapes.
"""

from __future__ import annotations

import functools

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from experiments.benchmark import timing
from seqjax.kernels import dispatch
from seqjax.kernels import native

PARTS = ("forward", "backward", "weight_grads", "dxs", "infer")

_SHAPES = flags.DEFINE_list("shapes", None, "batch x time x input x hidden; default: the CPU "
                            "reference shapes of experiments.benchmark")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed rounds, each calling every part once "
                                "(interleaved); the median is reported")
_PARTS = flags.DEFINE_list("parts", list(PARTS), f"which parts to time: {', '.join(PARTS)}")
_THREADS = flags.DEFINE_integer("threads", None, "threads per kernel call; default: the cores "
                                "this process may use")
_PROJECT = flags.DEFINE_enum("project", "auto", ["auto", "kernel", "xla"],
                             "who does the forward's input projection: the kernel at every "
                             "step, one XLA matmul before it, or auto (native.projects)")


def part_fns(shape, threads, project=None):
  """``{part: (call, flop)}`` for one float32 layer of ``shape``, each call on ready inputs."""
  b, t, d, h = shape
  g = 4 * h
  keys = jax.random.split(jax.random.PRNGKey(0), 5)
  xs = jax.random.normal(keys[0], (b, t, d))
  w_ih = jax.random.normal(keys[1], (d, g)) / d ** 0.5
  w_hh = jax.random.normal(keys[2], (h, g)) / h ** 0.5
  dhs = jax.random.normal(keys[3], (b, t, h))
  bias, zeros = jnp.zeros(g), jnp.zeros((b, h))
  project = native.projects(project, d, h, threads)

  def forward(xs, w_ih, w_hh, train=True):
    inputs = (xs, w_ih) if project else (jnp.einsum("btd,dg->btg", xs, w_ih), None)
    return native.lstm_forward(*inputs, w_hh, bias, zeros, zeros, None, train=train,
                               threads=threads, project=project)

  infer = jax.jit(functools.partial(forward, train=False))
  forward = jax.jit(forward)
  backward = jax.jit(lambda dhs, acts, cs: native.lstm_backward(dhs, acts, cs, zeros, None, w_hh,
                                                                zeros, threads))
  weight_grads = jax.jit(lambda xs, hs, dgates: native.lstm_weight_grads(xs, hs, zeros, dgates,
                                                                         threads))
  dxs = jax.jit(lambda dgates, w_ih: jnp.dot(dgates, w_ih.T))
  acts, hs, cs = forward(xs, w_ih, w_hh)
  dgates = backward(dhs, acts, cs)[0]
  done = jax.block_until_ready
  return {
      "forward": (lambda: done(forward(xs, w_ih, w_hh)), 2 * b * t * (d + h) * g),
      "backward": (lambda: done(backward(dhs, acts, cs)), 2 * b * t * h * g),
      "weight_grads": (lambda: done(weight_grads(xs, hs, dgates)), 2 * b * t * (d + h) * g),
      "dxs": (lambda: done(dxs(dgates, w_ih)), 2 * b * t * d * g),
      "infer": (lambda: done(infer(xs, w_ih, w_hh)), 2 * b * t * (d + h) * g),
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  unknown = sorted(set(_PARTS.value) - set(PARTS))
  if unknown:
    raise app.UsageError(f"unknown parts {unknown}; known: {', '.join(PARTS)}")
  if jax.default_backend() != "cpu" or not native.available():
    raise app.UsageError("the native kernels run on the CPU backend, once built: "
                         f"{native.unavailable_reason() or jax.default_backend()}")
  threads = _THREADS.value or dispatch.default_threads()
  project = {"auto": None, "kernel": True, "xla": False}[_PROJECT.value]
  print(f"threads {threads}; jax {jax.__version__}")
  for text in _SHAPES.value or list(timing.CPU_SHAPES):
    shape = timing.parse_shape(text)
    fns = {name: fn for name, fn in part_fns(shape, threads, project).items()
           if name in _PARTS.value}
    seconds = timing.interleaved_seconds({name: fn for name, (fn, _) in fns.items()},
                                         _REPEATS.value, settle_seconds=0.02)
    cells = [f"{name} {seconds[name] * 1e3:.1f} ms ({fns[name][1] / seconds[name] / 1e9:.0f} "
             "GFLOP/s)" for name in fns]
    print(f"{text}: " + ", ".join(cells) + f"; sum {sum(seconds.values()) * 1e3:.1f} ms",
          flush=True)


if __name__ == "__main__":
  app.run(main)
