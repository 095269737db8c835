"""One module per backend, each with `load(path, backend, *, call, threads, ort_names) -> Model`.

`stylert.runtime.open_model` chooses among them and imports only the one it uses, so a missing
optional library (openvino, tensorrt) costs nothing until it is asked for.
"""
