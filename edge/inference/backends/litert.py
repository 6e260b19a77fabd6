from edge.inference.backends.base import Interpreter


class Backend(Interpreter):
    name = "litert"

    def _make(self, model_path, num_threads):
        from ai_edge_litert import interpreter as litert  # ImportError when not installed

        kw = {}
        if self.kernels == "builtin":
            kw["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        return litert.Interpreter(model_path=model_path, num_threads=num_threads, **kw)
