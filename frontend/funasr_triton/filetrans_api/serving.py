"""Alibaba FileTrans serving, no HTTP in here: the submitted `Task` -> a job's params, a job -> GetTaskResult's
body (also what the task's callback POSTs), and the failure type of this surface, `FileTransError`."""
from __future__ import annotations

import json
import time
import uuid

from pydantic import ValidationError

from ..app.fetch import parse_target
from ..contract import TranscribeOptions, Transcript
from ..errors import AsrError
from ..jobs.callbacks import check_callback, post_json
from ..jobs.store import CANCELLED as JOB_CANCELLED
from ..jobs.store import EXPIRED, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from ..vocabularies.registry import vocabulary_words
from . import protocol as p

KIND = "filetrans"
_DOWNLOAD_CODES = {"fetch_failed", "invalid_url", "forbidden_url", "fetch_timeout", "url_disabled"}
_PARSE_CODES = {"bad_audio", "empty_audio", "decode_timeout", "audio_too_long"}
# job states answered with a status alone (no result)
_UNFINISHED = {QUEUED: p.QUEUEING, RUNNING: p.RUNNING, EXPIRED: p.TASK_EXPIRED, JOB_CANCELLED: p.CANCELLED}


class FileTransError(Exception):
    def __init__(self, http_status: int, status: tuple[int, str], message: str, task_id: str | None = None):
        super().__init__(message)
        self.http_status, self.status, self.message, self.task_id = http_status, status, message, task_id


def new_request_id() -> str:
    return str(uuid.uuid4()).upper()


def _status_of_error(error: dict | None) -> tuple[int, str]:
    code = (error or {}).get("code", "")
    if code in _DOWNLOAD_CODES:
        return p.FILE_DOWNLOAD_FAILED
    if code == "too_large":
        return p.FILE_TOO_LARGE
    if code in _PARSE_CODES:
        return p.FILE_PARSE_FAILED
    return p.INTERNAL_ERROR


def _result(t: Transcript, words: bool, split: bool) -> p.FileTransResult:
    sentences, all_words, previous_end = [], [], 0
    for s in t.sentences:
        channel = (s.speaker_index or 0) if split else 0
        minutes = max(s.end_ms - s.start_ms, 1) / 60000
        sentences.append(p.FileTransSentence(
            BeginTime=s.start_ms, EndTime=s.end_ms, Text=s.text, ChannelId=channel,
            SpeechRate=round(len(s.text.replace(" ", "")) / minutes),
            SilenceDuration=max(0, s.start_ms - previous_end) // 1000, SpeakerId=s.speaker))
        previous_end = s.end_ms
        if words:
            all_words.extend(p.FileTransWord(Word=w.text, BeginTime=w.start_ms, EndTime=w.end_ms, ChannelId=channel)
                             for w in s.words)
    return p.FileTransResult(Sentences=sentences, Words=all_words if words else None)


def task_result(job: Job, request_id: str | None = None) -> p.TaskResult:
    base = {"TaskId": job.id, "RequestId": request_id or new_request_id()}
    if job.state in _UNFINISHED:
        code, text = _UNFINISHED[job.state]
        return p.TaskResult(**base, StatusCode=code, StatusText=text)
    solve = int((job.finished_at or time.time()) * 1000)
    r = (job.results or [{}])[0]
    if job.state == FAILED or r.get("status") != SUCCEEDED:
        error = r.get("error") or job.error
        code, text = _status_of_error(error)
        return p.TaskResult(**base, StatusCode=code, StatusText=text, SolveTime=solve,
                            Message=(error or {}).get("message"))
    t = Transcript.model_validate(r["transcript"])
    ft = job.params.get("filetrans", {})
    result = _result(t, ft.get("enable_words", False), ft.get("auto_split", False))
    status = p.SUCCESS if result.Sentences else p.SUCCESS_WITH_NO_VALID_FRAGMENT
    return p.TaskResult(**base, StatusCode=status[0], StatusText=status[1], BizDuration=t.duration_ms,
                        SolveTime=solve, RecDuration=t.duration_ms, Result=result)


async def job_of(app, service, raw: str | None) -> tuple[dict, list[dict]]:
    """The `Task` form field (JSON), checked, as a job's params and its one file (the file_link, fetched when the
    job runs)."""
    settings = service.settings
    if not raw:
        raise FileTransError(400, p.PARAMETER_INVALID, "the form field Task (JSON) is required")
    try:
        task = p.FileTransTask.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise FileTransError(400, p.PARAMETER_INVALID, f"Task is not a valid task JSON: {str(exc)[:200]}") from None
    if not task.appkey:
        raise FileTransError(400, p.EMPTY_APPKEY, "Task.appkey is required")
    if not task.file_link:
        raise FileTransError(400, p.INVALID_FILE_URL, "Task.file_link is required")
    if not settings.audio.url_fetch_enabled:
        raise FileTransError(400, p.INVALID_FILE_URL, "audio by URL is disabled on this server")
    try:
        parse_target(task.file_link)
    except AsrError as err:
        raise FileTransError(400, p.INVALID_FILE_URL, err.message.replace("audio_address", "file_link")) from None
    if task.enable_callback:
        if not task.callback_url:
            raise FileTransError(400, p.INVALID_CALLBACK, "enable_callback needs callback_url")
        try:
            await check_callback(task.callback_url, settings.audio)
        except AsrError as err:
            raise FileTransError(400, p.INVALID_CALLBACK, err.message.replace("audio_address", "callback_url")) from None
    diarize = task.auto_split or task.enable_speaker_diarization
    if diarize and not settings.diarization.enabled:
        raise FileTransError(400, p.PARAMETER_INVALID, "speaker diarization is disabled on this server")
    try:
        hotwords = service.merged_hotwords(await vocabulary_words(app, task.vocabulary_id, "vocabulary_id"))
    except AsrError as err:
        raise FileTransError(400, p.PARAMETER_INVALID, err.message) from None
    # word times only when the result lists them (Words: enable_words); sentences carry their own times
    options = TranscribeOptions(punctuation=task.enable_punctuation_prediction, timestamps=task.enable_words,
                                diarize=diarize, num_speakers=task.speaker_num or (2 if task.auto_split else None),
                                itn=task.enable_inverse_text_normalization, hotwords=hotwords)
    return ({"options": options.model_dump(mode="json"), "filetrans": task.model_dump(mode="json")},
            [{"name": task.file_link.rsplit("/", 1)[-1], "url": task.file_link}])


def setup(jobs) -> None:
    """Register the callback hook on the job runner."""

    async def callback(job: Job) -> None:
        ft = job.params.get("filetrans", {})
        if not (ft.get("enable_callback") and ft.get("callback_url")):
            return
        body = task_result(job)
        body.RequestTime = int(job.created_at * 1000)
        await post_json(ft["callback_url"], body.model_dump(mode="json", exclude_none=True),
                        jobs.settings.audio, jobs.cfg.callback_timeout_s)

    jobs.hooks[KIND] = callback
