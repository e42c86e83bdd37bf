"""Live audio through PortAudio for real: the virtual duplex device plays back what it is given.

These tests need a sound device; `audio_device` provides the one scripts/test started or
starts a private PipeWire null device, and fails (never skips) when it cannot.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import (
    REAL_TIME_ATTEMPTS,
    Processes,
    free_udp_port,
    opus_alone,
    run_voip,
    start_virtual_audio,
    stop_virtual_audio,
    voip_command,
)
from tests.test_call import _wait_for_line
from voip.errors import VoipError
from voip.io.audio import Device, Speaker, find_device
from voip.io.files import bundled_speech
from voip.io.realtime import LOOP_PRIORITY, realtime_permitted, realtime_thread
from voip.quality import pesq_wb

SPEECH = str(bundled_speech())
MUCH_STOLEN = 0.05  # of the CPU time: the hypervisor took more than this (1% is usual here)


class StolenTime:
    """The share of this machine's CPU time that its hypervisor took while the block ran
    (`steal` in /proc/stat). A virtual machine that loses its CPUs stops the sound server and
    voip alike, mid-block, and no scheduling inside it wins that time back: it took 18% here
    during whole fresh-clone runs, when even Opus played straight into the device lost
    quality. Tests that time real audio say how much was stolen, and hold a stolen run to
    what a stall cannot break."""

    def __enter__(self) -> StolenTime:
        self.start = self._times()
        return self

    def __exit__(self, *exc: object) -> None:
        self.end = self._times()

    @staticmethod
    def _times() -> list[int]:
        with open("/proc/stat") as stat:
            return [int(field) for field in stat.readline().split()[1:9]]  # user ... softirq, steal

    @property
    def share(self) -> float:
        spent = [end - start for start, end in zip(self.start, self.end, strict=True)]
        return spent[7] / sum(spent) if sum(spent) else 0.0


class Recorder:
    """Captures the device's input in this process while a voip process plays into it."""

    def __init__(self) -> None:
        import sounddevice as sd  # imported late: PortAudio must see the environment the fixture set

        self.blocks: list[np.ndarray] = []
        self.overflows = 0  # blocks the recorder itself lost: then the recording, not voip, has gaps
        self.stream = sd.InputStream(
            samplerate=48000, channels=1, dtype="float32", latency="high", callback=self._callback
        )

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self.overflows += bool(status.input_overflow)
        self.blocks.append(indata[:, 0].copy())

    def __enter__(self) -> Recorder:
        self.stream.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last blocks still in the device
        self.stream.stop()
        self.stream.close()

    def audio(self) -> np.ndarray:
        return np.concatenate(self.blocks) if self.blocks else np.zeros(0, dtype=np.float32)


def test_devices_lists_inputs_and_outputs_and_marks_the_defaults(audio_device):
    result = run_voip("devices")
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert "index" in header and "host API" in header
    defaults = [row for row in rows if row.startswith("*")]
    assert defaults and "default input" in result.stdout and "default output" in result.stdout


def test_tone_played_to_the_speaker_is_captured_back_at_its_frequency(audio_device):
    with Recorder() as recorder:
        result = run_voip("loopback", "--in", "tone:1000", "--out", "speaker", "--duration", "2", "--quiet")
    assert result.returncode == 0, result.stderr
    audio = recorder.audio()
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    assert len(loud) > 48000, "the tone did not reach the device"
    heard = audio[loud[0] : loud[-1]]
    peak_hz = np.argmax(np.abs(np.fft.rfft(heard))) * 48000 / len(heard)
    assert abs(peak_hz - 1000) < 5, peak_hz


