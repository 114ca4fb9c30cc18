"""FSMN-VAD offline pipeline in numpy + onnxruntime: a port of funasr 1.4.16.

Parity target: ``AutoModel(model=<fsmn-vad dir>).generate(input=wav)[0]["value"]``, i.e.
``funasr/models/fsmn_vad_streaming/model.py`` (``FsmnVADStreaming.inference``) driving
``funasr/frontends/wav_frontend.py`` (``WavFrontendOnline``) in offline mode. Nothing here
imports torch or funasr; the Triton python backend (``model_repository/vad/1/model.py``) is a thin
wrapper around :class:`FsmnVad`. The frontend (``WavFrontendOnline``) is ``features.OnlineFrontend``.

What funasr 1.4.16 does offline, and what this module therefore reproduces:

* The waveform is cut into ``chunk_size`` (default 60000 ms) chunks. Every chunk goes through
  the *streaming* frontend (fbank → LFR with a splice cache → CMVN), the FSMN encoder with its
  four carried caches, and the E2E state machine; only the last chunk is ``is_final``.
  Per-chunk frame counts matter (the last frame of the last chunk is the only "final frame"),
  so the chunking is replicated exactly rather than computing everything in one pass.
* **Dynamic end silence** (on unless the caller overrides ``max_end_silence_time``): before
  each chunk the end-silence threshold comes from ``DEFAULT_SILENCE_SCHEDULE`` according to how
  many chunk-milliseconds the current segment has lasted, and ``speech_noise_thres`` is forced
  to 0.5. With 60 s chunks that means 2000 ms end silence (not the config's 800 ms) within the
  first chunk of a segment, 200 ms in its second chunk and 100 ms after that.
* The per-frame decision and the state machine are ported method by method; each method names
  the funasr original in its docstring.

Deliberate differences (none changes a result funasr produces):

* The sample buffers funasr keeps only for its own sanity prints (``data_buf``/``data_buf_all``)
  are not kept; only the frame index they track (``data_buf_start_frame``) is.
* ``math.log(0)`` would raise in funasr's ``GetFrameState`` when the silence posterior is exactly
  0 or 1; here it is ``-inf`` and the frame is classified as funasr's comparison then implies.
* Input is converted to float32 (funasr computes in float64 when handed a float64 array).
* Output segments already returned are dropped from ``output_data_buf`` (all but the last), so
  the state of a long stream stays bounded (``E2EVad.trim``).

:class:`OfflineVadStream` runs the same offline loop incrementally (``accept`` pieces of any
size, ``finish``); :meth:`FsmnVad.segments` is that stream fed the whole file at once.
"""
from __future__ import annotations

import dataclasses
import json
import math
from enum import IntEnum
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .features import FrontendState, OnlineFrontend, load_cmvn

# Non-streaming schedule from funasr 1.4.16 fsmn_vad_streaming/model.py:
# (accumulated segment time in ms, end-silence threshold in ms).
DEFAULT_SILENCE_SCHEDULE: tuple[tuple[float, int], ...] = (
    (10000, 2000),
    (20000, 1000),
    (30000, 800),
    (40000, 600),
    (50000, 400),
    (60000, 200),
    (float("inf"), 100),
)
DEFAULT_CHUNK_SIZE_MS = 60000  # FsmnVADStreaming.inference: kwargs.get("chunk_size", 60000)
DYNAMIC_SPEECH_NOISE_THRES = 0.5  # forced by the dynamic schedule

# Keys that are not VADXOptions fields but steer FsmnVADStreaming.inference.
RUNTIME_OPTION_KEYS = ("dynamic_silence", "silence_schedule", "chunk_size")


class InvalidAudioError(ValueError):
    """The waveform handed to the VAD cannot be processed (shape, values or length)."""


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class VadOptions:
    """funasr ``VADXOptions`` (same field names and defaults)."""

    sample_rate: int = 16000
    detect_mode: int = 1  # VadDetectMode.kVadMutipleUtteranceDetectMode
    snr_mode: int = 0
    max_end_silence_time: int = 800
    max_start_silence_time: int = 3000
    do_start_point_detection: bool = True
    do_end_point_detection: bool = True
    window_size_ms: int = 200
    sil_to_speech_time_thres: int = 150
    speech_to_sil_time_thres: int = 150
    speech_2_noise_ratio: float = 1.0
    do_extend: int = 1
    lookback_time_start_point: int = 200
    lookahead_time_end_point: int = 100
    max_single_segment_time: int = 60000
    nn_eval_block_size: int = 8
    dcd_block_size: int = 4
    snr_thres: float = -100.0
    noise_frame_num_used_for_snr: int = 100
    decibel_thres: float = -100.0
    speech_noise_thres: float = 0.6
    fe_prior_thres: float = 1e-4
    silence_pdf_num: int = 1
    sil_pdf_ids: list = dataclasses.field(default_factory=lambda: [0])
    speech_noise_thresh_low: float = -0.1
    speech_noise_thresh_high: float = 0.3
    output_frame_probs: bool = False
    frame_in_ms: int = 10
    frame_length_ms: int = 25

    @classmethod
    def from_mapping(cls, conf: Mapping[str, Any]) -> "VadOptions":
        """Like ``VADXOptions(**conf)``: unknown keys are ignored, string values are parsed."""
        names = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {k: _coerce(names[k], v) for k, v in conf.items() if k in names}
        return cls(**kwargs)


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Parse a string option (Triton parameters are strings) by the field's type."""
    if not isinstance(value, str):
        return value
    try:
        if field.type == "bool":
            return _as_bool(field.name, value)
        if field.type == "int":
            return _number(value)
        if field.type == "float":
            return float(value)
        if field.type == "list":
            return [int(v) for v in json.loads(value)]
    except ValueError as exc:
        raise ValueError(f"option {field.name}={value!r} is not a valid {field.type}") from exc
    return value


