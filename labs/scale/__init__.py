"""Scale inputs of any size and measured runs of the bank's bucketed jobs on them (`make bench`).

inputs   `scale_inputs` / `write_scale_inputs`: a bank extract and the vendor's keyed users,
         streamed chunk by chunk, with the world's phone rules (`labs.world.phones`)
store    the bank's encrypted store once that extract is matched (written with the inputs):
         what the feature build reads
run      `run_scale` / `measure_scale`: the bank's stages timed on one engine, the peak
         memory of the run's whole process tree
"""

from labs.scale.inputs import (
    ScaleConfig,
    ScaleInputs,
    ScaleSummary,
    scale_inputs,
    write_scale_inputs,
)
from labs.scale.run import STAGES, ScaleRun, measure_scale, run_scale

__all__ = [
    "STAGES",
    "ScaleConfig",
    "ScaleInputs",
    "ScaleRun",
    "ScaleSummary",
    "measure_scale",
    "run_scale",
    "scale_inputs",
    "write_scale_inputs",
]
