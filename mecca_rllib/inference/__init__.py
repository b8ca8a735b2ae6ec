"""Fast inference for interactive sessions: backends (torch fp32/bf16, OpenVINO) and
deployable exports that load without Ray (``net``, ``backends``, ``export``)."""
from mecca_rllib.inference.backends import (BACKENDS, CLI_BACKENDS, Backend, available_backends,
                                            bf16_supported, make_backend, openvino_installed,
                                            resolve_backend)
from mecca_rllib.inference.export import (EXPORT_FORMATS, is_export, load_export, load_inference_module,
                                          read_manifest, save_export)
from mecca_rllib.inference.net import InferenceNet

__all__ = ["BACKENDS", "CLI_BACKENDS", "EXPORT_FORMATS", "Backend", "InferenceNet", "available_backends",
           "bf16_supported", "is_export", "load_export", "load_inference_module", "make_backend",
           "openvino_installed", "read_manifest", "resolve_backend", "save_export"]
