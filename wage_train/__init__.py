"""The ``wage-train`` command and its reusable pieces: data readers, verified downloads (``wage-data``), run
configuration, the JAX and torch runners, checkpoints, metrics and plots, and the torch<->Flax weight conversion.

Each framework is imported only when a run asks for it: a JAX run needs neither torch nor qtorch. Needs the
``train`` extra (scikit-learn, scipy, tqdm, matplotlib, orbax-checkpoint, pooch).
"""
