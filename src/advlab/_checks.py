"""Validation helpers used at every public boundary.

Each helper raises a one-line :class:`ValueError` (or :class:`TypeError`) that names the
argument, what was expected and what was got. Never ``assert`` on user input.
"""

from __future__ import annotations

import collections.abc
import difflib
import math
import numbers
import types
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import numpy as np
import torch


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return a ``" (did you mean ...?)"`` suffix with close names (case aside: ``LeNet-MNIST``), or ``""``."""
    by_lower: dict[str, str] = {}
    for c in choices:
        by_lower.setdefault(str(c).lower(), c)
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=3, cutoff=0.5)
    return f" (did you mean {', '.join(repr(by_lower[c]) for c in close)}?)" if close else ""


def check_choice(arg: str, value: str, choices: Sequence[str]) -> str:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(
            f"{arg}: expected one of {', '.join(repr(c) for c in choices)}, "
            f"got {value!r}{suggest(str(value), choices)}"
        )
    return value


def as_number(arg: str, value: object, what: str = "a number") -> float:
    """A Python, NumPy or 0-d tensor number as a float; a tensor of several values fails in one line."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()
    if isinstance(value, (torch.Tensor, np.ndarray)):
        hint = " (one budget per threat model: one ThreatModel per value)" if arg == "eps" else ""
        raise TypeError(f"{arg}: expected {what}, got a{' tensor' if isinstance(value, torch.Tensor) else 'n array'} "
                        f"of shape {tuple(value.shape)}{hint}")
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{arg}: expected {what}, got {type(value).__name__}")
    return float(value)


def array_tensor(arg: str, a: np.ndarray, what: str) -> torch.Tensor:
    """A NumPy array as a tensor; an array of strings or objects fails in one line saying what was expected."""
    if a.dtype.kind not in "biuf":
        kind = {"U": "strings", "S": "bytes", "O": "Python objects"}.get(a.dtype.kind, str(a.dtype))
        first = ", ".join(repr(v) for v in a.reshape(-1)[:3].tolist())
        raise TypeError(f"{arg}: expected {what}, got an array of {kind} ({first}, …)")
    return torch.from_numpy(np.ascontiguousarray(a))


def check_nonneg(arg: str, value: float) -> float:
    """Check that ``value`` is a number >= 0 (``inf`` allowed); NumPy scalars and 0-d tensors count as numbers."""
    number = as_number(arg, value, "a number >= 0")
    if math.isnan(number) or number < 0:
        raise ValueError(f"{arg}: expected a number >= 0, got {number:g}")
    return number


def parse_budget(arg: str, text: str) -> float:
    """A budget as the command line gives it: a number (``0.03``, ``inf``) or a fraction (``8/255``); ≥ 0."""
    num, slash, den = str(text).strip().partition("/")
    try:
        value = float(num) / float(den) if slash else float(num)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{arg}: expected a number or a fraction like 8/255, got {text!r}") from None
    return check_nonneg(arg, value)  # (inf passes: a minimal attack's budget)


