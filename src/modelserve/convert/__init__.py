"""``modelserve convert``: PyTorch or ONNX models to ONNX (FP32, FP16, INT8) or TensorRT engines, checked
against their source and written into a model repository."""
