from .base import Interpreter


class Backend(Interpreter):
    name = "litert"

    def _make(self, model_path, num_threads):
        from ai_edge_litert.interpreter import Interpreter as LiteRT  # ImportError when not installed

        return LiteRT(model_path=model_path, num_threads=num_threads)