def budget_type(text: str) -> float:
    """:func:`parse_budget` as an argparse ``type`` (its message in argparse's own error line)."""
    import argparse

    try:
        return parse_budget("--eps", text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--eps: ")) from None


def error_text(e: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception raised by code advlab called (a user's model, onnxruntime), on one line."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:limit]}"


def check_positive_int(arg: str, value: int) -> int:
    """Check that ``value`` is an integer >= 1."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{arg}: expected an integer >= 1, got {value!r}")
    return value


def check_bounds(arg: str, bounds: tuple[float, float]) -> tuple[float, float]:
    """Check that ``bounds`` is a pair (lo, hi) of finite floats with lo < hi."""
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"{arg}: expected a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{arg}: expected finite lo < hi, got ({lo}, {hi})")
    return lo, hi


def range_hint(lo: float, hi: float, bounds: tuple[float, float]) -> str:
    """What images outside [0, 1] most likely are: rounding, 0–255 pixels, or images a transform already normalised."""
    off = max(bounds[0] - lo, hi - bounds[1])
    if 0 < off <= 1e-4 * (bounds[1] - bounds[0]):  # (float rounding, say of an un-normalisation: no layout guess)
        return f" (off by {off:.1g}, float rounding? x.clamp({bounds[0]}, {bounds[1]}))"
    if tuple(bounds) != (0.0, 1.0) or hi <= 1:
        return ""
    if lo >= 0 and 2 < hi <= 255:
        return " (pixels in 0–255? divide the images by 255, or give bounds=(0, 255))"
    if lo < 0:
        return (" (images already normalised, as a Normalize transform does? The threat model is in pixel space: "
                "give images in [0, 1] and put the normalisation in the model, "
                "advlab.models.with_normalization(model, mean, std))")
    return ""


def looks_channels_last(shape: Sequence[int]) -> bool:
    """Whether a batch of this shape reads as N×H×W×C images: a last axis of 1, 3 or 4 channels, a second not."""
    return len(shape) == 4 and shape[3] in (1, 3, 4) and shape[1] not in (1, 3, 4)


def check_images(arg: str, x: object, bounds: tuple[float, float] | None = None) -> torch.Tensor:
    """Check an image batch: a floating tensor N×C×H×W (or N×D), finite, inside ``bounds``."""
    if not isinstance(x, torch.Tensor):
        hint = f" (torch.from_numpy({arg}))" if isinstance(x, np.ndarray) and arg.isidentifier() else ""
        raise TypeError(f"{arg}: expected a torch.Tensor, got {type(x).__name__}{hint}")
    if not x.is_floating_point():
        hint = " (8-bit images: x.float() / 255)" if x.dtype == torch.uint8 else ""
        raise ValueError(f"{arg}: expected a floating-point tensor, got dtype {x.dtype}{hint}")
    if x.dim() < 2:
        raise ValueError(f"{arg}: expected a batch N×C×H×W (or N×D), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{arg}: expected a non-empty batch, got shape {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError(f"{arg}: contains NaN")
    if bounds is not None:
        lo, hi = bounds
        xmin, xmax = float(x.detach().min()), float(x.detach().max())
        if xmin < lo or xmax > hi:
            raise ValueError(f"{arg}: values must lie in the bounds [{lo}, {hi}], got range [{xmin:.4g}, {xmax:.4g}]"
                             + range_hint(xmin, xmax, (lo, hi)))
    return x


def check_image_batches(arg: str, batches: Iterable[torch.Tensor], bounds: tuple[float, float] | None = None) -> int:
    """:func:`check_images` over a stream of batches (a lazy image set's pass): the whole set is never in memory.

    Returns:
        The number of images seen.
    """
    n, lo, hi = 0, math.inf, -math.inf
    for i, xb in enumerate(batches):
        check_images(f"{arg} (batch {i})", xb)
        n += len(xb)
        lo, hi = min(lo, float(xb.min())), max(hi, float(xb.max()))
    if n == 0:
        raise ValueError(f"{arg}: expected a non-empty set of images, got none")
    if bounds is not None and (lo < bounds[0] or hi > bounds[1]):
        raise ValueError(f"{arg}: values must lie in the bounds [{bounds[0]}, {bounds[1]}], "
                         f"got range [{lo:.4g}, {hi:.4g}]" + range_hint(lo, hi, bounds))
    return n


def check_labels(arg: str, y: object, n: int, num_classes: int | None = None) -> torch.Tensor:
    """Check a label vector: an integer tensor of shape (n,), values in [0, num_classes)."""
    if y is None and arg == "y":  # (ART attacks the model's predictions when no labels are given)
        raise TypeError("y: expected a torch.Tensor of int64 labels, got None; to attack the model's own "
                        "predictions, as ART does without labels, pass model(x).argmax(1)")
    v = "y" if arg == "data" else arg  # (the name the hints use for the labels)
    if isinstance(y, np.ndarray):  # (ART's labels)
        y = array_tensor(v, y, "class indices (labels in the model's class order)")
    if not isinstance(y, torch.Tensor):
        hint = (f"; torch.full(({n},), {v})" if isinstance(y, int) and not isinstance(y, bool)
                else f"; torch.tensor({v})" if isinstance(y, (list, tuple)) else "")
        raise TypeError(f"{arg}: expected a torch.Tensor of int64 labels, got {type(y).__name__}{hint}")
    if y.dim() == 2 and y.shape[0] == n and y.shape[1] > 1:
        y = _one_hot_indices(arg, v, y)
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        whole = y.is_floating_point() and bool((y == y.round()).all())
        raise ValueError(f"{arg}: expected integer labels, got dtype {y.dtype}"
                         + (f" ({v}.long() if they are class indices)" if whole else ""))
    if y.shape != (n,):
        hint = f" ({v}.view(-1))" if y.numel() == n and n > 0 else ""
        raise ValueError(f"{arg}: expected shape ({n},) to match the batch, got {tuple(y.shape)}{hint}")
    if num_classes is not None and n > 0 and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(
            f"{arg}: labels must be in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    return y.long()


def _one_hot_indices(arg: str, v: str, y: torch.Tensor) -> torch.Tensor:
    """The class indices of one-hot rows (ART's and Keras' labels); any other N×K matrix fails in one line."""
    binary = (y == 0) | (y == 1)
    if bool(binary.all()) and bool((y.sum(dim=1) == 1).all()):
        return y.argmax(dim=1)
    raise ValueError(f"{arg}: expected class indices (N) or one-hot rows (N×K), got an N×K matrix of "
                     f"{y.shape[1]} columns that is not one-hot; scores or soft labels: {v}.argmax(1)")


@dataclass(frozen=True)
class Range:
    """A numeric range for a parameter, read from its annotation (``Annotated[int, Range(1)]``).

    Args:
        low: Smallest allowed value (``None``: no lower bound).
        high: Largest allowed value (``None``: no upper bound).
        open_low: Whether ``low`` itself is excluded.
    """

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def describe(self) -> str:
        """The range in words, e.g. ``">= 1"`` or ``"in (0, 1]"``."""
        if self.high is None:
            return f"{'>' if self.open_low else '>='} {self.low:g}" if self.low is not None else "any"
        left = "(" if self.open_low else "["
        return f"in {left}{self.low:g}, {self.high:g}]"

    def check(self, arg: str, value: float, noun: str) -> None:
        """Raise a one-line ValueError when ``value`` lies outside the range."""
        low_bad = self.low is not None and (value <= self.low if self.open_low else value < self.low)
        if low_bad or (self.high is not None and value > self.high):
            raise ValueError(f"{arg}: expected {noun} {self.describe()}, got {value!r}")


PositiveInt = Annotated[int, Range(1)]
NonNegInt = Annotated[int, Range(0)]
NonNegFloat = Annotated[float, Range(0.0)]
PositiveFloat = Annotated[float, Range(0.0, open_low=True)]
Fraction = Annotated[float, Range(0.0, 1.0, open_low=True)]


def _describe(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Annotated:
        return _describe(get_args(hint)[0])
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(h) for h in get_args(hint))
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    names = {type(None): "None", int: "an integer", float: "a number", bool: "True or False", str: "a string",
             collections.abc.Callable: "a callable"}
    if hint in names:
        return names[hint]
    return getattr(hint, "__name__", str(hint))


def plain_number(hint: Any, value: object) -> object:
    """``value`` as the Python number it holds where ``hint`` asks for a number and it is a NumPy scalar or 0-d tensor.

    A sweep over ``np.arange`` or ``torch.linspace`` hands parameters as ``np.int64``, ``np.float32``
    or 0-d tensors; the attack gets ``int`` / ``float`` (which results and records store as JSON).
    Anything else, and anything where ``hint`` asks for no number, is returned as it is.
    """
    if not _wants_number(hint):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()
    if (isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad
            and value.dtype != torch.bool and not value.is_complex()):
        return value.item()
    return value


def _wants_number(hint: Any) -> bool:
    if get_origin(hint) is Annotated:
        return _wants_number(get_args(hint)[0])
    if get_origin(hint) in (Union, types.UnionType):
        return any(_wants_number(option) for option in get_args(hint))
    return hint is int or hint is float or hint is bool


def check_param(arg: str, hint: Any, value: Any) -> None:
    """Check ``value`` against a parameter's type annotation: type, ``Literal`` choices, ``Range``.

    Understands ``int``, ``float``, ``bool``, ``str``, classes, callables, unions of them (``X | None``,
    ``Literal[...] | SomeClass``: where the value has the type of exactly one option, that option's
    error is raised), ``Literal[...]`` and ``Annotated[..., Range(...)]``; anything else (``Any``) passes.
    Raises a one-line ``TypeError`` (wrong type) or ``ValueError`` (wrong value).
    """
    origin = get_origin(hint)
    if origin is Annotated:
        base, *extras = get_args(hint)
        check_param(arg, base, value)
        noun = "an integer" if base is int else "a number"
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(arg, value, noun)
        return
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return
        errors: list[Exception] = []
        near: list[Exception] = []  # errors of options whose type the value has (a wrong value, not a wrong type)
        for option in (o for o in options if o is not type(None)):
            try:
                check_param(arg, option, value)
                return
            except (TypeError, ValueError) as e:
                errors.append(e)
                if _type_fits(option, value) and isinstance(e, ValueError):
                    near.append(e)
        if len(errors) == 1 or len(near) == 1:
            raise (near or errors)[0]
        raise TypeError(f"{arg}: expected {_describe(hint)}, got {value!r}"[:200])
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ValueError(
                f"{arg}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}"
                f"{suggest(str(value), [str(c) for c in choices])}"
            )
        return
    _check_plain(arg, hint, origin, value)


def _type_fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` has the type of a Union's option (a ``Literal`` of strings: is a string).

    In ``Literal["ce", "dlr"] | TaskLoss`` a misspelt ``"cee"`` fails the Literal by value and the
    class by type; the Literal's error (with its close names) is the one worth showing.
    """
    if get_origin(hint) is Annotated:
        return _type_fits(get_args(hint)[0], value)
    if get_origin(hint) is Literal:
        return any(type(c) is type(value) for c in get_args(hint))
    return True


def _check_plain(arg: str, hint: Any, origin: Any, value: Any) -> None:
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:  # (NumPy integers too: a sweep over np.arange)
        ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    elif hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
        if ok and math.isnan(value):
            raise ValueError(f"{arg}: expected a number, got nan")
    elif origin is collections.abc.Callable or hint is collections.abc.Callable:
        ok = callable(value)
    elif isinstance(hint, type):
        ok = isinstance(value, hint)
    else:
        return
    if not ok:
        raise TypeError(f"{arg}: expected {_describe(hint)}, got {type(value).__name__} {value!r}"[:200])
