"""Settings (pydantic-settings): every limit is named here. Environment: FUNASR_TRITON_<SECTION>__<FIELD>."""
from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class TritonSettings(BaseModel):
    url: str = Field("127.0.0.1:8001", description="Triton gRPC address")
    timeout_s: float = Field(600.0, gt=0, description="deadline of one recognition call")
    ready_timeout_s: float = Field(2.0, gt=0, description="deadline of a readiness probe call")


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0, description="largest accepted upload or fetched URL body")
    max_audio_seconds: float = Field(4 * 3600, gt=0, description="longest accepted audio after decoding")
    max_concurrent_jobs: int = Field(4, ge=1, description="recognitions running at once")
    max_queued_jobs: int = Field(32, ge=0, description="recognitions waiting for a slot; beyond that: 429")
    queue_timeout_s: float = Field(30.0, ge=0, description="longest wait for a slot before 429")
    ffmpeg_timeout_s: float = Field(300.0, gt=0, description="longest time spent waiting for ffmpeg's output "
                                    "(decoding, not recognition)")
    send_seconds: float = Field(30.0, gt=0, le=120, description="audio sent to Triton per request while a file "
                                "is decoded (the file is streamed: memory does not grow with its length)")
    max_hotwords: int = Field(50, ge=0, description="hotwords per request (request + hotword file)")
    max_hotword_chars: int = Field(32, ge=1, description="longest hotword (the model takes at most 32 tokens per hotword)")


class AudioSettings(BaseModel):
    ffmpeg: str = Field("ffmpeg", description="ffmpeg binary")
    denoise: bool = Field(False, description="apply `denoise_filter` before recognition")
    denoise_filter: str = Field("highpass=f=80,afftdn=nf=-25", description="ffmpeg -af chain used when denoise is on")
    url_fetch_enabled: bool = Field(False, description="allow audio by URL (Aliyun `audio_address`)")
    url_allowed_hosts: list[str] = Field(default_factory=list,
                                         description='host:port entries (JSON list, e.g. ["media.internal:8080"]; '
                                         '"[::1]:8080" for IPv6) allowed even when they resolve to private/loopback '
                                         "addresses; a bare host allows only its ports 80 and 443")
    url_timeout_s: float = Field(30.0, gt=0, description="total time to fetch one URL")
    url_max_redirects: int = Field(3, ge=0, description="redirects followed (each target re-checked)")


class HotwordSettings(BaseModel):
    file: Path | None = Field(None, description="one hotword per line, optional weight after it; re-read when it changes")


class SubtitleSettings(BaseModel):
    min_cue_ms: int = Field(500, ge=0, description="shortest cue; shorter cues are extended up to the next one")
    merge_gap_ms: int = Field(300, ge=0, description="merge cues separated by less than this...")
    merge_max_chars: int = Field(40, ge=1, description="...when the merged text stays within this many characters")
    max_chars: int = Field(60, ge=1, description="longest cue text; longer sentences are split at word boundaries")
    speaker_template: str = Field("{speaker}: ", description="prefix for cues with a speaker")


class DiarizationSettings(BaseModel):
    enabled: bool = Field(True, description="allow speaker diarization (needs the `speaker_embedding` model; off: "
                          "requests asking for it are refused, `/api` does not diarize, /ready does not wait for it)")
    label_template: str = Field("SPEAKER_{index:02d}", description="speaker label: {index} 0-based, {number} "
                                "1-based, e.g. SPEAKER_{index:02d} or 说话人{number}")


class StreamingSettings(BaseModel):
    enabled: bool = Field(True, description="serve the real-time WebSocket routes (needs the `streaming_asr` model)")
    max_streams: int = Field(32, ge=1, description="real-time streams open at once; more are refused with the "
                             "protocol's own failure message")
    max_stream_seconds: float = Field(4 * 3600, gt=0, description="longest audio one stream may send")
    max_frame_bytes: int = Field(256 * 1024, gt=0, description="largest binary audio frame accepted")
    idle_timeout_s: float = Field(10.0, gt=0, description="a stream that sends nothing this long is failed and freed")
    start_timeout_s: float = Field(10.0, gt=0, description="time a client has to send its first (start) message")
    chunk_size: list[int] = Field(default_factory=lambda: [0, 10, 5], min_length=3, max_length=3,
                                  description="streaming Paraformer chunk [look-back, chunk, look-ahead] in 60 ms "
                                  "frames; [0,10,5] = 600 ms")
    max_sentence_silence_ms: int | None = Field(None, ge=100, le=6000,
                                                description="silence that ends a sentence when a client gives "
                                                "none; unset: FunASR's streaming default, the dynamic end silence "
                                                "(2000 ms in a sentence's first 10 s of speech, then shorter; "
                                                "speech/noise threshold 0.5)")
    encoder_chunk_look_back: int = Field(0, ge=0, le=64, description="streaming Paraformer encoder look-back in "
                                         "chunks when a client gives none (FunASR's AutoModel default 0; its "
                                         "client sends 4)")
    decoder_chunk_look_back: int = Field(0, ge=0, le=64, description="streaming Paraformer decoder look-back in "
                                         "chunks when a client gives none (FunASR's default and client: 0)")
    max_offline_seconds: float = Field(600.0, gt=0, description="longest audio a FunASR-protocol `offline` "
                                       "session may buffer before it is recognised as one file")


