"""Triton python backend for the `itn` stage: Chinese inverse text normalization on CPU.

TEXT (UTF-8 string [1] per batch item) → TEXT (normalized). The FSTs are the WeTextProcessing grammars
compiled at export time (funasr_triton_export.exporters.itn writes them beside this file); loading them
takes about a second, once per instance in `initialize`; nothing is compiled per request.
"""
from __future__ import annotations

import json
import logging

import numpy as np
import triton_python_backend_utils as pb_utils

from funasr_triton_models.stage import StageInputError, answer_each, input_array, int_param, model_config, strings

FST_FILES = ("zh_itn_tagger.fst", "zh_itn_verbalizer.fst")


def normalize_keep_space(normalizer, text: str) -> str:
    """ITN of the text between its leading and trailing whitespace (kept as they are)."""
    core = text.strip()
    if not core:
        return text
    start = text.index(core[0])
    return text[:start] + normalizer.normalize(core) + text[start + len(core):]


class TritonPythonModel:
    def initialize(self, args):
        config, version_dir = model_config(args, {"TEXT": "TYPE_STRING"}, {"TEXT": "TYPE_STRING"})
        self.max_chars = int_param(config, "max_text_chars", 4096, minimum=1)
        missing = [n for n in (*FST_FILES, "itn.json") if not (version_dir / n).is_file()]
        if missing:
            raise pb_utils.TritonModelException(
                f"itn: {version_dir} lacks {missing}: export the `itn` stage (funasr-triton export --stages itn)")
        meta = json.loads((version_dir / "itn.json").read_text())
        try:
            from itn.chinese.inverse_normalizer import InverseNormalizer
        except ImportError as e:
            raise pb_utils.TritonModelException(
                f"itn: WeTextProcessing (and pynini) must be installed where Triton's python models run "
                f"(funasr-triton[models]): {e}") from e
        logging.getLogger("WETEXT").setLevel(logging.WARNING)
        # an existing tagger/verbalizer pair is read, not rebuilt (overwrite_cache=False)
        self.normalizer = InverseNormalizer(cache_dir=str(version_dir), overwrite_cache=False,
                                            **{k: v for k, v in meta.get("grammar", {}).items()})
        if self.normalizer.normalize("百分之五十") != "50%":
            raise pb_utils.TritonModelException(f"itn: the FSTs in {version_dir} do not normalize 百分之五十 to 50%")

    def _one(self, request):
        texts = strings(input_array(request, "TEXT"))
        for t in texts:
            if len(t) > self.max_chars:
                raise StageInputError(f"TEXT is {len(t)} characters; at most {self.max_chars} (max_text_chars)")
        out = []
        for t in texts:
            try:
                out.append(normalize_keep_space(self.normalizer, t))
            except Exception as e:  # noqa: BLE001 - text the grammars cannot parse stays as it is
                pb_utils.Logger.log_warn(f"itn: left unchanged ({e!r}): {t[:80]!r}")
                out.append(t)
        shape = input_array(request, "TEXT").shape
        array = np.array([s.encode("utf-8") for s in out], dtype=object).reshape(shape)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("TEXT", array)])

    def execute(self, requests):
        return answer_each("itn", requests, self._one)
