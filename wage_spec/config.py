"""The WAGE bit widths and rounding modes of a run, shared by both frameworks' models and training."""

from __future__ import annotations

from dataclasses import dataclass

from wage_spec.validation import check_bits, check_mode, draws_randomness


@dataclass(frozen=True)
class WAGEConfig:
    """Bits and rounding modes for Weights, Activations, Gradients and Errors.

    The default is the paper's 2-8-8-8 with weights and activations rounded to nearest and gradients
    and errors stochastically (docs/contract.md §3). ``factor`` is the initializer's variance factor, 1.0 as in
    the paper's models; ``wage_jax.models``, ``wage_torch.models`` and ``wage-train`` pass it to every layer.
    The layers and initializers on their own (``WAGEDense``/``WAGEConv``, ``wage_init``, ``wage_init_``)
    default to 2.0, the documented torch ``wage_init_``'s.
    """

    bits_W: int = 2
    bits_A: int = 8
    bits_G: int = 8
    bits_E: int = 8
    W_mode: str = "nearest"
    A_mode: str = "nearest"
    G_mode: str = "stochastic"
    E_mode: str = "stochastic"
    factor: float = 1.0

    def __post_init__(self) -> None:
        check_bits(self.bits_W, "bits_W")
        check_bits(self.bits_G, "bits_G")
        check_bits(self.bits_A, "bits_A", allow_full_precision=True)
        check_bits(self.bits_E, "bits_E", allow_full_precision=True)
        for name in ("W_mode", "A_mode", "G_mode", "E_mode"):
            check_mode(getattr(self, name), name)

    @classmethod
    def nearest(cls, **overrides) -> WAGEConfig:
        """Every rounding mode "nearest" (deterministic: the setting of the trajectory parity tests)."""
        modes = dict(W_mode="nearest", A_mode="nearest", G_mode="nearest", E_mode="nearest")
        return cls(**{**modes, **overrides})

    @property
    def stochastic(self) -> bool:
        """Whether any quantizer draws random numbers."""
        return any(
            draws_randomness(mode, bits)
            for mode, bits in (
                (self.W_mode, self.bits_W),
                (self.A_mode, self.bits_A),
                (self.G_mode, self.bits_G),
                (self.E_mode, self.bits_E),
            )
        )