def _number(value: Any) -> int | float:
    number = float(value)
    return int(number) if number.is_integer() else number


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, str):
        if value.strip().lower() in ("1", "true", "yes"):
            return True
        if value.strip().lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"option {name}={value!r} is not a boolean")
    return bool(value)


# --------------------------------------------------------------------------------------------
# Enums (funasr names)
# --------------------------------------------------------------------------------------------


class VadState(IntEnum):
    """funasr ``VadStateMachine``."""

    START_POINT_NOT_DETECTED = 1  # kVadInStateStartPointNotDetected
    IN_SPEECH_SEGMENT = 2  # kVadInStateInSpeechSegment
    END_POINT_DETECTED = 3  # kVadInStateEndPointDetected


class FrameState(IntEnum):
    """funasr ``FrameState``."""

    INVALID = -1
    SPEECH = 1
    SIL = 0


class AudioChange(IntEnum):
    """funasr ``AudioChangeState``."""

    SPEECH2SPEECH = 0
    SPEECH2SIL = 1
    SIL2SIL = 2
    SIL2SPEECH = 3
    NO_BEGIN = 4
    INVALID = 5


SINGLE_UTTERANCE_MODE = 0  # VadDetectMode.kVadSingleUtteranceDetectMode
MULTIPLE_UTTERANCE_MODE = 1  # VadDetectMode.kVadMutipleUtteranceDetectMode


# --------------------------------------------------------------------------------------------
# E2E VAD state machine
# --------------------------------------------------------------------------------------------


class WindowDetector:
    """funasr ``WindowDetector``: sliding vote over ``window_size_ms`` of frame decisions."""

    def __init__(self, window_size_ms: int, sil_to_speech_time: int, speech_to_sil_time: int,
                 frame_size_ms: int):
        self.win_size_frame = int(window_size_ms / frame_size_ms)
        self.sil_to_speech_frmcnt_thres = int(sil_to_speech_time / frame_size_ms)
        self.speech_to_sil_frmcnt_thres = int(speech_to_sil_time / frame_size_ms)
        self.reset()

    def reset(self) -> None:
        """``Reset``."""
        self.cur_win_pos = 0
        self.win_sum = 0
        self.win_state = [0] * self.win_size_frame
        self.pre_frame_state = FrameState.SIL

    def detect_one_frame(self, frame_state: FrameState) -> AudioChange:
        """``WindowDetector.DetectOneFrame``."""
        if frame_state == FrameState.SPEECH:
            cur = 1
        elif frame_state == FrameState.SIL:
            cur = 0
        else:
            return AudioChange.INVALID
        self.win_sum -= self.win_state[self.cur_win_pos]
        self.win_sum += cur
        self.win_state[self.cur_win_pos] = cur
        self.cur_win_pos = (self.cur_win_pos + 1) % self.win_size_frame

        if self.pre_frame_state == FrameState.SIL and self.win_sum >= self.sil_to_speech_frmcnt_thres:
            self.pre_frame_state = FrameState.SPEECH
            return AudioChange.SIL2SPEECH
        if self.pre_frame_state == FrameState.SPEECH and self.win_sum <= self.speech_to_sil_frmcnt_thres:
            self.pre_frame_state = FrameState.SIL
            return AudioChange.SPEECH2SIL
        if self.pre_frame_state == FrameState.SIL:
            return AudioChange.SIL2SIL
        return AudioChange.SPEECH2SPEECH


@dataclasses.dataclass
class SpeechSegment:
    """funasr ``E2EVadSpeechBufWithDoa`` without the sample buffer."""

    start_ms: int = 0
    end_ms: int = 0
    contain_seg_start_point: bool = False
    contain_seg_end_point: bool = False


def _log(x: float) -> float:
    return math.log(x) if x > 0.0 else -math.inf


