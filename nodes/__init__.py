"""The ComfyUI layer of the pack: one module per node family, ``catalog`` lists them all."""
