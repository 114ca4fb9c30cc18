"""SRT/WebVTT rendering (pure): golden strings, integer-ms timestamps, split/merge/min duration, escaping, parsers."""
from __future__ import annotations

import html
from datetime import timedelta

import pytest
import srt
import webvtt

from funasr_triton.app.config import SubtitleSettings
from funasr_triton.contract import Sentence, Transcript, Word
from funasr_triton.app.subtitles import Cue, build_cues, format_timestamp, render_srt, render_vtt, to_srt, to_vtt

PLAIN = SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, merge_max_chars=40, max_chars=60)


def chars(text: str, start_ms: int, step_ms: int) -> list[Word]:
    """One word per CJK character, `step_ms` apart (Paraformer's Chinese words are characters)."""
    return [Word(text=ch, start_ms=start_ms + i * step_ms, end_ms=start_ms + (i + 1) * step_ms - 20)
            for i, ch in enumerate(c for c in text if "\u4e00" <= c <= "\u9fff")]


def transcript(*sentences: Sentence) -> Transcript:
    return Transcript(text="".join(s.text for s in sentences), duration_ms=max(s.end_ms for s in sentences),
                      sentences=list(sentences))


def ms(td: timedelta) -> int:
    return td // timedelta(milliseconds=1)


@pytest.mark.parametrize("value,srt_text,vtt_text", [
    (0, "00:00:00,000", "00:00:00.000"),
    (11540, "00:00:11,540", "00:00:11.540"),     # 11.54 s: no float rounding to ,539
    (999, "00:00:00,999", "00:00:00.999"),
    (1000, "00:00:01,000", "00:00:01.000"),
    (59999, "00:00:59,999", "00:00:59.999"),
    (60000, "00:01:00,000", "00:01:00.000"),     # carries into minutes
    (3599999, "00:59:59,999", "00:59:59.999"),
    (3600000, "01:00:00,000", "01:00:00.000"),   # carries into hours
    (100 * 3600000 + 1, "100:00:00,001", "100:00:00.001"),
    (-5, "00:00:00,000", "00:00:00.000"),
])
def test_timestamps_from_integer_ms(value, srt_text, vtt_text):
    assert format_timestamp(value, ",") == srt_text
    assert format_timestamp(value, ".") == vtt_text


def test_golden_srt_and_vtt_parse_back():
    t = transcript(Sentence(start_ms=120, end_ms=2340, text="今天天气很好。", words=chars("今天天气很好", 120, 370)),
                   Sentence(start_ms=3000, end_ms=11540, text="我们去公园吧！", words=chars("我们去公园吧", 3000, 1420)))
    expected_srt = ("1\n00:00:00,120 --> 00:00:02,340\n今天天气很好。\n\n"
                    "2\n00:00:03,000 --> 00:00:11,540\n我们去公园吧！\n\n")
    expected_vtt = ("WEBVTT\n\n00:00:00.120 --> 00:00:02.340\n今天天气很好。\n\n"
                    "00:00:03.000 --> 00:00:11.540\n我们去公园吧！\n\n")
    assert to_srt(t, PLAIN) == expected_srt
    assert to_vtt(t, PLAIN) == expected_vtt

    subs = list(srt.parse(expected_srt))
    assert [(s.index, ms(s.start), ms(s.end), s.content) for s in subs] == [
        (1, 120, 2340, "今天天气很好。"), (2, 3000, 11540, "我们去公园吧！")]
    assert srt.compose(subs) == expected_srt
    caps = webvtt.from_string(expected_vtt).captions
    assert [(c.start, c.end, c.text) for c in caps] == [
        ("00:00:00.120", "00:00:02.340", "今天天气很好。"), ("00:00:03.000", "00:00:11.540", "我们去公园吧！")]


def test_empty_transcript_and_empty_sentences_make_no_cues():
    t = Transcript(text="", duration_ms=1000, sentences=[Sentence(start_ms=0, end_ms=500, text="  ")])
    assert to_srt(t, PLAIN) == ""
    assert to_vtt(t, PLAIN) == "WEBVTT\n\n"
    assert webvtt.from_string(to_vtt(t, PLAIN)).captions == []
    assert list(srt.parse(to_srt(t, PLAIN))) == []


