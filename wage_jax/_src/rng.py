"""The name of the Flax rng stream that WAGE's stochastic quantizers draw from, shared by linen and nnx."""

RNG_STREAM = "wage"
