#!/usr/bin/env bash
# Build the interpreter the pyannote speaker-embedding exporter runs in: BASE_VENV/pyannote.
#   usage: export/pyannote-env.sh BASE_VENV
# A venv without packages of its own except export/requirements-pyannote.txt, layered on BASE_VENV
# through a .pth file (so torch, numpy, onnx and this project come from BASE_VENV, unchanged).
# pyannote.audio 3.x needs torchaudio < 2.9; PyPI only has CUDA builds of it, pinned to torch 2.8.
# When they cannot load next to BASE_VENV's torch, torchaudio's compiled extensions are renamed
# *.so.disabled: torchaudio then runs its pure-PyTorch code, which is all the exporter uses.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=$(cd "${1:?usage: $0 BASE_VENV}" && pwd)
env="$base/pyannote"
python="$base/bin/python"

rm -rf "$env"
"$python" -m venv --without-pip "$env"
base_site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
env_site=$("$env/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "import site; site.addsitedir('$base_site')" > "$env_site/_funasr_triton_base.pth"

echo "pyannote-env: installing export/requirements-pyannote.txt into $env" >&2
"$env/bin/python" -m pip install -q --no-deps --no-warn-conflicts -r "$here/requirements-pyannote.txt"

if ! "$env/bin/python" -c 'import torchaudio' 2>/dev/null; then
  echo "pyannote-env: torchaudio's compiled extensions do not load with this torch; disabling them" >&2
  find "$env_site/torchaudio/lib" "$env_site/torio/lib" -name '*.so' -exec mv {} {}.disabled \; 2>/dev/null || true
fi

# every requirement met except the torch pin of the torchaudio wheel (see above)
problems=$("$env/bin/python" -m pip check 2>&1 | grep -v -e '^torchaudio .* has requirement torch==' -e '^No broken' || true)
if [ -n "$problems" ]; then
  echo "pyannote-env: unmet requirements:" >&2; echo "$problems" >&2; exit 1
fi
"$env/bin/python" -W ignore -c '
import torchaudio.compliance.kaldi, torch
from pyannote.audio import Model, __version__
from pyannote.audio.models.embedding import WeSpeakerResNet34
print(f"pyannote-env: pyannote.audio {__version__}, torch {torch.__version__}, torchaudio {torchaudio.__version__} (python side)")
' >&2
