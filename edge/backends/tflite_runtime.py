from .base import Interpreter


class Backend(Interpreter):
    name = "tflite_runtime"

    def _make(self, model_path, num_threads):
        from tflite_runtime.interpreter import Interpreter as TFLite  # ImportError when not installed

        return TFLite(model_path=model_path, num_threads=num_threads)
