"""The instance-aware multi-person network (seed 004, DCVL-3D/InstanceHMR_release on ROMP), family ``scene``."""
