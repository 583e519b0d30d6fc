"""The ComfyUI layer of the pack: one module per node family, ``catalog`` lists them all.

Deliberately empty: ``python -m nodes`` (see ``__main__``) imports this package on its own, where
the relative imports of the node modules (``..ffc``) would not resolve.
"""