def test_speech_played_to_the_speaker_keeps_its_quality(audio_device, speech, tmp_path):
    """PESQ-WB >= 3.0 through voip and the device, or no worse than Opus alone through the
    device scores right after it (played only then): where the machine's own sound server mangles speech
    (2.1-2.7 with no flag raised anywhere, on a machine losing 18% of its CPU time to its
    hypervisor), that is the machine's doing."""
    import sounddevice as sd

    stats = tmp_path / "stats.json"
    coded = opus_alone(speech)

    def through_voip() -> tuple[float, dict[str, Any]]:
        with Recorder() as recorder:
            result = run_voip("loopback", "--in", SPEECH, "--out", "speaker", "--quiet", "--stats-json", str(stats))
        assert result.returncode == 0, result.stderr
        score, values = pesq_wb(speech, recorder.audio()), json.loads(stats.read_text())
        print(
            f"PESQ-WB through voip and the device {score:.2f}: "
            f"underflows {values['output_underflows']}, overflows {values['input_overflows']}, "
            f"the recorder's overflows {recorder.overflows}"
        )
        return score, values

    def device_alone() -> float:
        with Recorder() as recorder:
            sd.play(coded, 48000, blocking=True)  # no voip: this process plays the coded speech
        alone = pesq_wb(speech, recorder.audio())
        print(f"PESQ-WB of the device alone {alone:.2f}")
        return alone

    for _ in range(REAL_TIME_ATTEMPTS):
        score, values = through_voip()
        bar = 3.0 if score >= 3.0 else min(3.0, device_alone() - 0.2)  # played only to excuse a low score
        if score >= bar and _glitches(values) == 0:
            break
    assert score >= bar, (score, bar)
    assert _glitches(values) == 0
    assert values["audio_scheduling"] == ("real-time" if realtime_permitted() else "normal")


