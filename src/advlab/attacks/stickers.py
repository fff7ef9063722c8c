"""Stickers on a sign: masks, pasting, rendering and the non-printability score (used by :mod:`advlab.attacks.rp2`).

A sticker is a colour image and a mask on the sign's S×S pixel grid: where the mask is 1 the
sticker's colour replaces the sign's (a printed sticker covers what is under it); the sign's alpha
(its shape) is unchanged. :data:`BARS` is the fixed two-bar mask of the paper's "abstract art"
look; :func:`block_mask` builds a mask from S/b × S/b blocks (RP2's found masks).

Non-printability (Sharif et al. 2016, used by Eykholt et al. 2018) scores a colour by the product
of its distances to every colour of a fixed printable palette: zero exactly at a printable colour.
With a palette of K = 27 colours in [0, 1] that product is of order 0.5^27 and its gradient
vanishes, so :func:`nps` scores a colour by its distance to the *nearest* printable colour (the
form of Thys et al. 2019): the same zeros, a gradient of constant size towards the nearest
printable colour; a sticker's score is the mean over its pixels. The palette :data:`PRINTABLE` is
the 3×3×3 grid of levels {0.1, 0.5, 0.9} per channel: a printer's reachable gamut, short of the
pure extremes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from advlab._checks import check_positive_int
from advlab.physical import Conditions, render

__all__ = ["BARS", "PRINTABLE", "Rect", "Sticker", "block_mask", "face_blocks", "mask_share", "nps", "render_sticker",
           "sticker_mask", "with_sticker"]

Rect = tuple[int, int, int, int]  # (top, bottom, left, right), rows top:bottom, columns left:right

# Two bars above and below the word STOP on the 64×64 canonical sign (9.38 % of the stop sign's area).
BARS: tuple[Rect, ...] = ((14, 18, 12, 52), (46, 50, 12, 52))
_LEVELS = torch.tensor([0.1, 0.5, 0.9])
PRINTABLE = torch.cartesian_prod(_LEVELS, _LEVELS, _LEVELS)  # 27×3, the printable palette


@dataclass(frozen=True)
class Sticker:
    """A sticker for a sign: its colours (3×S×S, zero outside the mask) and its mask (S×S, 1 where it is).

    Attributes:
        image: The sticker's colours in [0, 1] where ``mask`` is 1, zero elsewhere.
        mask: Where the sticker is, in the sign's S×S pixel grid (0 or 1).
        history: The share of each step's EOT views read as the target (empty if not recorded).
    """

    image: torch.Tensor
    mask: torch.Tensor
    history: tuple[float, ...] = ()

    def apply(self, sign: torch.Tensor) -> torch.Tensor:
        """``sign`` (4×S×S or N×4×S×S RGBA) with the sticker pasted on (its alpha unchanged)."""
        return with_sticker(sign, self.image, self.mask)

    def share(self, sign: torch.Tensor) -> float:
        """The share of ``sign``'s area (4×S×S RGBA: its alpha) the sticker covers."""
        return mask_share(self.mask, sign[3])


def sticker_mask(rects: Sequence[Rect] = BARS, size: int = 64) -> torch.Tensor:
    """A size×size float mask, 1 inside the rectangles ``(top, bottom, left, right)`` (end-exclusive)."""
    check_positive_int("size", size)
    mask = torch.zeros(size, size)
    for top, bottom, left, right in rects:
        if not (0 <= top < bottom <= size and 0 <= left < right <= size):
            raise ValueError(f"mask: rectangle (top, bottom, left, right) = {(top, bottom, left, right)} does not "
                             f"lie inside the {size}×{size} sign")
        mask[top:bottom, left:right] = 1.0
    return mask


def face_blocks(alpha: torch.Tensor, block: int) -> torch.Tensor:
    """Bool (S/b)×(S/b): the b×b blocks lying wholly on the sign's face (alpha > 0.99 in every pixel)."""
    check_positive_int("block", block)
    if alpha.shape[-1] % block or alpha.shape[-2] % block:
        raise ValueError(f"block: must divide the sign's size {tuple(alpha.shape)}, got {block}")
    return F.avg_pool2d((alpha > 0.99).float()[None, None], block)[0, 0] == 1


def block_mask(chosen: torch.Tensor, block: int) -> torch.Tensor:
    """An S×S mask from a bool (S/b)×(S/b) choice of b×b blocks."""
    return chosen.float().repeat_interleave(block, 0).repeat_interleave(block, 1)


def mask_share(mask: torch.Tensor, alpha: torch.Tensor) -> float:
    """The share of the sign's area (Σ alpha) that the mask covers on the sign (Σ mask·alpha)."""
    return float((mask * alpha).sum() / alpha.sum())


def with_sticker(sign: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``sign`` (…×4×S×S RGBA) with its colour replaced by ``image`` (…×3×S×S) where ``mask`` is 1; differentiable."""
    if sign.shape[-3] != 4 or sign.shape[-2:] != mask.shape or image.shape[-2:] != mask.shape:
        raise ValueError(f"sign/sticker: expected an RGBA sign …×4×S×S and a sticker and mask of its S×S, got sign "
                         f"{tuple(sign.shape)}, sticker {tuple(image.shape)}, mask {tuple(mask.shape)}")
    rgb = sign[..., :3, :, :] * (1 - mask) + image * mask
    return torch.cat([rgb, sign[..., 3:, :, :].expand(*rgb.shape[:-3], 1, *mask.shape)], dim=-3)


def render_sticker(sticker: Sticker, sign: torch.Tensor, backgrounds: torch.Tensor, cond: Conditions, *,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """The stickered ``sign`` (4×S×S) seen at ``cond`` in front of ``backgrounds`` (N×3×H×W)."""
    return render(sticker.apply(sign)[None], backgrounds, cond, generator=generator)


def nps(colours: torch.Tensor, palette: torch.Tensor = PRINTABLE) -> torch.Tensor:
    """Mean non-printability of ``colours`` (P×3): each one's distance to the nearest palette colour."""
    d2 = ((colours[:, None, :] - palette.to(colours)[None]) ** 2).sum(dim=2)  # P×K
    return torch.sqrt(d2.min(dim=1).values + 1e-12).mean()
