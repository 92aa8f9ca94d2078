"""CPU fast paths of the model, numerically equal to the plain torch layers they replace."""
