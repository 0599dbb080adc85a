"""Network definitions (the Res16UNet family) built on the sparse backend interface."""

from lgseg.models.res16unet import VARIANTS, Res16UNet, parameter_count

__all__ = ["VARIANTS", "Res16UNet", "parameter_count"]
