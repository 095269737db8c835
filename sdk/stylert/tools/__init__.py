"""Tools around the models: `stylert bench`, graph cost, int8 quantization, TensorRT engine builds,
and synthetic degradations for restoration benchmarks."""
