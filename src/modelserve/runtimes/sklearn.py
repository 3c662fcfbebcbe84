"""scikit-learn estimators saved with joblib.

With no config.yaml the model takes one FP64 input ``input`` of shape [-1, n_features_in_] and gives
``predict`` and, for estimators that have it, ``predict_proba``, the names MLServer's users know.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelserve.errors import ModelLoadError
from modelserve.runtimes.base import Arrays, Runtime, Signature
from modelserve.types import TensorSpec, datatype_of

_METHODS = ("predict", "predict_proba")


class SklearnRuntime(Runtime):
    """Calls the estimator's ``predict``/``predict_proba`` for the outputs the model declares."""

    estimator: Any = None

    def load(self) -> Signature:
        if not self.path.exists():
            raise ModelLoadError(f"model file not found: {self.path}")
        try:
            import joblib
        except ImportError as exc:
            raise ModelLoadError("platform sklearn needs scikit-learn: pip install 'modelserve[sklearn]'") from exc
        try:
            self.estimator = joblib.load(self.path)
        except Exception as exc:  # unpickling raises whatever the corrupt bytes provoke
            raise ModelLoadError(f"{self.path}: not a loadable joblib file: {exc}") from exc
        if not hasattr(self.estimator, "predict"):
            raise ModelLoadError(f"{self.path}: {type(self.estimator).__name__} has no predict method")
        features = getattr(self.estimator, "n_features_in_", -1)
        self._input_name = self.config.inputs[0].name if self.config.inputs else "input"
        inputs = (TensorSpec(self._input_name, "FP64", (-1, int(features))),)
        outputs = tuple(self._output_spec(m) for m in _METHODS if hasattr(self.estimator, m))
        declared = [t.name for t in self.config.outputs] or [o.name for o in outputs]
        unknown = [n for n in declared if n not in _METHODS or not hasattr(self.estimator, n)]
        if unknown:
            raise ModelLoadError(
                f"{self.path}: outputs {', '.join(unknown)} are not methods of {type(self.estimator).__name__}; "
                f"name outputs after its methods ({', '.join(o.name for o in outputs)})"
            )
        self._methods = declared
        return Signature(inputs=inputs, outputs=outputs, batched=True)

    def _output_spec(self, method: str) -> TensorSpec:
        classes = getattr(self.estimator, "classes_", None)
        if method == "predict_proba":
            return TensorSpec(method, "FP64", (-1, len(classes) if classes is not None else -1))
        datatype = datatype_of(np.asarray(classes).dtype) if classes is not None else "FP64"
        return TensorSpec(method, datatype, (-1,))

    def infer(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        features = inputs[self._input_name]
        return {m: np.asarray(getattr(self.estimator, m)(features)) for m in self._methods}

    def memory_bytes(self) -> int:
        return self.path.stat().st_size if self.estimator is not None else 0

    def unload(self) -> None:
        self.estimator = None