class ItnSettings(BaseModel):
    default: bool = Field(False, description="inverse text normalization (三点一四 -> 3.14) for OpenAI requests "
                          "that do not send the `itn` field")


class AuthSettings(BaseModel):
    api_keys: list[SecretStr] = Field(default_factory=list, description='JSON list, e.g. ["k1","k2"]. None = open; '
                                      "set = required on every API route (/health, /ready, /metrics stay open for probes)")


class ModelSettings(BaseModel):
    default: str = Field("paraformer-zh", description="the served model's name")
    # only the OpenAI names that OpenAI clients send: a name of another model (sensevoice, whisper-large...)
    # is a 404 model_not_found, never silently answered by Paraformer
    aliases: list[str] = Field(default_factory=lambda: ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe",
                                                          "gpt-4o-transcribe-diarize"],
                               description="OpenAI model names accepted as aliases of the default model")
    # the second model: served when the repository has its export (`funasr-triton export --stages sensevoice`)
    sensevoice: str = Field("sensevoice-small", description="the name of the SenseVoice-Small model (model=...)")
    sensevoice_aliases: list[str] = Field(default_factory=lambda: ["sensevoice", "SenseVoiceSmall"],
                                          description="other names accepted for SenseVoice-Small")
    probe_ttl_s: float = Field(10.0, ge=0, description="how long the answer to 'is SenseVoice exported and "
                                                        "loaded?' (a 0.1 s probe request) is reused")


class JobSettings(BaseModel):
    enabled: bool = Field(True, description="durable jobs: /v1/jobs, Alibaba FileTrans, DashScope async, seed /transcribe")
    data_dir: Path = Field(Path("~/.local/share/funasr-triton/jobs"), description="job audio (and the SQLite "
                           "store when no backend_url); shared by all replicas when they share a backend")
    backend_url: str | None = Field(None, description="networked store shared by replicas, e.g. "
                                    "postgresql://user:pass@host:5432/db; unset: SQLite in data_dir")
    workers: int = Field(2, ge=1, le=64, description="jobs this frontend process runs at once")
    retention_hours: float = Field(72.0, gt=0, description="finished jobs (results and audio) are purged after this")
    lease_s: float = Field(30.0, ge=1, description="a running job's lease, renewed every third of it; a job whose "
                           "replica died is run again once its lease expired")
    max_attempts: int = Field(3, ge=1, description="runs of one job (replica deaths included) before it fails")
    poll_interval_s: float = Field(1.0, gt=0, description="an idle worker checks the queue this often")
    maintenance_interval_s: float = Field(10.0, gt=0, description="recovery of dead replicas' jobs, purging, "
                                          "job metrics: this often")
    max_vocabularies: int = Field(1000, ge=1, description="hotword vocabularies stored (/v1/vocabularies, "
                                  "in the job store); beyond that a new one is refused (429)")
    max_queued: int = Field(1000, ge=1, description="queued jobs (all replicas); beyond that a submission is refused (429)")
    max_files: int = Field(20, ge=1, description="files (uploads or URLs) in one job or one /transcribe request")
    max_job_bytes: int = Field(1024 * 1024 * 1024, gt=0, description="audio bytes of one job (all its files)")
    callback_timeout_s: float = Field(10.0, gt=0, description="time for one job callback POST")
    public_url: str | None = Field(None, description="this service's external base URL, for the URLs jobs hand "
                                   "out (DashScope transcription_url); unset: taken from the request")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUNASR_TRITON_", env_nested_delimiter="__", extra="ignore")

    host: str = Field("127.0.0.1", description="frontend bind address")
    port: int = Field(8000, description="frontend port")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR")
    triton: TritonSettings = TritonSettings()
    limits: LimitSettings = LimitSettings()
    audio: AudioSettings = AudioSettings()
    hotwords: HotwordSettings = HotwordSettings()
    subtitles: SubtitleSettings = SubtitleSettings()
    diarization: DiarizationSettings = DiarizationSettings()
    streaming: StreamingSettings = StreamingSettings()
    auth: AuthSettings = AuthSettings()
    itn: ItnSettings = ItnSettings()
    models: ModelSettings = ModelSettings()
    jobs: JobSettings = JobSettings()
