"""What the model families share: the parameter mapping helpers and the common nn layers."""
