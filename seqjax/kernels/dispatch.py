"""Which implementation runs a recurrent layer: :class:`Settings`, :func:`choose` and :func:`run`.

Shapes use the glossary in ``seqjax/__init__.py``.

``recurrent.unroll`` asks :func:`choose` once per layer, before its jit, and passes the
:class:`Impl` it gets back as a static argument: a different choice is a different program,
never a reused one. Everything that changes what runs is in the call: the caller's request
(``impl=``), the cell, the dtypes, the backend, ``remat`` and one immutable :class:`Settings`
value. Nothing is read from module state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from seqjax import cells as cells_lib
from seqjax import layers
from seqjax.kernels import cudnn
from seqjax.kernels import fused
from seqjax.kernels import native

IMPLS = ("auto", "scan", "fused", "pallas", "cudnn")

# The native LSTM kernels split the hidden units between threads in vectors of 16; a smaller
# layer has nothing to split and keeps the XLA loops.
NATIVE_MIN_HIDDEN = 16


@dataclasses.dataclass(frozen=True)
class Settings:
  """How the fast paths run, as one immutable value (hashable: a static argument of jit).

  The defaults are the automatic choices; each field forces one where it is set.

  Attributes:
    forward: the loop of a fused layer that is not differentiated (inference). None: the
      fused forward on CPU and a lean time-major ``lax.scan`` that stores nothing for a
      backward elsewhere (see docs/speed.md); ``'fused'`` or ``'lean'`` forces one.
    native: whether the fused LSTM runs its loops as the native CPU kernels
      (``kernels/native``). None: on the CPU backend, for a float32 layer of at least
      ``NATIVE_MIN_HIDDEN`` units, when the library is built for this CPU; True requires them
      (an error where they cannot run); False keeps the XLA loops.
    threads: threads per native kernel call; None takes the cores this process may run on.
    project: whether the native forward kernel multiplies ``[x_t, h_prev]`` by
      ``[w_ih; w_hh]`` itself instead of reading ``xs @ w_ih`` from one XLA matmul. None:
      the rule of ``native.projects``.
    interpret: run the Pallas kernels in interpret mode. None: on the CPU backend only.
    cudnn_kernel: the call that stands in for cuDNN's LSTM kernel, with the signature of
      ``jax.experimental.rnn.lstm`` as ``cudnn.py`` calls it. None: cuDNN itself (GPU only).
      Tests on the CPU pass ``jax.experimental.rnn.lstm_ref`` behind that signature.
  """
  forward: str | None = None
  native: bool | None = None
  threads: int | None = None
  project: bool | None = None
  interpret: bool | None = None
  cudnn_kernel: Callable | None = None

  def __post_init__(self):
    if self.forward not in (None, "fused", "lean"):
      raise ValueError(f"Settings.forward must be None, 'fused' or 'lean'; got {self.forward!r}")
    for name in ("native", "project", "interpret"):
      if getattr(self, name) not in (None, True, False):
        raise ValueError(f"Settings.{name} must be None, True or False; got "
                         f"{getattr(self, name)!r}")
    threads = self.threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or threads < 1):
      raise ValueError(f"Settings.threads must be a positive int or None; got {threads!r}")
    if self.cudnn_kernel is not None and not callable(self.cudnn_kernel):
      raise ValueError(f"Settings.cudnn_kernel must be callable or None; got "
                       f"{self.cudnn_kernel!r}")


class Impl(NamedTuple):
  """What :func:`choose` decided for one layer (hashable: a static argument of jit)."""
  name: str                   # 'scan', 'fused', 'pallas' or 'cudnn'
  remat: bool = False         # scan: rematerialise each step in the backward pass
  lean: bool = False          # fused: a call that is not differentiated runs the lean scan
  in_place: bool = False      # fused: the backward writes gate gradients over coefficients
  native: int = 0             # fused LSTM: threads of the native kernels; 0: the XLA loops
  project: bool = False       # native: the forward kernel does the input projection itself
  interpret: bool = False     # pallas: interpret the kernels (CPU)
  cudnn_kernel: Callable | None = None  # cudnn: a stand-in for cuDNN's kernel (tests)


def supports(cell: cells_lib.Cell) -> bool:
  """True for the cells with a whole-layer path: ``lstm`` and ``gru`` with ``reset_after``."""
  return cell.name == "lstm" or (cell.name == "gru" and cell.reset_after)


def choose(cell: cells_lib.Cell, request: str, params, carry, *, backend: str | None = None,
           remat: bool = False, settings: Settings | None = None) -> Impl:
  """The implementation of one recurrent layer: the one place that decides it.

  Args:
    cell: the layer's cell.
    request: the caller's ``impl=``, one of :data:`IMPLS`.
    params: the cell's params (``w_ih: [d, g]``, ``w_hh: [h, g]``: sizes and dtypes).
    carry: the initial carry, ``[b, h]`` leaves (sizes and dtypes).
    backend: JAX's backend name; None: ``jax.default_backend()``.
    remat: the caller asked to rematerialise every step (least memory).
    settings: a :class:`Settings`; None: the defaults.

  The rule:

  * ``'scan'``: autodiff through ``lax.scan`` of the cell's step; the only path that honours
    ``remat`` and supports every cell, dtype and derivative (forward mode, higher order).
  * ``'auto'``: ``'scan'`` when ``remat`` is set (its rematerialised loop needs the least
    memory); else ``'fused'`` for ``lstm`` and ``gru`` (``reset_after``) with a float32 carry
    on the CPU and GPU backends, where it trains faster than the scan (docs/speed.md); else
    ``'scan'``: a bf16 carry is rounded at every step as the cells do, float64 is for
    numerical checks that may need forward-mode derivatives, TPUs are unmeasured. ``'auto'``
    never takes ``'pallas'`` or ``'cudnn'``.
  * ``'fused'`` (``lstm`` and ``gru`` with ``reset_after``; reverse mode only; ``remat`` has
    nothing to drop): a call that is not differentiated runs the fused forward on CPU and a
    lean scan elsewhere (``settings.forward``); the backward writes its gate gradients over
    its coefficients on CPU only. The LSTM's loops run as the native CPU kernels when
    ``settings.native`` allows: the CPU backend, float32 carry and ``w_hh``, at least
    ``NATIVE_MIN_HIDDEN`` units and a library built for this CPU (``native=True`` requires
    them and names what is missing); ``settings.threads`` threads (default: this process's
    cores), and the forward kernel projects the inputs itself by ``native.projects``.
  * ``'pallas'`` (the same cells): the fused path's loops as Pallas kernels, interpreted on
    the CPU backend (``settings.interpret``).
  * ``'cudnn'``: the plain ``lstm`` with a float32 carry through cuDNN (GPU backend, or
    ``settings.cudnn_kernel`` standing in for it).

  A request a path cannot serve raises ``ValueError`` naming the problem.
  """
  settings = Settings() if settings is None else settings
  if not isinstance(settings, Settings):
    raise ValueError(f"kernel settings must be a seqjax.kernels.Settings; got {settings!r}")
  if request not in IMPLS:
    raise ValueError(f"impl must be one of {IMPLS}; got {request!r}")
  backend = jax.default_backend() if backend is None else backend
  if request in ("fused", "pallas") and not supports(cell):
    raise ValueError(f"impl={request!r} supports cells 'lstm' and 'gru' (reset_after=True); got "
                     f"{cell}")
  dtypes = {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(carry)}
  float32 = dtypes == {jnp.dtype(jnp.float32)}
  if request == "cudnn":
    if cell.name != "lstm":
      raise ValueError(f"impl='cudnn' runs the plain 'lstm' cell only; got {cell}")
    if backend != "gpu" and settings.cudnn_kernel is None:
      raise ValueError("impl='cudnn' runs cuDNN's kernels (jax.experimental.rnn) on a GPU; "
                       f"this backend is {backend!r}")
    if not float32:
      raise ValueError(f"impl='cudnn' needs a float32 carry; got {sorted(map(str, dtypes))}")
    return Impl("cudnn", cudnn_kernel=settings.cudnn_kernel)
  if request == "auto":
    fast = not remat and supports(cell) and float32 and backend in ("cpu", "gpu")
    request = "fused" if fast else "scan"
  if request == "scan":
    return Impl("scan", remat=bool(remat))
  if request == "pallas":
    interpret = backend == "cpu" if settings.interpret is None else settings.interpret
    return Impl("pallas", interpret=interpret)
  lean = settings.forward == "lean" or (settings.forward is None and backend != "cpu")
  threads = _native_threads(cell, params, carry, backend, settings)
  project = threads > 0 and native.projects(settings.project, params["w_ih"].shape[0],
                                            params["w_hh"].shape[0], threads)
  return Impl("fused", lean=lean, in_place=backend == "cpu", native=threads, project=project)


def _native_threads(cell, params, carry, backend, settings) -> int:
  """Threads of the native kernels for a fused layer, 0 for the XLA loops."""
  if settings.native is False or cell.name != "lstm":
    return 0
  dtypes = {jnp.dtype(leaf.dtype) for leaf in (params["w_hh"], *jax.tree.leaves(carry))}
  fits = backend == "cpu" and dtypes == {jnp.dtype(jnp.float32)}
  threads = settings.threads or default_threads()
  if settings.native is True:
    if not fits:
      raise ValueError("Settings(native=True) needs the CPU backend, a float32 carry and float32 "
                       f"w_hh; got backend {backend!r} and dtypes {sorted(map(str, dtypes))}")
    if not native.available():
      raise RuntimeError(f"Settings(native=True): {native.unavailable_reason()}")
    return threads
  hidden = jax.tree.leaves(carry)[0].shape[-1]
  return threads if fits and hidden >= NATIVE_MIN_HIDDEN and native.available() else 0


def default_threads() -> int:
  """Threads of a native kernel call by default: the cores this process may run on."""
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run(impl: Impl, cell: cells_lib.Cell, params, xs: jax.Array, lengths: jax.Array | None,
        carry, unroll_steps: int = 1):
  """Runs a whole layer through ``impl`` (any but ``'scan'``, which ``recurrent.py`` runs).

  ``xs: [b, t, d]``, ``lengths: [b]`` or None. Returns ``(ys [b, t, h], final_carry)``, ``ys``
  zero past each row's length, the carry that after its last valid step.
  """
  if impl.name == "cudnn":  # Whole layer through cuDNN; padding already zeroed.
    return cudnn.unroll_batch_major(params, xs, lengths, carry, kernel=impl.cudnn_kernel)
  mask = None if lengths is None else layers.mask_from_lengths(lengths, xs.shape[1])
  if impl.name == "fused":
    hs, carry = fused.unroll_batch_major(cell, params, xs, mask, carry, unroll_steps, impl)
  elif impl.name == "pallas":
    # Imported here: Pallas (and its Triton backend) loads only when this path runs.
    from seqjax.kernels import pallas_rnn  # pylint: disable=import-outside-toplevel
    hs, carry = pallas_rnn.unroll_batch_major(cell, params, xs, mask, carry, unroll_steps,
                                              interpret=impl.interpret)
  else:
    raise ValueError(f"kernels.run runs 'fused', 'pallas' or 'cudnn'; got {impl.name!r}")
  ys = hs if mask is None else jnp.where(mask[..., None], hs, jnp.zeros_like(hs))
  return ys, carry