def test_where_real_time_is_denied_the_devices_play_as_before_and_the_stats_say_so(audio_device, tmp_path):
    stats = tmp_path / "stats.json"
    deny = ["setpriv", "--inh-caps=-sys_nice", "--bounding-set=-sys_nice"]  # as a user outside the rtprio group
    command = voip_command("loopback", "--in", "tone:1000", "--out", "speaker", "--duration", "1", "--quiet")
    result = subprocess.run([*deny, *command, "--stats-json", str(stats)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    values = json.loads(stats.read_text())
    assert values["audio_scheduling"] == "normal"
    assert values["packets_received"] >= 40


def _glitches(values: dict[str, Any]) -> int:
    return int(values["output_underflows"]) + int(values["input_overflows"])


def test_a_thread_is_real_time_for_a_block_and_as_it_was_after():
    seen: list[tuple[bool, int, int]] = []

    def feed() -> None:
        with realtime_thread(LOOP_PRIORITY) as granted:
            inside = os.sched_getscheduler(0)
        seen.append((granted, inside, os.sched_getscheduler(0)))

    thread = threading.Thread(target=feed)
    thread.start()
    thread.join()
    [(granted, inside, after)] = seen
    assert granted == realtime_permitted()
    assert inside == (os.SCHED_FIFO if granted else os.SCHED_OTHER)
    assert after == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the thread that asked


def _number(pattern: str, text: str) -> float:
    match = re.search(pattern + r"\s+([\d.]+) ms", text)
    assert match, (pattern, text)
    return float(match.group(1))


def test_measured_latency_splits_into_parts_that_add_up(audio_device, tmp_path):
    """What clicks take to be heard back is what the parts add up to. How small the buffer
    stays is a benchmark goal (docs/benchmarks.md: network + buffer <= frame + lookahead +
    10 ms through the device), not asserted here: on a machine whose hypervisor takes its
    CPUs away, packets inside the loop really are late, and the buffer rightly grows for
    them (38-44 ms against 34 in a fresh-clone run). On a simulated clock it is asserted:
    `test_jitter.py::test_delay_follows_jitter_up_and_back_down_and_never_ratchets_after_loss`."""
    stats = tmp_path / "stats.json"
    with StolenTime() as stolen:
        result = run_voip("loopback", "--measure-latency", "--quiet", "--stats-json", str(stats))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    values = json.loads(stats.read_text())
    # The parts are means over the run (means add up; medians of parts do not) and the whole
    # is the median click, so the two part by as much as the buffer moved during the run.
    # One fresh clone read 13.8 ms apart; a run where nothing moved agrees within 0.4 ms.
    moved_ms = values["expanded_ms"] + values["accelerated_ms"] + values["concealed_ms"]
    moved_ms += values["frame_ms"] * values["packets_late"]
    print(out, f"buffer moved {moved_ms:.0f} ms, stolen by the hypervisor: {stolen.share:.0%}")
    whole = _number("mouth-to-ear latency", out)
    margin = (5.0 if stolen.share < MUCH_STOLEN else 15.0) + moved_ms
    assert abs(_number("parts add up to", out) - whole) <= margin
    assert 20 < whole < 500


@pytest.mark.slow
def test_half_a_minute_of_callbacks_keeps_up_with_the_device(audio_device, tmp_path):
    stats = tmp_path / "stats.json"
    with StolenTime() as stolen:
        result = run_voip(
            "loopback", "--in", "mic", "--out", "speaker", "--duration", "30", "--quiet", "--stats-json", str(stats),
            timeout=90,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    values = json.loads(stats.read_text())
    print(f"glitches {_glitches(values)}, stolen by the hypervisor: {stolen.share:.0%}")
    # A loop that answers the device late by design (PipeWire asks in bursts) glitches every
    # second or so: 30 here. A busy machine costs an isolated block or two (real-time
    # scheduling); one whose hypervisor takes its CPUs away costs more (3 and 10 in a minute,
    # in two fresh-clone runs), and nothing inside it can help that.
    assert _glitches(values) <= (6 if stolen.share < MUCH_STOLEN else 12), values
    assert values["packets_received"] >= 1400  # 20 ms frames for 30 s, less the start


def test_a_device_that_vanishes_ends_the_run_with_one_clear_reason(audio_device, tmp_path, processes: Processes):
    state = tmp_path / "audio"
    env = start_virtual_audio(state)  # a server of its own, to pull away mid-run
    try:
        proc = processes.adopt(
            subprocess.Popen(
                voip_command("loopback", "--duration", "30", "--quiet"),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
        time.sleep(2.0)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
    finally:
        stop_virtual_audio(state)
    stopped_at = time.monotonic()
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 1
    assert time.monotonic() - stopped_at < 5
    # PortAudio's ALSA layer prints its own diagnostics as the server goes; ours is one line
    assert "voip: audio device" in err and "stopped (unplugged, or the sound server went away)" in err


def _stop_for(proc: subprocess.Popen[str], seconds: float) -> None:
    os.kill(proc.pid, signal.SIGSTOP)
    time.sleep(seconds)  # the fault itself: a process that does not run
    os.kill(proc.pid, signal.SIGCONT)


def _receiver(processes: Processes, port: int, stats: Path, *out: str) -> subprocess.Popen[str]:
    receiver = processes.start(
        voip_command("receive", "--bind", "127.0.0.1", "--port", str(port), *out, "--stats-json", str(stats))
    )
    _wait_for_line(receiver, "listening on")
    return receiver


def test_a_speaker_that_stood_still_plays_on_from_what_is_live(audio_device, tmp_path, processes: Processes):
    """`voip receive` to the speaker, stopped for 2 s: the device stood still with it, so what
    came meanwhile can no longer be heard in time. It is counted late and skipped, and the
    buffer plays on from what is live, at the delay it had. Before, the watchdog took the
    loop's own absence for the device's silence and ended the run: "audio device stopped"."""
    port, stats = free_udp_port(), tmp_path / "receiver.json"
    receiver = _receiver(processes, port, stats, "--out", "speaker")
    sender = processes.start(voip_command("send", "speech", f"127.0.0.1:{port}", "--insecure", "--quiet"))
    _wait_for_line(receiver, "receiving from")
    time.sleep(1.0)
    _stop_for(receiver, 2.0)
    sender.communicate(timeout=30)
    _, err = receiver.communicate(timeout=30)
    assert sender.returncode == 0 and receiver.returncode == 0, err
    values = json.loads(stats.read_text())
    print({key: values[key] for key in ("packets_late", "concealed_ms", "buffer_delay_ms", "packets_played")})
    assert 80 <= values["packets_late"] <= 110  # the 2 s stood still, in 20 ms frames
    assert values["packets_played"] + values["packets_late"] == values["packets_received"]
    assert values["buffer_delay_ms"] <= 100.0  # the stall was not kept as delay


def test_a_microphone_that_stood_still_leaves_a_gap_not_late_packets(audio_device, tmp_path, processes: Processes):
    """`voip send mic`, stopped for 2 s: its device captured nothing meanwhile. The RTP clock
    follows the ADC's, so the receiver sees a 2 s gap and plays the first packet after it at
    once. Before, the timestamps ran on as if nothing was missed, and every packet after
    the stop came 2 s late: 219 late and 7.3 s concealed for a 3 s stop."""
    port, stats = free_udp_port(), tmp_path / "receiver.json"
    receiver = _receiver(processes, port, stats, "--out", "null")
    sender = processes.start(
        voip_command("send", "mic", f"127.0.0.1:{port}", "--insecure", "--quiet", "--duration", "6")
    )
    _wait_for_line(receiver, "receiving from")
    time.sleep(1.0)
    stopped = time.monotonic()
    _stop_for(sender, 2.0)
    stood_ms = (time.monotonic() - stopped) * 1000.0
    sender.communicate(timeout=30)
    _, err = receiver.communicate(timeout=30)
    assert sender.returncode == 0 and receiver.returncode == 0, err
    values = json.loads(stats.read_text())
    print(f"stood {stood_ms:.0f} ms", {key: values[key] for key in ("packets_late", "concealed_ms")})
    assert values["packets_late"] <= 2
    assert stood_ms - 500 <= values["concealed_ms"] <= stood_ms + 300


def test_a_speaker_the_loop_answers_too_late_keeps_more_blocks_queued(audio_device):
    speaker = Speaker(find_device("", "output"), 960)
    try:
        speaker.start(time.monotonic())
        time.sleep(0.3)  # the loop is late on purpose: the device plays the queue out and underflows
        speaker.take_requests(time.monotonic())
        assert speaker.output_underflows > 0
        assert speaker.queue_blocks == Speaker.MAX_QUEUE_BLOCKS  # one more block per underflow, capped
        assert speaker.wants_audio
    finally:
        speaker.close()


def test_device_names_that_match_nothing_or_several(audio_device):
    result = run_voip("loopback", "--in", "mic:no-such-device", "--out", "null")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "voip: no microphone (input device) matches 'no-such-device'; `voip devices` lists them"
    )
    devices = [
        Device(0, "USB Headset", "ALSA", 1, 2, 48000.0, False, False),
        Device(1, "USB Camera", "ALSA", 2, 0, 44100.0, True, False),
        Device(2, "HDMI", "ALSA", 0, 8, 48000.0, False, True),
    ]
    with pytest.raises(VoipError) as several:
        find_device("usb", "input", devices)
    assert str(several.value) == (
        "'usb' matches several microphones (0 'USB Headset', 1 'USB Camera'); give the index or a longer name"
    )
    assert find_device("headset", "input", devices).index == 0
    assert find_device("1", "input", devices).index == 1
    assert find_device("", "input", devices).index == 1  # the default input
    assert find_device("", "output", devices).index == 2
    with pytest.raises(VoipError, match="no speaker \\(output device\\) has index 1"):
        find_device("1", "output", devices)


def test_no_device_at_all(tmp_path):
    if Path("/dev/snd").exists() and any(Path("/dev/snd").iterdir()):
        pytest.skip("this machine has sound cards: ALSA lists them with or without a sound server")
    empty = tmp_path / "run"
    empty.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(empty)}  # no sound server to be found there
    result = subprocess.run(voip_command("loopback"), env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "voip: no microphone (input device) found: is a sound server running? "
        "(on a machine without sound hardware, scripts/virtual-audio provides one)"
    )


def _portaudio_library() -> str | None:
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    for line in listing.splitlines():
        if "libportaudio.so" in line and "=>" in line:
            return os.path.realpath(line.split("=>")[1].strip())
    return None


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_without_portaudio_devices_fail_clearly_and_files_still_work(tmp_path):
    library = _portaudio_library()
    assert library, "libportaudio2 is not installed (scripts/setup installs it)"
    out = tmp_path / "out.wav"
    # A private mount namespace in which the library is an empty file: PortAudio cannot load.
    script = (
        f"mount --bind /dev/null {library} && "
        f"{' '.join(voip_command('devices'))}; echo devices=$?; "
        f"{' '.join(voip_command('loopback', '--in', 'tone:440', '--out', str(out), '--duration', '0.5', '--quiet'))}"
        "; echo loopback=$?"
    )
    result = subprocess.run(["unshare", "--mount", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert "devices=1" in result.stdout and "loopback=0" in result.stdout, result.stdout + result.stderr
    assert result.stderr.strip() == (
        "voip: audio devices need the PortAudio library: install it with `apt-get install libportaudio2`"
    )
    assert out.stat().st_size > 40000
