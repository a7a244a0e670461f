"""Configs: default.py (every field, one comment each) and the paper's 8 variants."""

# The paper's 8 variants, one file each: configs/<name>.py (encoder/decoder, cell, recurrent kernel).
VARIANTS = tuple(f"{e}_{c}_k{k}" for e in ("simple", "residual") for c in ("gru", "lstm")
                 for k in (1, 3))