class E2EVad:
    """funasr ``FsmnVADStreaming`` detection logic plus its per-call ``Stats`` (one per call).

    Frame indices are absolute; ``decibel``/``scores`` hold frames from ``last_drop_frames`` on,
    exactly as funasr's trimmed buffers do.
    """

    def __init__(self, opts: VadOptions, speech_noise_thres: float):
        self.opts = opts
        self.windows_detector = WindowDetector(
            opts.window_size_ms, opts.sil_to_speech_time_thres, opts.speech_to_sil_time_thres,
            opts.frame_in_ms,
        )
        if len(opts.sil_pdf_ids) != opts.silence_pdf_num or not opts.sil_pdf_ids:
            raise ValueError("sil_pdf_ids must list silence_pdf_num (>0) ids")
        self.sil_pdf_ids = list(opts.sil_pdf_ids)
        # Stats.__init__
        self.data_buf_start_frame = 0
        self.frm_cnt = 0
        self.latest_confirmed_speech_frame = 0
        self.lastest_confirmed_silence_frame = -1
        self.continous_silence_frame_count = 0
        self.vad_state_machine = VadState.START_POINT_NOT_DETECTED
        self.confirmed_start_frame = -1
        self.confirmed_end_frame = -1
        self.number_end_time_detected = 0
        self.sil_frame = 0
        self.noise_average_decibel = -100.0
        self.pre_end_silence_detected = False
        self.output_data_buf: list[SpeechSegment] = []
        self.output_data_buf_offset = 0
        self.max_end_sil_frame_cnt_thresh = opts.max_end_silence_time - opts.speech_to_sil_time_thres
        self.speech_noise_thres = speech_noise_thres
        self.max_time_out = False
        self.decibel: list[float] = []
        self.scores = np.zeros((0, len(self.sil_pdf_ids)), dtype=np.float32)
        self.last_drop_frames = 0
        self.next_seg = True  # streaming output: the next start is still to be announced

    # -- per chunk ------------------------------------------------------------------------

    def forward(self, sil_scores: np.ndarray, waveform: np.ndarray, is_final: bool,
                streaming: bool = False) -> list[list[int]]:
        """``FsmnVADStreaming.forward``: the segments this chunk completed.

        ``sil_scores`` is the encoder posterior of the silence pdf(s), shape [T, len(sil_pdf_ids)].
        Non-streaming output is [[beg, end], ...]; streaming output (``is_streaming_input``) also
        announces a start as soon as it is confirmed: [beg, -1], later [-1, end] (or [beg, end]
        when both fall in one chunk).
        """
        n_frames = sil_scores.shape[0]
        if n_frames == 0:
            return []
        self.compute_decibel(waveform, n_frames)
        self.compute_scores(sil_scores)
        if not is_final:
            self.detect_common_frames(n_frames)
        else:
            self.detect_last_frames(n_frames)
        self.drop_cached_frames(self.data_buf_start_frame)

        segments = []
        for i in range(self.output_data_buf_offset, len(self.output_data_buf)):
            seg = self.output_data_buf[i]
            if streaming:
                if not seg.contain_seg_start_point:
                    continue
                if not self.next_seg and not seg.contain_seg_end_point:
                    continue
                start_ms = seg.start_ms if self.next_seg else -1
                if seg.contain_seg_end_point:
                    end_ms = seg.end_ms
                    self.next_seg = True
                    self.output_data_buf_offset += 1
                else:
                    end_ms = -1
                    self.next_seg = False
                segments.append([start_ms, end_ms])
                continue
            if not is_final and (not seg.contain_seg_start_point or not seg.contain_seg_end_point):
                continue
            segments.append([seg.start_ms, seg.end_ms])
            self.output_data_buf_offset += 1
        self.trim()
        return segments

    def trim(self) -> None:
        """Forget what no later frame can use, so the state does not grow with the audio.

        funasr keeps every output segment; only the entries from ``output_data_buf_offset`` on
        are read again, plus the last one (``pop_data_to_output_buf`` extends it and
        ``reset_detection`` reads its end; an empty list would open a new segment), so earlier
        entries are dropped. In single-utterance mode, once the end point is detected no frame is
        examined again, so the dB/score history is dropped as well.
        """
        done = min(self.output_data_buf_offset, len(self.output_data_buf) - 1)
        if done > 0:
            del self.output_data_buf[:done]
            self.output_data_buf_offset -= done
        if self.vad_state_machine == VadState.END_POINT_DETECTED:
            self.drop_cached_frames(self.frm_cnt)

    def compute_decibel(self, waveform: np.ndarray, frame_count: int) -> None:
        """``ComputeDecibel``: 10·log10(energy + 1e-6) per frame of the float waveform."""
        frame_sample_length = int(self.opts.frame_length_ms * self.opts.sample_rate / 1000)
        frame_shift_length = int(self.opts.frame_in_ms * self.opts.sample_rate / 1000)
        aligned = (frame_count - 1) * frame_shift_length + frame_sample_length
        if waveform.shape[0] != aligned:
            raise RuntimeError(
                f"VAD score frames and waveform samples are not aligned: expected {aligned}, "
                f"got {waveform.shape[0]}"
            )
        offsets = np.arange(0, waveform.shape[0] - frame_sample_length + 1, frame_shift_length)
        frames = waveform[offsets[:, np.newaxis] + np.arange(frame_sample_length)]
        decibel = 10 * np.log10(np.sum(np.square(frames), axis=1) + 0.000001)
        self.decibel.extend(decibel.tolist())

    def compute_scores(self, sil_scores: np.ndarray) -> None:
        """``ComputeScores`` (the encoder already ran; keep only the silence posteriors)."""
        self.frm_cnt += sil_scores.shape[0]
        self.scores = sil_scores if self.scores.shape[0] == 0 else np.concatenate((self.scores, sil_scores))

    def drop_cached_frames(self, drop_frames: int) -> None:
        """``DropCachedFrames``: forget dB/score history before an absolute frame."""
        if drop_frames > self.frm_cnt:
            raise RuntimeError(f"Cannot drop through frame {drop_frames}; only {self.frm_cnt} frames exist")
        real_drop_frames = drop_frames - self.last_drop_frames
        if real_drop_frames <= 0:
            return
        self.decibel = self.decibel[real_drop_frames:]
        self.scores = self.scores[real_drop_frames:].copy()  # a copy: a view would keep the dropped rows
        self.last_drop_frames = drop_frames

    def reset_detection(self) -> None:
        """``ResetDetection``: ready for the next utterance (multiple-utterance mode)."""
        self.continous_silence_frame_count = 0
        self.latest_confirmed_speech_frame = 0
        self.lastest_confirmed_silence_frame = -1
        self.confirmed_start_frame = -1
        self.confirmed_end_frame = -1
        self.vad_state_machine = VadState.START_POINT_NOT_DETECTED
        self.windows_detector.reset()
        self.sil_frame = 0
        if self.output_data_buf:
            assert self.output_data_buf[-1].contain_seg_end_point
            self.drop_cached_frames(int(self.output_data_buf[-1].end_ms / self.opts.frame_in_ms))

    # -- frame loop -----------------------------------------------------------------------

    def detect_common_frames(self, n_frames: int) -> None:
        """``DetectCommonFrames``: the chunk's frames, none of them final."""
        if self.vad_state_machine == VadState.END_POINT_DETECTED:
            return
        for i in range(n_frames - 1, -1, -1):
            frame_state = self.get_frame_state(self.frm_cnt - 1 - i - self.last_drop_frames)
            self.detect_one_frame(frame_state, self.frm_cnt - 1 - i, False)

    def detect_last_frames(self, n_frames: int) -> None:
        """``DetectLastFrames``: like ``detect_common_frames`` but the last frame is final."""
        if self.vad_state_machine == VadState.END_POINT_DETECTED:
            return
        for i in range(n_frames - 1, -1, -1):
            frame_state = self.get_frame_state(self.frm_cnt - 1 - i - self.last_drop_frames)
            self.detect_one_frame(frame_state, self.frm_cnt - 1 - i, i == 0)

    def get_frame_state(self, t: int) -> FrameState:
        """``GetFrameState``: speech/silence for frame ``t`` (relative to ``last_drop_frames``)."""
        opts = self.opts
        if t >= len(self.decibel):
            return FrameState.SIL
        cur_decibel = self.decibel[t]
        cur_snr = cur_decibel - self.noise_average_decibel
        if cur_decibel < opts.decibel_thres:
            return FrameState.SIL

        row = self.scores[t]
        if len(self.sil_pdf_ids) > 1:
            sum_score = sum(float(row[k]) for k in range(len(self.sil_pdf_ids)))
        else:
            sum_score = float(row[0])
        noise_prob = _log(sum_score) * opts.speech_2_noise_ratio
        sum_score = 1.0 - sum_score
        speech_prob = _log(sum_score)
        if math.exp(speech_prob) >= math.exp(noise_prob) + self.speech_noise_thres:
            if cur_snr >= opts.snr_thres and cur_decibel >= opts.decibel_thres:
                return FrameState.SPEECH
            return FrameState.SIL
        if self.noise_average_decibel < -99.9:
            self.noise_average_decibel = cur_decibel
        else:
            self.noise_average_decibel = (
                cur_decibel + self.noise_average_decibel * (opts.noise_frame_num_used_for_snr - 1)
            ) / opts.noise_frame_num_used_for_snr
        return FrameState.SIL

    def latency_frm_num_at_start_point(self) -> int:
        """``LatencyFrmNumAtStartPoint``."""
        latency = self.windows_detector.win_size_frame
        if self.opts.do_extend:
            latency += int(self.opts.lookback_time_start_point / self.opts.frame_in_ms)
        return latency

    def _continue_segment(self, cur_frm_idx: int, is_final_frame: bool, max_segment_frames: float,
                          mark_time_out: bool = False) -> None:
        """The branch funasr's ``DetectOneFrame`` repeats for SIL2SPEECH, SPEECH2SIL and SPEECH2SPEECH (which also
        sets ``max_time_out``) inside a segment: end it at the maximum segment length, else the frame is speech
        (or, on the final frame, maybe the end)."""
        if cur_frm_idx - self.confirmed_start_frame + 1 > max_segment_frames:
            if mark_time_out:
                self.max_time_out = True
            self.on_voice_end(cur_frm_idx, False, False)
            self.vad_state_machine = VadState.END_POINT_DETECTED
        elif not is_final_frame:
            self.on_voice_detected(cur_frm_idx)
        else:
            self.maybe_on_voice_end_if_last_frame(is_final_frame, cur_frm_idx)

    def detect_one_frame(self, cur_frm_state: FrameState, cur_frm_idx: int, is_final_frame: bool) -> None:
        """``FsmnVADStreaming.DetectOneFrame``: advance the state machine by one frame."""
        opts = self.opts
        frm_shift_in_ms = opts.frame_in_ms
        max_segment_frames = opts.max_single_segment_time / frm_shift_in_ms
        if cur_frm_state == FrameState.SPEECH:
            # funasr: `math.fabs(1.0) > fe_prior_thres` picks speech, otherwise silence
            tmp_state = FrameState.SPEECH if 1.0 > opts.fe_prior_thres else FrameState.SIL
        elif cur_frm_state == FrameState.SIL:
            tmp_state = FrameState.SIL
        else:
            tmp_state = FrameState.INVALID
        state_change = self.windows_detector.detect_one_frame(tmp_state)

        if state_change == AudioChange.SIL2SPEECH:
            self.continous_silence_frame_count = 0
            self.pre_end_silence_detected = False
            if self.vad_state_machine == VadState.START_POINT_NOT_DETECTED:
                start_frame = max(self.data_buf_start_frame,
                                  cur_frm_idx - self.latency_frm_num_at_start_point())
                self.on_voice_start(start_frame)
                self.vad_state_machine = VadState.IN_SPEECH_SEGMENT
                for t in range(start_frame + 1, cur_frm_idx + 1):
                    self.on_voice_detected(t)
            elif self.vad_state_machine == VadState.IN_SPEECH_SEGMENT:
                for t in range(self.latest_confirmed_speech_frame + 1, cur_frm_idx):
                    self.on_voice_detected(t)
                self._continue_segment(cur_frm_idx, is_final_frame, max_segment_frames)
        elif state_change == AudioChange.SPEECH2SIL:
            self.continous_silence_frame_count = 0
            if self.vad_state_machine == VadState.IN_SPEECH_SEGMENT:
                self._continue_segment(cur_frm_idx, is_final_frame, max_segment_frames)
        elif state_change == AudioChange.SPEECH2SPEECH:
            self.continous_silence_frame_count = 0
            if self.vad_state_machine == VadState.IN_SPEECH_SEGMENT:
                self._continue_segment(cur_frm_idx, is_final_frame, max_segment_frames, mark_time_out=True)
        elif state_change == AudioChange.SIL2SIL:
            self.continous_silence_frame_count += 1
            if self.vad_state_machine == VadState.START_POINT_NOT_DETECTED:
                start_silence_timeout = (
                    opts.detect_mode == SINGLE_UTTERANCE_MODE
                    and self.continous_silence_frame_count * frm_shift_in_ms > opts.max_start_silence_time
                )
                if start_silence_timeout or (is_final_frame and self.number_end_time_detected == 0):
                    # silence timeout / nothing found: zero-length (fake) decision
                    for t in range(self.lastest_confirmed_silence_frame + 1, cur_frm_idx):
                        self.on_silence_detected(t)
                    self.on_voice_start(0, True)
                    self.on_voice_end(0, True, False)
                    self.vad_state_machine = VadState.END_POINT_DETECTED
                elif cur_frm_idx >= self.latency_frm_num_at_start_point():
                    self.on_silence_detected(cur_frm_idx - self.latency_frm_num_at_start_point())
            elif self.vad_state_machine == VadState.IN_SPEECH_SEGMENT:
                if self.continous_silence_frame_count * frm_shift_in_ms >= self.max_end_sil_frame_cnt_thresh:
                    lookback_frame = int(self.max_end_sil_frame_cnt_thresh / frm_shift_in_ms)
                    if opts.do_extend:
                        lookback_frame -= int(opts.lookahead_time_end_point / frm_shift_in_ms)
                        lookback_frame -= 1
                        lookback_frame = max(0, lookback_frame)
                    self.on_voice_end(cur_frm_idx - lookback_frame, False, False)
                    self.vad_state_machine = VadState.END_POINT_DETECTED
                elif cur_frm_idx - self.confirmed_start_frame + 1 > max_segment_frames:
                    self.on_voice_end(cur_frm_idx, False, False)
                    self.vad_state_machine = VadState.END_POINT_DETECTED
                elif opts.do_extend and not is_final_frame:
                    if self.continous_silence_frame_count <= int(opts.lookahead_time_end_point / frm_shift_in_ms):
                        self.on_voice_detected(cur_frm_idx)
                else:
                    self.maybe_on_voice_end_if_last_frame(is_final_frame, cur_frm_idx)

        if self.vad_state_machine == VadState.END_POINT_DETECTED and opts.detect_mode == MULTIPLE_UTTERANCE_MODE:
            self.reset_detection()

    # -- callbacks ------------------------------------------------------------------------

    def pop_data_buf_till_frame(self, frame_idx: int) -> None:
        """``PopDataBufTillFrame`` (only the frame index; the samples are not kept)."""
        if self.data_buf_start_frame < frame_idx:
            self.data_buf_start_frame = frame_idx

    def pop_data_to_output_buf(self, start_frm: int, frm_cnt: int, first_frm_is_start_point: bool,
                               last_frm_is_end_point: bool) -> None:
        """``PopDataToOutputBuf``: extend (or open) the current output segment."""
        self.pop_data_buf_till_frame(start_frm)
        if not self.output_data_buf or first_frm_is_start_point:
            start_ms = start_frm * self.opts.frame_in_ms
            self.output_data_buf.append(SpeechSegment(start_ms=start_ms, end_ms=start_ms))
        cur_seg = self.output_data_buf[-1]
        self.data_buf_start_frame += frm_cnt
        cur_seg.end_ms = (start_frm + frm_cnt) * self.opts.frame_in_ms
        if first_frm_is_start_point:
            cur_seg.contain_seg_start_point = True
        if last_frm_is_end_point:
            cur_seg.contain_seg_end_point = True

    def on_silence_detected(self, valid_frame: int) -> None:
        """``OnSilenceDetected``."""
        self.lastest_confirmed_silence_frame = valid_frame
        if self.vad_state_machine == VadState.START_POINT_NOT_DETECTED:
            self.pop_data_buf_till_frame(valid_frame)

    def on_voice_detected(self, valid_frame: int) -> None:
        """``OnVoiceDetected``."""
        self.latest_confirmed_speech_frame = valid_frame
        self.pop_data_to_output_buf(valid_frame, 1, False, False)

    def on_voice_start(self, start_frame: int, fake_result: bool = False) -> None:
        """``OnVoiceStart``."""
        if self.confirmed_start_frame == -1:  # funasr prints "not reset vad properly" otherwise
            self.confirmed_start_frame = start_frame
        if not fake_result and self.vad_state_machine == VadState.START_POINT_NOT_DETECTED:
            self.pop_data_to_output_buf(self.confirmed_start_frame, 1, True, False)

    def on_voice_end(self, end_frame: int, fake_result: bool, is_last_frame: bool) -> None:
        """``OnVoiceEnd`` (``is_last_frame`` only changes how many samples funasr pops)."""
        for t in range(self.latest_confirmed_speech_frame + 1, end_frame):
            self.on_voice_detected(t)
        if self.confirmed_end_frame == -1:
            self.confirmed_end_frame = end_frame
        if not fake_result:
            self.sil_frame = 0
            self.pop_data_to_output_buf(self.confirmed_end_frame, 1, False, True)
        self.number_end_time_detected += 1

    def maybe_on_voice_end_if_last_frame(self, is_final_frame: bool, cur_frm_idx: int) -> None:
        """``MaybeOnVoiceEndIfLastFrame``."""
        if is_final_frame:
            self.on_voice_end(cur_frm_idx, False, True)
            self.vad_state_machine = VadState.END_POINT_DETECTED


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def check_waveform(wav: Any, *, max_seconds: float | None = None, sample_rate: int = 16000,
                   allow_empty: bool = True) -> np.ndarray:
    """Return ``wav`` as a 1-D float32 array or raise :class:`InvalidAudioError`."""
    arr = np.asarray(wav)
    if arr.ndim != 1:
        raise InvalidAudioError(f"expected a 1-D waveform (mono samples), got shape {list(arr.shape)}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InvalidAudioError(f"expected float samples, got dtype {arr.dtype}")
    arr = arr.astype(np.float32, copy=False)
    if arr.shape[0] == 0 and not allow_empty:
        raise InvalidAudioError("the waveform is empty")
    if max_seconds is not None and arr.shape[0] > max_seconds * sample_rate:
        raise InvalidAudioError(
            f"the waveform is {arr.shape[0] / sample_rate:.1f} s long; the limit is {max_seconds:g} s"
        )
    step = 1 << 20  # check in blocks: no second full-length (bool) copy of hours of audio
    if not all(np.isfinite(arr[i:i + step]).all() for i in range(0, arr.shape[0], step)):
        bad = sum(int(np.count_nonzero(~np.isfinite(arr[i:i + step]))) for i in range(0, arr.shape[0], step))
        raise InvalidAudioError(f"the waveform contains {bad} NaN or infinite sample(s)")
    return arr


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _load_model_conf(model_dir: Path) -> dict:
    vad_json = model_dir / "vad.json"
    if vad_json.is_file():
        return json.loads(vad_json.read_text(encoding="utf-8"))
    config_yaml = model_dir / "config.yaml"
    if config_yaml.is_file():  # a FunASR hub directory; needs PyYAML
        import yaml

        return yaml.safe_load(config_yaml.read_text(encoding="utf-8"))
    raise FileNotFoundError(f"{model_dir}: neither vad.json nor config.yaml found")


class FsmnVad:
    """FunASR FSMN-VAD, offline: ``segments(wav)`` == ``AutoModel(model=dir).generate(input=wav)[0]["value"]``.

    ``model_dir`` holds ``model.onnx``, ``am.mvn`` and ``vad.json`` (written by the exporter;
    a FunASR hub directory with ``config.yaml`` also works when PyYAML is installed).
    ``options`` are what ``AutoModel(model=dir, **options)`` would get: any ``model_conf`` key
    (``max_single_segment_time``, ``speech_noise_thres``...), plus ``dynamic_silence``,
    ``silence_schedule`` and ``chunk_size``. As in funasr, giving ``max_end_silence_time``
    turns the dynamic end-silence schedule off (unless ``dynamic_silence`` says otherwise).

    One instance may serve several threads: every call keeps its own state.
    """

    def __init__(self, model_dir: str | Path, options: dict | None = None, intra_op_threads: int = 1,
                 cpu_mem_arena: bool = True):
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        for name in ("model.onnx", "am.mvn"):
            if not (self.model_dir / name).is_file():
                raise FileNotFoundError(f"{self.model_dir / name} is missing")
        config = _load_model_conf(self.model_dir)
        self.frontend_conf = dict(config.get("frontend_conf") or {})
        model_conf = dict(config.get("model_conf") or {})
        options = {k: v for k, v in (options or {}).items() if v is not None}
        known = {f.name for f in dataclasses.fields(VadOptions)} | set(RUNTIME_OPTION_KEYS)
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown VAD option(s) {unknown}; known: {sorted(known)}")

        self.vad_opts = VadOptions.from_mapping({**model_conf, **options})
        self.dynamic_silence = _as_bool(
            "dynamic_silence", options.get("dynamic_silence", "max_end_silence_time" not in options)
        )
        schedule = options.get("silence_schedule", DEFAULT_SILENCE_SCHEDULE)
        if isinstance(schedule, str):
            schedule = json.loads(schedule)
        self.silence_schedule = [(float(limit), _number(ms)) for limit, ms in schedule]
        self.chunk_size = int(float(options.get("chunk_size", DEFAULT_CHUNK_SIZE_MS)))
        if self.chunk_size < 15000:
            # funasr switches to streaming output ([beg, -1] / [-1, end]) below 15 s chunks
            raise ValueError("chunk_size must be >= 15000 ms for offline segmentation")
        # init_cache: Stats(speech_noise_thres=kwargs.get("speech_noise_thres", vad_opts...)); the
        # override is already merged into vad_opts
        self.speech_noise_thres = float(self.vad_opts.speech_noise_thres)
        self.sample_rate = int(self.frontend_conf.get("fs", 16000))

        self.cmvn = load_cmvn(self.model_dir / "am.mvn")
        sess_opts = ort.SessionOptions()
        sess_opts.intra_op_num_threads = int(intra_op_threads)
        sess_opts.inter_op_num_threads = 1
        sess_opts.log_severity_level = 3
        sess_opts.enable_cpu_mem_arena = bool(cpu_mem_arena)  # off: a 60 s stride's buffers are not kept
        self.session = ort.InferenceSession(
            str(self.model_dir / "model.onnx"), sess_options=sess_opts, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        if "speech" not in inputs:
            raise ValueError(f"{self.model_dir / 'model.onnx'}: no 'speech' input")
        self.cache_names = sorted((n for n in inputs if n.startswith("in_cache")), key=lambda n: int(n[8:]))
        self.cache_shapes = [tuple(int(d) for d in inputs[n].shape) for n in self.cache_names]
        self.output_names = ["logits"] + [f"out_cache{n[8:]}" for n in self.cache_names]
        feat_dim = inputs["speech"].shape[-1]
        expected_dim = int(self.frontend_conf.get("n_mels", 80)) * int(self.frontend_conf.get("lfr_m", 1))
        if isinstance(feat_dim, int) and feat_dim != expected_dim:
            raise ValueError(f"model.onnx expects {feat_dim}-dim features, frontend makes {expected_dim}")

    def segments(self, wav: np.ndarray) -> list[list[int]]:
        """Speech segments of 16 kHz mono samples in [-1, 1], as [[beg_ms, end_ms], ...]."""
        return self.stream().finish(wav)

    def stream(self) -> "OfflineVadStream":
        """A new :class:`OfflineVadStream` on this model (same results as :meth:`segments`)."""
        return OfflineVadStream(self)


class VadStreamFinishedError(RuntimeError):
    """``accept``/``finish`` was called on an :class:`OfflineVadStream` after ``finish``."""


class OfflineVadStream:
    """The offline VAD (:meth:`FsmnVad.segments`) fed piece by piece, e.g. for a long file.

    ``accept(samples)`` takes any number of 16 kHz float samples; they are buffered and every
    complete stride of ``vad.chunk_size`` ms (60 s by default) runs one non-final step of
    funasr's offline loop (``FsmnVADStreaming.inference``: frontend, encoder with its caches,
    state machine, dynamic end-silence schedule). ``finish(samples=None)`` runs the final step
    over what is left (possibly nothing). Because the strides are exactly those of the
    whole-file call, the segments returned by all calls together are exactly
    ``vad.segments(whole_file)``, whatever the sizes of the pieces. Times are ms from the start
    of the stream.

    Memory does not grow with the audio: at most one stride of unprocessed samples is kept
    (plus the piece being accepted), and the frontend and detector keep only bounded
    remainders (see :meth:`E2EVad.trim`).

    The ONNX session is ``vad``'s (thread-safe, shared); the state is this object's. One
    stream must not be used by two threads at once.
    """

    def __init__(self, vad: FsmnVad):
        self.vad = vad
        opts = vad.vad_opts
        self._detector = E2EVad(opts, vad.speech_noise_thres)
        self._frontend = OnlineFrontend(vad.frontend_conf, vad.cmvn)
        self._frontend_state = FrontendState()
        self._caches = [np.zeros(shape, dtype=np.float32) for shape in vad.cache_shapes]
        self._sil_ids = list(opts.sil_pdf_ids)
        self._stride = int(vad.chunk_size * vad.sample_rate / 1000)
        self._pending: list[np.ndarray] = []  # received, not yet processed (< one stride in all)
        self._pending_samples = 0
        self._received_samples = 0
        self._processed_samples = 0
        # dynamic end-silence bookkeeping of FsmnVADStreaming.inference
        self._accumulated_ms = 0
        self._in_speech = False
        self._finished = False

    # -- positions ------------------------------------------------------------------------

    @property
    def received_ms(self) -> int:
        """Audio handed to ``accept``/``finish`` so far, in ms (rounded down)."""
        return self._received_samples * 1000 // self.vad.sample_rate

    @property
    def processed_ms(self) -> int:
        """Audio run through the VAD so far, in ms (rounded down): whole strides, or everything
        once finished."""
        return self._processed_samples * 1000 // self.vad.sample_rate

    @property
    def finished(self) -> bool:
        return self._finished

    def min_future_start_ms(self) -> int:
        """A lower bound on ``beg_ms`` of every segment a later ``accept``/``finish`` can return.

        Audio before it is no longer needed by a caller that cuts segments out of the stream.
        The bound is what the detector state allows exactly:

        * a segment whose start is confirmed but whose end is not (in speech) keeps its
          ``beg_ms``, so the bound is that start;
        * any segment started later begins at ``max(data_buf_start_frame, frame - look-back)``
          (``DetectOneFrame``), and ``data_buf_start_frame`` never decreases, so its current
          value bounds every later start. In silence it trails the last processed frame by the
          start-detection latency (``window_size_ms + lookback_time_start_point``, 400 ms by
          default); after a segment it is at least that segment's end.

        It never decreases. Audio received but not yet processed (less than one stride) is
        after it. After ``finish`` no segment can follow and it is ``processed_ms``.
        """
        if self._finished:
            return self.processed_ms
        detector = self._detector
        bound = detector.data_buf_start_frame * detector.opts.frame_in_ms
        for seg in detector.output_data_buf[detector.output_data_buf_offset:]:
            bound = min(bound, seg.start_ms)
        return int(bound)

    # -- feeding --------------------------------------------------------------------------

    def accept(self, samples: np.ndarray) -> list[list[int]]:
        """Buffer ``samples`` and run every complete stride; the segments those strides closed."""
        self._check_open()
        samples = check_waveform(samples, sample_rate=self.vad.sample_rate)
        self._received_samples += samples.shape[0]
        segments: list[list[int]] = []
        if samples.shape[0] == 0:
            return segments
        pos = 0
        if self._pending:  # complete the buffered stride first
            pos = min(self._stride - self._pending_samples, samples.shape[0])
            self._pending.append(samples[:pos].copy())
            self._pending_samples += pos
            if self._pending_samples < self._stride:
                return segments
            stride = np.concatenate(self._pending)
            self._pending, self._pending_samples = [], 0
            segments += self._step(stride, is_final=False)
        while samples.shape[0] - pos >= self._stride:  # whole strides straight from the input
            segments += self._step(samples[pos:pos + self._stride], is_final=False)
            pos += self._stride
        if pos < samples.shape[0]:
            self._pending.append(samples[pos:].copy())
            self._pending_samples += samples.shape[0] - pos
        return segments

    def finish(self, samples: np.ndarray | None = None) -> list[list[int]]:
        """Accept ``samples`` (if given), then run the final step; the remaining segments."""
        self._check_open()
        segments = [] if samples is None else self.accept(samples)
        self._finished = True
        if self._received_samples == 0:
            return segments  # funasr returns no segment for empty input, without a step
        rest = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
        self._pending, self._pending_samples = [], 0
        segments += self._step(rest, is_final=True)
        return segments

    def _check_open(self) -> None:
        if self._finished:
            raise VadStreamFinishedError("the VAD stream is finished; start a new one")

    def _step(self, chunk: np.ndarray, is_final: bool) -> list[list[int]]:
        """One chunk of ``FsmnVADStreaming.inference`` (offline: not ``is_streaming_input``)."""
        vad, detector = self.vad, self._detector
        if vad.dynamic_silence:
            if detector.vad_state_machine == VadState.IN_SPEECH_SEGMENT or self._in_speech:
                self._accumulated_ms += vad.chunk_size
                self._in_speech = True
            for limit_ms, silence_ms in vad.silence_schedule:
                if self._accumulated_ms <= limit_ms:
                    detector.max_end_sil_frame_cnt_thresh = max(
                        silence_ms - vad.vad_opts.speech_to_sil_time_thres, 0)
                    detector.speech_noise_thres = DYNAMIC_SPEECH_NOISE_THRES
                    break
        feats, waveform = self._frontend.accept_aligned(self._frontend_state, chunk, is_final)
        self._processed_samples += chunk.shape[0]
        if feats.shape[0] == 0:
            return []
        outputs = vad.session.run(
            vad.output_names, {"speech": feats[None], **dict(zip(vad.cache_names, self._caches))})
        self._caches = outputs[1:]
        sil_scores = np.ascontiguousarray(outputs[0][0][:, self._sil_ids])
        segments = detector.forward(sil_scores, waveform, is_final)
        if segments and vad.dynamic_silence:
            self._accumulated_ms = 0
            self._in_speech = False
        return segments


class OnlineVad:
    """One stream of FSMN-VAD in funasr's streaming mode (``is_streaming_input=True``).

    ``accept(chunk, is_final)`` takes consecutive chunks of 16 kHz samples and returns what
    funasr's ``AutoModel(fsmn-vad).generate(input=chunk, cache=cache, is_final=...,
    chunk_size=chunk_ms)`` returns for them: ``[beg, -1]`` when a sentence start is confirmed,
    ``[-1, end]`` when it ends (``[beg, end]`` when both happen in one chunk); times in ms from the
    stream start. The ONNX session is shared with ``vad`` (thread-safe); the state is this object's.

    End silence, as in funasr's ``FsmnVADStreaming.inference``:

    * ``max_end_silence_ms`` given: that fixed end silence and the model's ``speech_noise_thres``
      (0.6 in fsmn-vad's config), as when funasr is given ``max_end_silence_time``;
    * ``max_end_silence_ms=None`` (funasr's default, what its server uses when the client sends
      no ``max_end_silence``): the dynamic schedule. Before every chunk, while the detector is in
      a speech segment, ``chunk_ms`` is added to the segment's time, and the end silence comes
      from ``vad.silence_schedule`` (2000 ms for the first 10 s, 1000 ms up to 20 s, 800 ms up to
      30 s ... 100 ms after 60 s); ``speech_noise_thres`` is 0.5. Any chunk that returns a
      segment (a start as well as an end) starts the count again. ``chunk_ms`` is funasr's
      ``chunk_size`` argument: the nominal chunk length, also for a shorter final chunk.
    """

    def __init__(self, vad: "FsmnVad", max_end_silence_ms: int | None = None, chunk_ms: int = 600):
        opts = vad.vad_opts
        self.dynamic_silence = max_end_silence_ms is None
        if not self.dynamic_silence:
            opts = dataclasses.replace(opts, max_end_silence_time=int(max_end_silence_ms))
        if int(chunk_ms) <= 0:
            raise ValueError(f"chunk_ms must be positive, got {chunk_ms}")
        self.vad = vad
        self.chunk_ms = int(chunk_ms)
        self.detector = E2EVad(opts, float(opts.speech_noise_thres))
        self.frontend = OnlineFrontend(vad.frontend_conf, vad.cmvn)
        self.frontend_state = FrontendState()
        self.caches = [np.zeros(shape, dtype=np.float32) for shape in vad.cache_shapes]
        self.sil_ids = list(opts.sil_pdf_ids)
        self._accumulated_ms = 0  # speech time of the current segment (dynamic schedule)
        self._in_speech = False

    def _apply_schedule(self) -> None:
        """The dynamic end-silence step of ``FsmnVADStreaming.inference``, before one chunk."""
        detector = self.detector
        if detector.vad_state_machine == VadState.IN_SPEECH_SEGMENT or self._in_speech:
            self._accumulated_ms += self.chunk_ms
            self._in_speech = True
        for limit_ms, silence_ms in self.vad.silence_schedule:
            if self._accumulated_ms <= limit_ms:
                detector.max_end_sil_frame_cnt_thresh = max(silence_ms - detector.opts.speech_to_sil_time_thres, 0)
                detector.speech_noise_thres = DYNAMIC_SPEECH_NOISE_THRES
                break

    def accept(self, chunk: np.ndarray, is_final: bool) -> list[list[int]]:
        if self.dynamic_silence:
            self._apply_schedule()
        chunk = np.asarray(chunk, dtype=np.float32)
        feats, waveform = self.frontend.accept_aligned(self.frontend_state, chunk, is_final)
        if feats.shape[0] == 0:
            return []
        outputs = self.vad.session.run(
            self.vad.output_names, {"speech": feats[None], **dict(zip(self.vad.cache_names, self.caches))})
        self.caches = outputs[1:]
        sil_scores = np.ascontiguousarray(outputs[0][0][:, self.sil_ids])
        segments = self.detector.forward(sil_scores, waveform, is_final, streaming=True)
        if segments and self.dynamic_silence:
            self._accumulated_ms = 0
            self._in_speech = False
        return segments
