"""Measured anomaly detection: causal detectors over Polars frames, scored against ground truth.

`detect(readings, config)` adds score / is_anomaly / severity / detector to every reading;
`scorecard.score(anomalies, faults, ...)` measures those flags against the simulator's faults.
"""

from ot_pipeline.detection.combiner import DETECTORS, SEVERITIES
from ot_pipeline.detection.config import DetectionConfig, DetectorSettings
from ot_pipeline.detection.engine import detect

__all__ = ["DETECTORS", "SEVERITIES", "DetectionConfig", "DetectorSettings", "detect"]
