"""Chinese inverse text normalization (ITN) → the FSTs the Triton `itn` stage runs.

Built with WeTextProcessing (pynini grammars; chosen over `wetext` by tests/test_itn.py's table, see
README "Inverse text normalization"). Nothing is downloaded: the grammars ship with the package, and
compiling them takes a few seconds, so this runs at export (or image-build) time, never per request.

Written into out_dir:
  zh_itn_tagger.fst, zh_itn_verbalizer.fst   the compiled grammars (WeTextProcessing's file names)
  itn.json   the package, its version and the grammar flags the FSTs were built with
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PACKAGE = "WeTextProcessing"
ITN_0_TO_9 = "+enable_0_to_9"  # model name suffix (`export --itn-enable-0-to-9`): that grammar flag on
FST_FILES = ("zh_itn_tagger.fst", "zh_itn_verbalizer.fst")
# Grammar flags (they are compiled into the FSTs). enable_0_to_9 stays off: with it single digits
# become numbers (三点 → 3点, 第三名 → 第3名) but idioms break (一心一意 → 1心1意; tests/test_itn.py).
# remove_interjections is off: ITN changes numbers only, it never drops words the ASR recognised.
GRAMMAR = {"enable_0_to_9": False, "remove_interjections": False, "enable_standalone_number": True,
           "enable_million": False}


def package_dir() -> Path:
    import itn

    return Path(itn.__file__).resolve().parent


def build_normalizer(cache_dir: Path, overwrite: bool, **grammar):
    from itn.chinese.inverse_normalizer import InverseNormalizer

    return InverseNormalizer(cache_dir=str(cache_dir), overwrite_cache=overwrite, **{**GRAMMAR, **grammar})


def grammar_for(model: str) -> dict:
    """The grammar flags a stage model name asks for (wetextprocessing[+enable_0_to_9])."""
    return {**GRAMMAR, "enable_0_to_9": model.endswith(ITN_0_TO_9)}


def export_itn(out_dir: Path, **grammar) -> dict:
    """Compile the grammars into out_dir; returns {"files": [...], "config": itn.json's content}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    flags = {**GRAMMAR, **grammar}
    with tempfile.TemporaryDirectory() as tmp:
        build_normalizer(Path(tmp), overwrite=True, **flags)
        for name in FST_FILES:
            shutil.copyfile(Path(tmp) / name, out_dir / name)
    config = {"format": 1, "package": PACKAGE, "version": metadata.version(PACKAGE), "language": "zh",
              "grammar": flags, "files": list(FST_FILES)}
    (out_dir / "itn.json").write_text(json.dumps(config, indent=2))
    log.info("itn: %s %s FSTs written to %s", PACKAGE, config["version"], out_dir)
    return {"files": [*FST_FILES, "itn.json"], "config": config}
