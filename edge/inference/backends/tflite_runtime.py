from edge.inference.backends.base import Interpreter


class Backend(Interpreter):
    name = "tflite_runtime"

    def _make(self, model_path, num_threads):
        from tflite_runtime.interpreter import Interpreter as TFLite  # ImportError when not installed

        # tflite_runtime 2.14 runs int8 models on its builtin kernels whatever is asked (its XNNPACK
        # delegate takes float graphs only), so both settings of `kernels` give the builtin answers.
        self.kernels = "builtin"
        return TFLite(model_path=model_path, num_threads=num_threads)
