"""The benchmark of MECCA against its baselines (issue 8): the evaluation protocol of
MECCA.md §6, the report, and ``mecca bench`` (training budgets: :mod:`mecca_rllib.budget`).

Evaluating your own method: subclass :class:`mecca_rllib.baselines.Segmenter` (map the
observation ``(3, D, H, W)`` = (image, p, hint) to a new ``p`` ``(D, H, W)``), then

    from mecca_rllib.bench import Protocol, evaluate_method
    from mecca_rllib.bench.report import write_report

    result = evaluate_method(my_segmenter, test_source, Protocol())
    write_report([result, *other_results], "bench_out", {"title": "my benchmark"})

To have ``mecca bench`` train it under the common budget too, add a
:class:`mecca_rllib.bench.methods.MethodSpec` to ``mecca_rllib.bench.methods.METHODS``.
"""
from mecca_rllib.bench.protocol import MethodResult, Protocol, evaluate_method, mean_std

__all__ = [
    "MethodResult",
    "Protocol",
    "evaluate_method",
    "mean_std",
]
