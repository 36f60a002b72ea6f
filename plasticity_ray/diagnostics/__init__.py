"""Network diagnostics of §V-B and beyond, one module per family: weights (magnitude, distance,
matrix ranks), dormant units (activation-based, Eqs. 3-4, and gradient-based GraMa), attention
entropy (lazy and collapsed heads, Eq. 5)."""
