"""Loading models kept in a cas store into MLX.

Import this only where MLX is used: it imports ``mlx.core``.

    from cas.mlx import load_weights, load_config, model_path
    weights = load_weights("mini-coder")          # newest version
    weights = load_weights("mini-coder@1", keys=["lm_head.weight"])
"""

from .loader import load_config, load_weights, model_path, open_model

__all__ = ["load_config", "load_weights", "model_path", "open_model"]