def test_vtt_escapes_markup_and_srt_keeps_text():
    s = Sentence(start_ms=0, end_ms=1500, text="a < b & c --> d")
    vtt = to_vtt(transcript(s), PLAIN)
    assert "a &lt; b &amp; c --&gt; d" in vtt and "<" not in vtt.split("\n", 3)[3]
    caps = webvtt.from_string(vtt).captions
    assert len(caps) == 1 and html.unescape(caps[0].text) == "a < b & c --> d"
    assert list(srt.parse(to_srt(transcript(s), PLAIN)))[0].content == "a < b & c --> d"


def test_whitespace_and_newlines_are_collapsed():
    s = Sentence(start_ms=0, end_ms=1000, text="hello\n\nworld  again ")
    assert render_srt(build_cues([s], PLAIN)) == "1\n00:00:00,000 --> 00:00:01,000\nhello world again\n\n"


def test_close_short_cues_merge_within_char_limit():
    opts = SubtitleSettings(min_cue_ms=0, merge_gap_ms=300, merge_max_chars=10, max_chars=60)
    a = Sentence(start_ms=0, end_ms=900, text="你好。")
    b = Sentence(start_ms=1100, end_ms=2000, text="再见。")          # gap 200 < 300: merged
    c = Sentence(start_ms=2300, end_ms=3000, text="好的。")          # gap 300, not < 300: kept apart
    d = Sentence(start_ms=3100, end_ms=4000, text="这句话比较长一点。")  # 3 + 9 > 10 chars: kept apart
    cues = build_cues([a, b, c, d], opts)
    assert cues == [Cue(0, 2000, "你好。再见。"), Cue(2300, 3000, "好的。"), Cue(3100, 4000, "这句话比较长一点。")]
    en = build_cues([Sentence(start_ms=0, end_ms=500, text="Hi."), Sentence(start_ms=600, end_ms=900, text="Bye.")],
                    SubtitleSettings(min_cue_ms=0, merge_gap_ms=300, merge_max_chars=40))
    assert en == [Cue(0, 900, "Hi. Bye.")]


def test_merge_never_crosses_speakers_and_prefix_applies_once():
    opts = SubtitleSettings(min_cue_ms=0, merge_gap_ms=500, merge_max_chars=40, speaker_template="[{speaker}] ")
    cues = build_cues([Sentence(start_ms=0, end_ms=900, text="你好。", speaker="A"),
                       Sentence(start_ms=1000, end_ms=1800, text="在吗？", speaker="A"),
                       Sentence(start_ms=1900, end_ms=2500, text="在。", speaker="B"),
                       Sentence(start_ms=2600, end_ms=3000, text="嗯。")], opts)
    assert [c.text for c in cues] == ["[A] 你好。在吗？", "[B] 在。", "嗯。"]
    out = render_srt(cues)
    assert [s.content for s in srt.parse(out)] == ["[A] 你好。在吗？", "[B] 在。", "嗯。"]


def test_short_cues_are_extended_but_not_into_the_next():
    opts = SubtitleSettings(min_cue_ms=500, merge_gap_ms=0, merge_max_chars=40)
    cues = build_cues([Sentence(start_ms=0, end_ms=100, text="一。"),      # next starts at 300: extended to 300
                       Sentence(start_ms=300, end_ms=400, text="二。"),    # next at 2000: extended to 800
                       Sentence(start_ms=2000, end_ms=2100, text="三。"),  # last: extended to 2500
                       Sentence(start_ms=4000, end_ms=5000, text="四。")], opts)  # long enough
    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 300), (300, 800), (2000, 2500), (4000, 5000)]


def test_long_chinese_sentence_splits_at_words_with_word_times():
    text = "今天我们在阿里巴巴的会议室里讨论了语音识别模型，并且决定下周发布新的版本。"
    s = Sentence(start_ms=1000, end_ms=1000 + 33 * 200, text=text, words=chars(text, 1000, 200))
    opts = SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=20)
    cues = build_cues([s], opts)
    assert "".join(c.text for c in cues) == text
    assert all(0 < len(c.text) <= 20 for c in cues)
    assert cues[0].text == "今天我们在阿里巴巴的会议室里讨论了语音识"  # greedy, 20 chars
    assert cues[1].text == "别模型，并且决定下周发布新的版本。"
    assert (cues[0].start_ms, cues[0].end_ms) == (1000, 1000 + 19 * 200 + 180)  # first word .. 20th word end
    assert (cues[1].start_ms, cues[1].end_ms) == (1000 + 20 * 200, s.end_ms)
    # a cut right after punctuation is preferred when it keeps at least half of the line
    cues = build_cues([s], SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=30))
    assert cues[0].text == "今天我们在阿里巴巴的会议室里讨论了语音识别模型，"


