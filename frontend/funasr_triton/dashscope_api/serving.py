"""DashScope serving, no HTTP in here: the submitted task -> a job's params, a job -> the task reply, a
transcript -> the transcription document; and the one mapping of HTTP status -> DashScope error code."""
from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone
from typing import Callable

from pydantic import ValidationError

from ..app.fetch import parse_target
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..jobs.store import CANCELLED, EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from ..vocabularies.registry import vocabulary_words
from . import protocol as p

KIND = "dashscope"
MODELS = re.compile(r"(paraformer|fun-asr)[a-z0-9.\-]*", re.I)
_TRAILING_PUNCT = re.compile(r"[，。？！、,.?!;；:：]+$")
_CODES = {400: "InvalidParameter", 401: "InvalidApiKey", 404: "NotFound", 409: "Conflict", 413: "InvalidParameter",
          429: "Throttling"}
_STATUS = {QUEUED: "PENDING", RUNNING: "RUNNING", SUCCEEDED: "SUCCEEDED", FAILED: "FAILED", CANCELLED: "CANCELED",
           EXPIRED: "UNKNOWN"}


def error_code(status: int) -> str:
    return _CODES.get(status, "InternalError") if status < 500 else "InternalError"


def _time(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def parse_submit(raw: bytes) -> p.TranscriptionSubmit:
    try:
        return p.TranscriptionSubmit.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise AsrError(f"{where}: {first['msg']}" if where else first["msg"], 400, "invalid_value") from None


async def job_of(app, service, body: p.TranscriptionSubmit) -> tuple[dict, list[dict]]:
    """The checked task as a job's params and files (its file_urls, fetched when the job runs)."""
    settings = service.settings
    if not MODELS.fullmatch(body.model) and body.model != settings.models.default:
        raise AsrError(f"Model not exist: {body.model!r} (this server answers paraformer-* and fun-asr* names)", 400,
                       "model_not_found")
    if not settings.audio.url_fetch_enabled:
        raise AsrError("audio by URL is disabled on this server", 400, "url_disabled")
    if len(body.input.file_urls) > settings.jobs.max_files:
        raise AsrError(f"{len(body.input.file_urls)} file_urls; at most {settings.jobs.max_files}", 400,
                       "too_many_files")
    for url in body.input.file_urls:
        try:
            parse_target(url)
        except AsrError as err:
            raise AsrError(err.message.replace("audio_address", "file_urls"), 400, err.code) from None
    par = body.parameters
    if par.diarization_enabled and not settings.diarization.enabled:
        raise AsrError("speaker diarization is disabled on this server", 400, "diarization_disabled")
    options = TranscribeOptions(punctuation=True, timestamps=True, diarize=par.diarization_enabled,
                                num_speakers=par.speaker_count if par.diarization_enabled else None,
                                hotwords=service.merged_hotwords(
                                    await vocabulary_words(app, par.vocabulary_id, "parameters.vocabulary_id")))
    params = {"options": options.model_dump(mode="json"),
              "dashscope": {"model": body.model, "parameters": par.model_dump(mode="json", exclude_none=True)}}
    return params, [{"name": u.rsplit("/", 1)[-1] or u, "url": u} for u in body.input.file_urls]


def submit_reply(job: Job) -> p.SubmitReply:
    return p.SubmitReply(request_id=str(uuid.uuid4()), output=p.SubmitOutput(task_id=job.id, task_status="PENDING"))


def task_reply(job: Job, transcription_url: Callable[[int], str]) -> p.TaskReply:
    """The task's status and one result per file; `transcription_url(i)`: where file i's document is served."""
    status = _STATUS[job.state]
    results, metrics, seconds = None, None, 0.0
    if job.results is not None:
        results = []
        for i, (f, r) in enumerate(zip(job.files, job.results)):
            if r["status"] == SUCCEEDED:
                results.append(p.SubtaskResult(file_url=f["url"], transcription_url=transcription_url(i),
                                               subtask_status="SUCCEEDED"))
                seconds += r["transcript"]["duration_ms"] / 1000
            else:
                e = r.get("error") or {}
                results.append(p.SubtaskResult(file_url=f["url"], subtask_status="FAILED",
                                               code=_CODES.get(e.get("status", 500), "InternalError"),
                                               message=e.get("message")))
        ok = sum(r.subtask_status == "SUCCEEDED" for r in results)
        metrics = {"TOTAL": len(results), "SUCCEEDED": ok, "FAILED": len(results) - ok}
    output = p.TaskOutput(task_id=job.id, task_status=status, submit_time=_time(job.created_at),
                          scheduled_time=_time(job.started_at), end_time=_time(job.finished_at), results=results,
                          task_metrics=metrics)
    if job.state == FAILED and job.error:
        output.code, output.message = "InternalError" if job.error.get("status", 500) >= 500 else "InvalidFile", \
            job.error.get("message")
    if job.state == EXPIRED:
        output.code, output.message = "TaskExpired", "the task's results were purged after the retention period"
    return p.TaskReply(request_id=str(uuid.uuid4()), output=output,
                       usage={"duration": round(seconds)} if results is not None else None)


def document(file_url: str, t: Transcript) -> p.TranscriptionDocument:
    sentences = []
    for i, s in enumerate(t.sentences):
        punct = _TRAILING_PUNCT.search(s.text)
        words = [p.Word(begin_time=w.start_ms, end_time=w.end_ms, text=w.text) for w in s.words]
        if words and punct:
            words[-1].punctuation = punct.group(0)
        sentences.append(p.Sentence(begin_time=s.start_ms, end_time=s.end_ms, text=s.text, sentence_id=i + 1,
                                    speaker_id=s.speaker_index, words=words))
    content = sum(s.end_ms - s.start_ms for s in t.sentences)
    return p.TranscriptionDocument(
        file_url=file_url, properties=p.Properties(original_duration_in_milliseconds=t.duration_ms),
        transcripts=[p.ChannelTranscript(channel_id=0, content_duration_in_milliseconds=content, text=t.text,
                                         sentences=sentences)])