def test_long_english_sentence_never_cuts_a_word():
    words = "the quick brown fox jumps over the lazy dog and keeps running far away".split()
    text = " ".join(words) + "."
    s = Sentence(start_ms=0, end_ms=len(words) * 300, text=text,
                 words=[Word(text=w, start_ms=i * 300, end_ms=i * 300 + 250) for i, w in enumerate(words)])
    cues = build_cues([s], SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=20))
    assert " ".join(c.text for c in cues) == text
    assert all(len(c.text) <= 20 for c in cues)
    assert all(set(c.text.rstrip(".").split()) <= set(words) for c in cues)
    assert [c.text for c in cues] == ["the quick brown fox", "jumps over the lazy", "dog and keeps", "running far away."]
    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 1150), (1200, 2350), (2400, 3250), (3300, 4200)]
    parsed = list(srt.parse(render_srt(cues)))
    assert [p.content for p in parsed] == [c.text for c in cues]


def test_split_without_words_is_proportional_in_integer_ms():
    text = "甲乙丙丁戊己庚辛壬癸"
    cues = build_cues([Sentence(start_ms=0, end_ms=1001, text=text)],
                      SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=3))
    assert [c.text for c in cues] == ["甲乙丙", "丁戊己", "庚辛壬", "癸"]
    assert [(c.start_ms, c.end_ms) for c in cues] == [(0, 300), (300, 600), (600, 900), (900, 1001)]
    assert all(isinstance(c.start_ms, int) and isinstance(c.end_ms, int) for c in cues)


def test_words_that_do_not_align_fall_back_to_characters():
    s = Sentence(start_ms=0, end_ms=4000, text="abc def ghi jkl",
                 words=[Word(text="zzz", start_ms=0, end_ms=100)])
    cues = build_cues([s], SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=8))
    assert [c.text for c in cues] == ["abc def", "ghi jkl"]


def test_speaker_prefix_counts_toward_max_chars():
    text = "一二三四五六七八九十"
    s = Sentence(start_ms=0, end_ms=2000, text=text, words=chars(text, 0, 200), speaker="A")
    cues = build_cues([s], SubtitleSettings(min_cue_ms=0, merge_gap_ms=0, max_chars=8))
    assert [c.text for c in cues] == ["A: 一二三四五", "A: 六七八九十"]
    vtt = render_vtt(cues)
    assert [c.text for c in webvtt.from_string(vtt).captions] == ["A: 一二三四五", "A: 六七八九十"]


def _srt_cues(text: str) -> list[str]:
    return [" ".join(block.splitlines()[2:]) for block in text.strip().split("\n\n") if block.strip()]


def test_subtitle_settings_from_the_environment(frontend, triton, tmp_path, speech_wav):
    """FUNASR_TRITON_SUBTITLES__* reach the renderer of the real frontend process."""
    import httpx

    from tests.conftest import start_frontend

    def srt(base_url: str, **extra) -> list[str]:
        r = httpx.post(base_url + "/v1/audio/transcriptions", timeout=120,
                       files={"file": ("a.wav", speech_wav.read_bytes())},
                       data={"model": "whisper-1", "response_format": "srt", **extra})
        assert r.status_code == 200, r.text
        return _srt_cues(r.text)

    default = srt(frontend.base_url, enable_speaker_diarization="true")
    assert max(len(c) for c in default) > 6 and not any(c.startswith("<") for c in default)
    fe = start_frontend(triton.grpc_url, tmp_path, FUNASR_TRITON_SUBTITLES__MAX_CHARS="6",
                        FUNASR_TRITON_SUBTITLES__MERGE_MAX_CHARS="1",
                        FUNASR_TRITON_SUBTITLES__SPEAKER_TEMPLATE="<{speaker}> ")
    try:
        cues = srt(fe.base_url, enable_speaker_diarization="true")
    finally:
        fe.stop()
    assert len(cues) > len(default)
    for cue in cues:
        assert cue.startswith("<") and "> " in cue, cue
        assert len(cue.split("> ", 1)[1].replace(" ", "")) <= 6, cue
